"""What the service holds while it runs, on `app.state.service` (routes reach it through
osteo_service.deps): the settings, the models the registry names now, the audit table, the upload
limits, the CSRF secret, the templates and the one-inference-at-a-time limiter. Frozen: the cache
inside follows the registry; the state itself is built once, at start-up."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi.templating import Jinja2Templates

from osteo.settings import Settings
from osteo_service.auth.modes import Access, build_access
from osteo_service.limits import Limits
from osteo_service.models import ModelCache, Served, mlflow_registry

HERE = Path(__file__).resolve().parent
AuditSessions = Callable[[], AbstractContextManager[Any]]  # a session factory of the pipeline's database


@dataclass(frozen=True)
class ServiceState:
    settings: Settings
    models: ModelCache
    audit: AuditSessions | None  # None: no audit rows (OSTEO_SERVE_AUDIT off, or a test's choice)
    secret: bytes  # signs the forms' CSRF tokens (osteo_service.security)
    limits: Limits
    limit_bytes: int  # the largest request body accepted
    templates: Jinja2Templates
    infer: anyio.CapacityLimiter  # one inference at a time per worker: the runtime uses the cores itself
    access: Access  # who may use it (OSTEO_AUTH_MODE, osteo_service.auth)

    @classmethod
    def build(cls, settings: Settings, models: ModelCache, audit: AuditSessions | None,
              secret: bytes) -> ServiceState:
        return cls(settings=settings, models=models, audit=audit, secret=secret,
                   limits=Limits(max_pixels=settings.serve_max_pixels),
                   limit_bytes=int(settings.serve_upload_limit_mb * 1024 * 1024),
                   templates=Jinja2Templates(directory=str(HERE / "templates")),
                   infer=anyio.CapacityLimiter(1), access=build_access(settings, _access_db(settings, audit)))

    def served(self) -> Served | None:
        """The models to answer with now (the cache asks the registry at most once a reload period)."""
        return self.models.current()


def _access_db(settings: Settings, audit: AuditSessions | None) -> AuditSessions | None:
    """The accounts, tokens and sessions live in the audit's database (osteo's); mode none needs none."""
    if settings.auth_mode == "none":
        return None
    if audit is not None:
        return audit
    from osteo.settings import session_factory

    return session_factory(settings, create=True)


def open_state(settings: Settings, models: ModelCache | None, audit: AuditSessions | None,
               secret: bytes) -> ServiceState:
    """The state at start-up: the registry and the audit table of the settings where none were given,
    the threads of the localiser and of a PyTorch classifier set."""
    if models is None:
        models = ModelCache(mlflow_registry(settings), settings.serve_model, settings.serve_localiser,
                            every_s=settings.serve_reload_seconds)
    if audit is None and settings.serve_audit:
        from osteo.settings import session_factory

        audit = session_factory(settings, create=True)
    if settings.serve_threads:  # the localiser and a PyTorch classifier share the cores like ONNX Runtime
        from osteo_model.train import configure_threads

        configure_threads(settings.serve_threads)
    return ServiceState.build(settings, models, audit, secret)
