"""A throw-away MLflow tracking server as production runs it (docs/production.md, section 5): MLflow's basic-auth
app with osteo's page (`--app-name osteo-ui-auth`), users and registry permissions in its own SQLite file, the
admin's password from the environment. On a free 127.0.0.1 port. The artifacts go to a local folder that the
clients write directly (production serves them through the server, `--serve-artifacts`: not exercised here)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.prefect_server import VENV_BIN, free_port, spawn, stop_all, wait_healthy

ADMIN = "admin"
PROMOTER = "osteo-promoter"  # the one user that may move `champion` (docs/production.md)
GUARDED_MODELS = ("osteo-classifier", "osteo-roi")


@dataclass(frozen=True)
class GuardedServer:
    url: str
    admin_password: str
    promoter_password: str
    log: Path
    ready: Callable[[], None]  # waits until the server answers, then guards it (guard_registry)


def auth_config(folder: Path) -> Path:
    """basic_auth.ini as docs/production.md gives it: everyone reads, nobody else writes what they did not create."""
    path = folder / "basic_auth.ini"
    path.write_text("[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = sqlite:///{folder / 'basic_auth.db'}\nadmin_username = {ADMIN}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


def server_env(folder: Path, admin_password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OSTEO_", "MLFLOW_"))}
    return env | {"MLFLOW_AUTH_CONFIG_PATH": str(auth_config(folder)), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
                  "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16), "MLFLOW_DISABLE_TELEMETRY": "true",
                  "DO_NOT_TRACK": "1"}


def command(folder: Path, port: int, backend_store_uri: str) -> list:
    return [VENV_BIN / "mlflow", "server", "--app-name", "osteo-ui-auth", "--backend-store-uri", backend_store_uri,
            "--default-artifact-root", folder / "artifacts", "--no-serve-artifacts", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]


@contextmanager
def as_user(username: str | None, password: str | None) -> Iterator[None]:
    """MLflow's clients read the user and password from the environment: set for the block (None: anonymous)."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    old = {k: os.environ.get(k) for k in keys}
    for key, value in zip(keys, (username, password), strict=True):
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def guard_registry(url: str, admin_password: str, promoter_password: str) -> None:
    """The admin's one-time setup of docs/production.md: the promoter user, the registered models made by the
    admin (so that nobody else owns them) and MANAGE on them for the promoter only."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    with as_user(ADMIN, admin_password):
        auth = get_app_client("basic-auth", tracking_uri=url)
        auth.create_user(PROMOTER, promoter_password)
        registry = MlflowClient(url, url)
        for name in GUARDED_MODELS:
            registry.create_registered_model(name)
            auth.grant_user_permission(PROMOTER, "registered_model", name, "MANAGE")


@contextmanager
def start_guarded_mlflow(folder: Path, backend_store_uri: str | None = None, timeout: float = 240,
                         wait: bool = True) -> Iterator[GuardedServer]:
    """The server started and, unless `wait` is False (then the caller calls `ready()` when it needs the server, and
    does its own work while the server starts), answering and guarded; stopped on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    port, admin_password, promoter_password = free_port(), secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    log = folder / "mlflow-server.log"
    proc = spawn(command(folder, port, backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}"),
                 server_env(folder, admin_password), log, cwd=folder)
    url = f"http://127.0.0.1:{port}"

    def ready() -> None:
        wait_healthy(proc, f"{url}/health", log, timeout, "the MLflow server with basic-auth")
        guard_registry(url, admin_password, promoter_password)

    try:
        if wait:
            ready()
        yield GuardedServer(url, admin_password, promoter_password, log, ready)
    finally:
        stop_all([proc], grace=3)
