"""Process-wide environment for the embedded defaults: local stores, telemetry off.

Called by the CLI (and tests) before Prefect or MLflow are imported, because both read
their settings from the environment when first loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from osteo.settings import Settings


def configure_environment(settings: Settings) -> None:
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
