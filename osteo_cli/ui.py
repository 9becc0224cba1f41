"""`osteo ui`: the Prefect and MLflow UIs on the embedded stores, on this machine only (loopback).

Both servers run as child processes, each in its own process group (their workers included),
until Ctrl-C or SIGTERM stops all of them; the addresses are printed once both answer. Prefect's page
asks the API on the port chosen, and neither server nor page reports usage anywhere (`server_env`,
osteo_mlflow/ui_app.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from osteo.errors import UserError
from osteo.runtime import LOCAL_PREFECT_URL, configure_environment
from osteo.settings import get_settings
from osteo_cli.output import emit

HOST = "127.0.0.1"  # never another interface: the stores hold pseudonymised patient data
STOP_GRACE_S = 20  # seconds each server has to stop before it is killed


class _Stop(Exception):
    """SIGTERM, raised in the main thread so that the children are stopped on the way out."""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _check_port(port: int, option: str) -> None:
    """Refuse a taken port at once instead of waiting for a server that cannot bind."""
    if not 0 < port < 65536:
        raise UserError("bad_option", f"{option} {port} is not a port; choose one from 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            raise UserError("port_in_use", f"port {port} on {HOST} is taken (another UI running?); "
                            f"choose another with {option}") from None


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
            raise UserError("ui_timeout", f"{', '.join(waiting)} did not answer within {timeout:.0f} s; "
                            "try again with a longer --timeout")
        if waiting:
            time.sleep(0.5)


def commands(prefect_port: int, mlflow_port: int) -> dict[str, list[str]]:
    s = get_settings()
    py = sys.executable  # the same environment's servers, wherever its scripts live
    return {
        "prefect": [py, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(prefect_port)],
        # one worker: one person's browser on this machine (the default 4 would take every core); the
        # osteo-ui app is MLflow's, its page told that nothing reports usage (osteo_mlflow/ui_app.py)
        "mlflow": [py, "-m", "mlflow", "ui", "--backend-store-uri", s.resolved_tracking_uri(),
                   "--default-artifact-root", Path(s.mlflow_artifact_root).resolve().as_uri(),
                   "--host", HOST, "--port", str(mlflow_port), "--workers", "1", "--app-name", "osteo-ui"],
    }


def server_env(prefect_port: int) -> dict[str, str]:
    """The servers' environment: Prefect's page asks the API on its own port, nothing reports usage."""
    api = f"http://{HOST}:{prefect_port}/api"
    env = dict(os.environ)
    env.update({
        # the page's API address comes from the settings, not from --port (Prefect 3.8: /ui-settings would
        # name 4200 and the page would show no run); a reused local server's PREFECT_API_URL is not this one
        "PREFECT_SERVER_API_HOST": HOST, "PREFECT_SERVER_API_PORT": str(prefect_port),
        "PREFECT_API_URL": api, "PREFECT_UI_API_URL": api,
        # forced, not defaults: whatever the shell says, these servers report nothing anywhere
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
        # `python -m` puts the working folder first on sys.path: a stale osteo.egg-info of a checkout there
        # would hide the osteo-ui entry point of the installed package
        "PYTHONSAFEPATH": "1",
    })
    return env


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to each server's whole process group, then SIGKILL to what is left after the grace."""
    def signal_group(p: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:  # the group is gone already
            pass

    for p in procs.values():
        signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs.values():  # workers the server left behind, or a server that did not stop
        signal_group(p, signal.SIGKILL)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process SIGKILL cannot end
            pass


def cmd_ui(args: argparse.Namespace) -> int:
    from osteo_mlflow.registry import experiment_runs_table

    _check_port(args.prefect_port, "--prefect-port")
    _check_port(args.mlflow_port, "--mlflow-port")
    if args.prefect_port == args.mlflow_port:
        raise UserError("bad_option", "--prefect-port and --mlflow-port must differ")
    configure_environment(get_settings())
    urls = {"prefect": f"http://{HOST}:{args.prefect_port}", "mlflow": f"http://{HOST}:{args.mlflow_port}"}
    health = {"prefect": urls["prefect"] + "/api/health", "mlflow": urls["mlflow"] + "/health"}

    def on_term(*_) -> None:
        raise _Stop

    # before the children start, so that a SIGTERM at any point stops them; SIGINT (Ctrl-C) reaches
    # only this process (the children have their own sessions) and raises KeyboardInterrupt
    old_term = signal.signal(signal.SIGTERM, on_term)
    procs: dict[str, subprocess.Popen] = {}
    env = server_env(args.prefect_port)
    try:
        for name, cmd in commands(args.prefect_port, args.mlflow_port).items():
            procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        _wait(procs, health, args.timeout)
        api = f"{urls['prefect']}/api"
        hint = ("" if api == LOCAL_PREFECT_URL else  # other commands look for a server on the default port only
                f"\n(osteo commands show their runs here with OSTEO_PREFECT_LOCAL_URL={api})")
        # where an ML engineer works: the classifier's runs table (MLflow's own landing is its GenAI home)
        runs = experiment_runs_table(urls["mlflow"], get_settings().mlflow_experiment)
        emit(args, {"ok": True, **urls, **({"mlflow_runs": runs} if runs else {})},
             f"Prefect UI  {urls['prefect']}\nMLflow UI   {runs or urls['mlflow']}\n(Ctrl-C stops both){hint}")
        sys.stdout.flush()
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        died = next(name for name, p in procs.items() if p.poll() is not None)
        print(f"osteo: the {died} UI stopped (code {procs[died].returncode}); stopping the other", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        # a second Ctrl-C or SIGTERM must not cut the cleanup short
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _stop(procs)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


def register(add) -> None:
    p = add("ui", cmd_ui, "start the Prefect and MLflow UIs on the embedded stores (loopback only)")
    p.add_argument("--prefect-port", type=int, default=4200, help="Prefect UI port (default: %(default)s)")
    p.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=120,
                   help="seconds to wait for both to answer (default: %(default)s)")
