"""What a command pays before its flow runs: a bad input is refused before Prefect loads, and a running
local Prefect server is used instead of starting an ephemeral one (osteo/runtime.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from osteo.settings import REPO_ROOT
from tests.prefect_server import VENV_BIN, free_port, start_prefect_server


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OSTEO_", "MLFLOW_"))}
    return {**env, "DO_NOT_TRACK": "1", **extra}


def test_bad_input_is_refused_before_prefect_loads(tmp_path):
    """`osteo refresh` with a missing folder: exit 2 and one line, with Prefect never imported (so no
    server started), nor torch (a refusal in well under a second), and the runtime environment never
    configured (no Prefect home made)."""
    probe = ("import json, sys\n"
             "from osteo_cli.main import main\n"
             "rc = main(['refresh', '--dicom', sys.argv[1], '--dexa', sys.argv[1], '--json'])\n"
             "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'torch', 'mlflow'})\n"
             "print(json.dumps({'rc': rc, 'heavy': heavy}))")
    missing = str(tmp_path / "no-such-folder")
    r = subprocess.run([sys.executable, "-c", probe, missing], env=_clean_env(OSTEO_HOME=str(tmp_path / "home")),
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last == {"rc": 2, "heavy": []}, r.stdout + r.stderr
    refusal = json.loads(r.stdout.strip().splitlines()[0])
    assert refusal["ok"] is False and "does not exist" in json.dumps(refusal)
    assert not (tmp_path / "home" / "var" / "prefect").exists(), "configure_environment ran before the check"


class _Health(BaseHTTPRequestHandler):
    body = b"true"

    def do_GET(self):
        if self.path != "/api/health":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@contextmanager
def _fake_server(body: bytes):
    """A loopback HTTP server whose /api/health answers `body` (no Prefect: the rules, not the server)."""
    handler = type("Handler", (_Health,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_local_server_is_reused_only_when_it_answers_and_reuse_is_on():
    from osteo.runtime import local_prefect_api

    with _fake_server(b"true") as url:
        assert local_prefect_api({"OSTEO_PREFECT_LOCAL_URL": url}) == url
        assert local_prefect_api({"OSTEO_PREFECT_LOCAL_URL": url + "/"}) == url
        # an explicit API URL wins; the setting turns reuse off
        assert local_prefect_api({"OSTEO_PREFECT_LOCAL_URL": url, "PREFECT_API_URL": "http://x:1/api"}) is None
        for off in ("false", "0", "no", "OFF"):
            assert local_prefect_api({"OSTEO_PREFECT_LOCAL_URL": url, "OSTEO_PREFECT_REUSE_LOCAL": off}) is None
        assert local_prefect_api({"OSTEO_PREFECT_LOCAL_URL": url, "OSTEO_PREFECT_REUSE_LOCAL": "true"}) == url
    # something else on the port (not Prefect's `true`), nothing listening, not an HTTP URL
    with _fake_server(b'{"status": "ok"}') as url:
        assert local_prefect_api({"OSTEO_PREFECT_LOCAL_URL": url}) is None
    assert local_prefect_api({"OSTEO_PREFECT_LOCAL_URL": f"http://127.0.0.1:{free_port()}/api"}) is None
    assert local_prefect_api({"OSTEO_PREFECT_LOCAL_URL": "file:///etc/passwd"}) is None


def test_configure_environment_points_prefect_at_the_local_server(tmp_path):
    probe = ("import json, os\n"
             "from osteo.runtime import configure_environment\n"
             "from osteo.settings import get_settings\n"
             "got = configure_environment(get_settings())\n"
             "print(json.dumps({'got': got, 'env': os.environ.get('PREFECT_API_URL')}))")
    with _fake_server(b"true") as url:
        def run(**extra: str) -> dict:
            env = _clean_env(OSTEO_HOME=str(tmp_path), OSTEO_PREFECT_LOCAL_URL=url, **extra)
            r = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout.strip().splitlines()[-1])

        assert run() == {"got": url, "env": url}
        assert run(OSTEO_PREFECT_REUSE_LOCAL="false") == {"got": None, "env": None}
        assert run(PREFECT_API_URL="http://127.0.0.1:9/api") == {"got": None, "env": "http://127.0.0.1:9/api"}


@pytest.mark.slow
def test_refresh_runs_on_a_running_local_server(tmp_path):
    """`osteo refresh` with a Prefect server answering at the local address: the flow run is recorded
    there, and no ephemeral server database is made in the command's Prefect home."""
    import asyncio

    (tmp_path / "in").mkdir()
    home = tmp_path / "home"
    with start_prefect_server(tmp_path / "server") as api:
        assert api is not None, (tmp_path / "server" / "server.log").read_text()[-2000:]
        env = _clean_env(OSTEO_HOME=str(home), OSTEO_PREFECT_LOCAL_URL=api, OSTEO_WORKERS="1")
        r = subprocess.run([str(VENV_BIN / "osteo"), "refresh", "--dicom", str(tmp_path / "in"), "--dexa",
                            str(tmp_path / "in"), "--json"], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["this_run"]["files_seen"] == 0

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        async def runs():
            async with get_client() as client:
                return [(await client.read_flow(fr.flow_id)).name + ":" + fr.state.type.value
                        for fr in await client.read_flow_runs()]

        with temporary_settings({PREFECT_API_URL: api}):
            assert asyncio.run(runs()) == ["nightly-refresh:COMPLETED"]
    assert not list((home / "var" / "prefect").glob("*.db")), "an ephemeral server was started anyway"
