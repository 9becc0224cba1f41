"""`osteo ui`: the Prefect and MLflow UIs on the embedded stores, on this machine only (loopback).

Both servers run as child processes until Ctrl-C (or SIGTERM); the addresses are printed once
both answer.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from osteo.errors import UserError
from osteo.settings import get_settings
from osteo_cli.output import emit
from osteo.runtime import configure_environment

HOST = "127.0.0.1"  # never another interface: the stores hold pseudonymised patient data


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback http only
            return r.status == 200
    except OSError:
        return False


def _wait(procs: dict[str, subprocess.Popen], health: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = dict(health)
    while waiting:
        for name, url in list(waiting.items()):
            if procs[name].poll() is not None:
                raise UserError("ui_failed", f"the {name} UI exited at start (code {procs[name].returncode}); "
                                "is its port taken? choose another with --prefect-port / --mlflow-port")
            if _answers(url):
                del waiting[name]
        if waiting and time.monotonic() > deadline:
            raise UserError("ui_timeout", f"{', '.join(waiting)} did not answer within {timeout:.0f} s")
        time.sleep(0.5)


def commands(prefect_port: int, mlflow_port: int) -> dict[str, list[str]]:
    s = get_settings()
    bin_dir = Path(sys.executable).parent
    return {
        "prefect": [str(bin_dir / "prefect"), "server", "start", "--host", HOST, "--port", str(prefect_port)],
        "mlflow": [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", s.resolved_tracking_uri(),
                   "--default-artifact-root", Path(s.mlflow_artifact_root).resolve().as_uri(),
                   "--host", HOST, "--port", str(mlflow_port)],
    }


def cmd_ui(args: argparse.Namespace) -> int:
    configure_environment(get_settings())
    urls = {"prefect": f"http://{HOST}:{args.prefect_port}", "mlflow": f"http://{HOST}:{args.mlflow_port}"}
    health = {"prefect": urls["prefect"] + "/api/health", "mlflow": urls["mlflow"] + "/health"}
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name, cmd in commands(args.prefect_port, args.mlflow_port).items()}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _wait(procs, health, args.timeout)
        emit(args, {"ok": True, **urls}, f"Prefect UI  {urls['prefect']}\nMLflow UI   {urls['mlflow']}\n"
                                         "(Ctrl-C stops both)")
        sys.stdout.flush()
        while all(p.poll() is None for p in procs.values()):
            time.sleep(1)
        return 1  # one of them died
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def register(add) -> None:
    p = add("ui", cmd_ui, "start the Prefect and MLflow UIs on the embedded stores (loopback only)")
    p.add_argument("--prefect-port", type=int, default=4200, help="Prefect UI port (default: %(default)s)")
    p.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for both to answer (default: %(default)s)")
