"""A throw-away `prefect server start` on a free loopback port, for the deployment and resume tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def server_env(home: Path, port: int, auth_string: str | None = None) -> dict[str, str]:
    """The server's and its clients' environment; with `auth_string`, production's basic authentication: the
    server takes only requests that carry it (PREFECT_SERVER_API_AUTH_STRING), the clients send it
    (PREFECT_API_AUTH_STRING)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OSTEO_"))}
    if auth_string is not None:
        env.update({"PREFECT_SERVER_API_AUTH_STRING": auth_string, "PREFECT_API_AUTH_STRING": auth_string})
    env.update({
        "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
    })
    return env


@contextmanager
def start_prefect_server(home: Path, timeout: float = 150, auth_string: str | None = None):
    """`prefect server start` on a free 127.0.0.1 port (with `auth_string`: basic authentication, server_env);
    yields its API URL, or None if it did not start."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "server.log"
    proc = subprocess.Popen([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=server_env(home, port, auth_string), cwd=home, start_new_session=True,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    try:
        try:
            wait_until(lambda: healthy(api) or proc.poll() is not None, timeout, "the Prefect server")
        except TimeoutError:
            pass
        yield api if proc.poll() is None and healthy(api) else None
    finally:
        stop(proc)


def spawn(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """A server or worker in its own process group (stop() ends the group), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(c) for c in cmd], env=env, cwd=cwd or log.parent, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_healthy(proc: subprocess.Popen, health_url: str, log: Path, timeout: float, what: str) -> None:
    """Wait until `health_url` answers 200; a process that exits or never answers fails with its log's tail."""
    def answers() -> bool:
        try:
            with urllib.request.urlopen(health_url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(lambda: proc.poll() is not None or answers(), timeout, what)
    except TimeoutError:
        pass
    if proc.poll() is not None or not answers():
        raise AssertionError(f"{what} did not start (exit code {proc.poll()}):\n{log.read_text()[-3000:]}")


def stop_all(procs: list[subprocess.Popen], grace: float = 10) -> None:
    """SIGTERM to every process group at once, then SIGKILL to what is left after `grace` seconds (servers
    whose databases are dropped next need no slow goodbye, one after another)."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group: workers a server left behind too
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
