"""The screening service: the page (Traditional Chinese and English) and the JSON API over the
registry's champion. `osteo serve` runs `create_app` under uvicorn.

Every upload is read into memory (osteo_service.form_parser), typed by its content, checked from its
header before any pixel is decoded (osteo_service.image_decoding, osteo_service.dicom_checks), scored by
the models the registry names now (osteo_service.models) and forgotten; only an audit row without
patient data is written. The routes are in osteo_service.routes (page, api, health); what they share
is the ServiceState on `app.state.service` (osteo_service.state), reached through osteo_service.deps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from osteo import __version__
from osteo.settings import Settings, get_settings
from osteo_service import security
from osteo_service.auth.guards import Refused
from osteo_service.auth.oidc import FLOW_COOKIE, FLOW_SECONDS
from osteo_service.limits import UploadError
from osteo_service.models import ModelCache
from osteo_service.routes import api, health, page, signin
from osteo_service.routes import audit as audit_api
from osteo_service.routes import referrals as referrals_routes
from osteo_service.schemas import DISCLAIMER, PROBLEM, Problem, problem
from osteo_service.state import HERE, AuditSessions, ServiceState, open_state


def create_app(settings: Settings | None = None, *, models: ModelCache | None = None,
               audit: AuditSessions | None = None) -> FastAPI:
    """The service. Defaults: the settings of the environment, the MLflow registry they name, the audit
    table in their database (both opened at start-up). Tests pass their own."""
    settings = settings or get_settings()
    secret = security.service_secret(settings.serve_secret, settings.var_dir)
    app = FastAPI(title="osteo screening service", version=__version__,
                  lifespan=_lifespan(settings, models, audit, secret),
                  description="Osteoporosis screening from hip radiographs, over the MLflow registry's champion. "
                              + DISCLAIMER,
                  responses={413: PROBLEM, 415: PROBLEM, 422: PROBLEM, 503: PROBLEM})
    if models is not None:  # given models answer without a start-up too (schemathesis calls the app unstarted)
        app.state.service = ServiceState.build(settings, models, audit, secret)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    # the manual's pictures (docs/screenshots/, made by the browser test); checked per request, not at start
    app.mount("/screenshots", StaticFiles(directory=str(page.SCREENSHOTS), check_dir=False), name="screenshots")
    app.add_middleware(security.SecurityHeaders)
    if settings.auth_mode == "oidc":  # the OIDC flow's state, nonce and PKCE verifier, signed, for ten minutes
        from starlette.middleware.sessions import SessionMiddleware

        app.add_middleware(SessionMiddleware, secret_key=secret.decode(), session_cookie=FLOW_COOKIE,
                           max_age=FLOW_SECONDS, same_site="lax", https_only=settings.auth_cookie_secure)
    app.exception_handler(Refused)(signin.refused)
    app.exception_handler(UploadError)(_refused)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    for router in (health.router, api.router, audit_api.router, page.router, signin.router,
                   referrals_routes.router):
        app.include_router(router)
    app.openapi = _openapi_of(app)
    return app


def _lifespan(settings: Settings, models: ModelCache | None, audit: AuditSessions | None,
              secret: bytes) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = state = open_state(settings, models, audit, secret)
        await run_in_threadpool(state.models.current)  # load before the first request
        yield

    return lifespan


# --- errors: problem details on the API, a page elsewhere (the page's routes render their own) ---------------

async def _refused(request: Request, exc: UploadError):
    return problem(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: StarletteHTTPException):
    return problem(exc.status_code, {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error"),
                   str(exc.detail))


async def _validation_error(request: Request, exc: RequestValidationError):
    return problem(422, "invalid_request", "the request does not match the API (see /docs)")


def _openapi_of(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI schema with the Problem model that every error answers with."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
