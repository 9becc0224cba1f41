"""Process-wide environment for the embedded defaults: local stores, telemetry off.

Called by the CLI (and tests) before Prefect or MLflow are imported, because both read
their settings from the environment when first loaded.

Prefect: with no PREFECT_API_URL, a flow run starts Prefect's ephemeral server (a subprocess, ~10 s on
two cores) in every command. When a local Prefect server already answers (`osteo ui`, or a
`prefect server start` on this machine), its address is used instead, so that the command starts at once
and its runs show in that server's UI. OSTEO_PREFECT_REUSE_LOCAL=false turns that off;
OSTEO_PREFECT_LOCAL_URL names the address to try (default http://127.0.0.1:4200/api).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.request
from pathlib import Path

from osteo.settings import Settings

log = logging.getLogger(__name__)

LOCAL_PREFECT_URL = "http://127.0.0.1:4200/api"  # `osteo ui` and `prefect server start`'s default
HEALTH_TIMEOUT_S = 0.5  # loopback: a live server answers in milliseconds, a closed port refuses at once
OFF = ("0", "false", "no", "off")


def configure_environment(settings: Settings) -> str | None:
    """Set the environment of the embedded defaults; returns the local Prefect server's API URL when
    one answered and is used instead of an ephemeral server, else None."""
    # a hospital tool never phones home
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow's download bars would break the one-line summaries (lineage verify fetches the checkpoint)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Prefect's ephemeral server keeps its database in the checkout, not in ~/.prefect
    prefect_home = settings.var_dir / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(prefect_home))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    uri = settings.resolved_tracking_uri()
    os.environ.setdefault("MLFLOW_TRACKING_URI", uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    reused = local_prefect_api(os.environ)
    if reused:
        os.environ["PREFECT_API_URL"] = reused
        log.info("using the Prefect server at %s", reused)
        if sys.stderr.isatty():  # one line on a terminal; logs, tests and --json pipes stay quiet
            print(f"osteo: using the Prefect server at {reused} (OSTEO_PREFECT_REUSE_LOCAL=false starts "
                  "an ephemeral one)", file=sys.stderr)
    return reused


def local_prefect_api(env) -> str | None:
    """The local Prefect server's API URL when reuse is on, no PREFECT_API_URL is set and it answers."""
    if env.get("PREFECT_API_URL") or env.get("OSTEO_PREFECT_REUSE_LOCAL", "true").strip().lower() in OFF:
        return None
    url = (env.get("OSTEO_PREFECT_LOCAL_URL") or LOCAL_PREFECT_URL).rstrip("/")
    return url if prefect_answers(url) else None


def prefect_answers(api_url: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """True when a Prefect server answers its health check (`true`) at api_url; never raises."""
    if not api_url.startswith(("http://", "https://")):
        return False
    try:
        # no proxy: the server is on this machine, and a proxy must not answer for it
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200 and json.loads(r.read(64) or b"null") is True
    except (OSError, ValueError):
        return False
