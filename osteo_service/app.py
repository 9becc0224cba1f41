"""The screening service: the page (Traditional Chinese and English) and the JSON API over the
registry's champion. `osteo serve` runs `create_app` under uvicorn.

Every upload is read into memory (osteo_service.uploads), typed by its content, checked from its
header before any pixel is decoded, scored by the models the registry names now
(osteo_service.models) and forgotten; only an audit row without patient data is written.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from osteo import __version__
from osteo.etl.synthetic import synthetic_training
from osteo.settings import REPO_ROOT, Settings, get_settings
from osteo_model.gradcam import heatmap_png
from osteo_service import i18n, security
from osteo_service.models import ModelCache, Served, mlflow_registry
from osteo_service.schemas import (
    DISCLAIMER,
    MULTIPART,
    PROBLEM,
    HealthOut,
    LocatedOut,
    LocateOut,
    PredictOut,
    Problem,
    model_out,
    notice,
    predict_out,
    problem,
)
from osteo_service.screening import (
    Screening,
    data_url,
    heat_overlay_png,
    locate,
    preview,
    screen,
)
from osteo_service.selfcheck import IOF_QUESTIONS, self_check
from osteo_service.uploads import Decoded, Limits, UploadError, decode_upload, read_form

log = logging.getLogger("osteo.service")
HERE = Path(__file__).resolve().parent
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
FRAX_URL = "https://frax.shef.ac.uk/FRAX/"
LANG_COOKIE = "osteo_lang"
def create_app(settings: Settings | None = None, *, models: ModelCache | None = None, audit=None) -> FastAPI:
    """The service. Defaults: the settings of the environment, the MLflow registry they name, the audit
    table in their database. Tests pass their own."""
    settings = settings or get_settings()
    limits = Limits(max_pixels=settings.serve_max_pixels)
    limit_bytes = int(settings.serve_upload_limit_mb * 1024 * 1024)
    secret = security.service_secret(settings.serve_secret, settings.var_dir)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    infer = anyio.CapacityLimiter(1)  # one inference at a time per worker: the runtime uses the cores itself

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal models, audit
        if models is None:
            models = ModelCache(mlflow_registry(settings), settings.serve_model, settings.serve_localiser,
                                every_s=settings.serve_reload_seconds)
        if audit is None and settings.serve_audit:
            from osteo.settings import session_factory

            audit = session_factory(settings, create=True)
        if settings.serve_threads:  # the localiser and a PyTorch classifier share the cores like ONNX Runtime
            from osteo_model.train import configure_threads

            configure_threads(settings.serve_threads)
        await run_in_threadpool(models.current)  # load before the first request
        yield

    app = FastAPI(title="osteo screening service", version=__version__, lifespan=lifespan,
                  description="Osteoporosis screening from hip radiographs, over the MLflow registry's champion. "
                              + DISCLAIMER,
                  responses={413: PROBLEM, 415: PROBLEM, 422: PROBLEM, 503: PROBLEM})
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    # the manual's pictures (docs/screenshots/, made by the browser test); checked per request, not at start
    app.mount("/screenshots", StaticFiles(directory=str(SCREENSHOTS), check_dir=False), name="screenshots")

    app.add_middleware(security.SecurityHeaders)

    def served() -> Served | None:
        return models.current()

    # --- errors: problem details on the API, a page elsewhere --------------------------------

    @app.exception_handler(UploadError)
    async def refused(request: Request, exc: UploadError):
        return problem(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return problem(exc.status_code, {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error"),
                       str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return problem(422, "invalid_request", "the request does not match the API (see /docs)")

    # --- shared steps ------------------------------------------------------------------------

    def keep_upload(decoded: Decoded, data: bytes) -> None:
        if settings.serve_store_uploads is not None:  # only when told to
            from osteo_common.files import atomic_write_bytes

            atomic_write_bytes(Path(settings.serve_store_uploads) / f"{decoded.sha256}.{decoded.kind}", data)

    def record(channel: str, model: Served, decoded: Decoded, result: Screening) -> None:
        if audit is None:
            return
        from db.models import PredictionAudit

        with audit() as session, session.begin():
            session.add(PredictionAudit(
                channel=channel, model_name=model.name, model_version=model.version,
                localiser=model.localiser if result.box_source == "model" else None,
                input_sha256=decoded.sha256, input_kind=decoded.kind,
                box=list(result.box) if result.box else None, box_source=result.box_source,
                side=result.side or None, probability=result.probability, label=result.label,
                threshold=result.threshold))

    async def run_screening(channel: str, data: bytes, fields: dict[str, str], pictures: Callable[..., Any]):
        """Decode, screen, keep (when told), audit and draw the pictures in ONE worker-thread hop: each hop
        costs a context switch while the runtime's threads still spin from the last run."""
        model = served()
        if model is None:
            raise UploadError(503, "no_model", f"no model is registered as {settings.serve_model}: run `make demo` "
                                            "or `osteo train`")

        def work():
            decoded = decode_upload(data, limits)
            result = screen(decoded, model, box=fields.get("box", "").strip(), side=fields.get("side", ""),
                            cropped=fields.get("cropped", "") in ("true", "on", "1"))
            keep_upload(decoded, data)
            record(channel, model, decoded, result)
            return model, decoded, result, pictures(decoded, result)

        return await anyio.to_thread.run_sync(work, limiter=infer)

    def image_of(form) -> bytes:
        data = form.files.get("image")
        if not data:
            raise UploadError(422, "no_image", "the request has no image (multipart field `image`)")
        return data

    # --- the API -----------------------------------------------------------------------------

    @app.get("/api/v1/health", response_model=HealthOut, tags=["api"])
    def health() -> HealthOut:
        """Which model versions answer now."""
        model = served()
        synthetic = model.synthetic_training() if model else None
        return HealthOut(status="ok" if model else "no_model", model=model_out(model) if model else None,
                         localiser=(model.localiser or None) if model else None, model_uri=settings.serve_model,
                         localiser_uri=settings.serve_localiser, reload_seconds=settings.serve_reload_seconds,
                         version=__version__, synthetic_training=synthetic, notice=notice(synthetic))

    @app.post("/api/v1/predict", response_model=PredictOut, tags=["api"], openapi_extra=MULTIPART)
    async def api_predict(request: Request) -> PredictOut:
        """Score one hip radiograph (or a femoral-neck crop with cropped=true): probability, label at the
        model's operating threshold, the box used and the Grad-CAM heat map."""
        form = await read_form(request, limit_bytes)
        model, decoded, result, heat = await run_screening("api", image_of(form), form.fields,
                                                           lambda _d, r: heatmap_png(r.heatmap))
        return predict_out(model, decoded, result, heat)

    @app.post("/api/v1/locate", response_model=LocateOut, tags=["api"], openapi_extra={"requestBody": {
        "required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {"image": {"type": "string", "format": "binary"}}}}}}})
    async def api_locate(request: Request) -> LocateOut:
        """The whole image as the pipeline renders it and the femoral-neck boxes the localiser proposes
        (the page draws them for the user to move)."""
        form = await read_form(request, limit_bytes)
        data = image_of(form)
        model = served()
        if model is None:
            raise UploadError(503, "no_model", f"no model is registered as {settings.serve_model}")
        decoded = await run_in_threadpool(decode_upload, data, limits)
        found = await anyio.to_thread.run_sync(locate, decoded, model, limiter=infer)
        png, scale = await run_in_threadpool(preview, decoded.display)
        rows, cols = decoded.display.shape
        need = float(model.crop["min_confidence"])
        synthetic = synthetic_training(model.localiser_trained_on)  # the boxes are the localiser's alone
        return LocateOut(rows=rows, cols=cols, laterality=decoded.laterality, scale=scale,
                         preview_png=base64.b64encode(png).decode("ascii"),
                         boxes=[LocatedOut(side=f.side, box=[int(v) for v in f.box], confidence=float(f.confidence),
                                           confident=f.confidence >= need) for f in found],
                         localiser=model.localiser or None, model=model_out(model),
                         localiser_trained_on=model.localiser_trained_on, synthetic_training=synthetic,
                         notice=notice(synthetic))

    # --- the page ----------------------------------------------------------------------------

    def page(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        asked = request.query_params.get("lang")
        lang = i18n.pick_lang(asked, request.cookies.get(LANG_COOKIE))
        token = request.cookies.get(security.CSRF_COOKIE)
        if not security.valid_token(secret, token, token):
            token = security.new_token(secret)
        model = served()
        t = i18n.translator(lang)
        response = templates.TemplateResponse(request, template, {
            "t": t, "lang": lang, "other": "en" if lang == "zh-TW" else "zh-TW",
            "test_year": lambda m: i18n.describe_test_year(t, m.test_year),  # the answering version's figures
            "csrf": token, "csrf_field": security.CSRF_FIELD, "served": model,
            "demo_banner": bool(model and model.synthetic_training()),
            "booking_url": settings.serve_booking_url,
            "frax_url": FRAX_URL, "limit_mb": f"{settings.serve_upload_limit_mb:g}", "iof": IOF_QUESTIONS,
            "model_uri": settings.serve_model, "path": request.url.path, **context}, status_code=status)
        response.set_cookie(security.CSRF_COOKIE, token, httponly=True, samesite="strict")
        if asked in i18n.LANGS:
            response.set_cookie(LANG_COOKIE, asked, samesite="lax", max_age=365 * 24 * 3600)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request):
        if served() is None:
            return page(request, "no_model.html", {}, 503)
        return page(request, "index.html", {"error": None, "check": self_check({})})

    @app.post("/predict", response_class=HTMLResponse, include_in_schema=False)
    async def predict_page(request: Request):
        try:
            form = await read_form(request, limit_bytes)
        except UploadError as exc:
            return page(request, "index.html", {"error": exc.code, "check": self_check({})}, exc.status)
        check = self_check(form.fields)
        if not security.valid_token(secret, request.cookies.get(security.CSRF_COOKIE),
                                    form.fields.get(security.CSRF_FIELD)):
            return page(request, "index.html", {"error": "csrf", "check": check}, 403)
        try:
            model, decoded, result, (heat, whole) = await run_screening("page", image_of(form), form.fields,
                                                                        page_pictures)
        except UploadError as exc:
            if exc.code == "no_model":
                return page(request, "no_model.html", {}, 503)
            return page(request, "index.html", {"error": exc.code, "check": check}, exc.status)
        return page(request, "result.html", {
            "result": result, "model": model, "check": check, "reference": form.fields.get("reference", "")[:80],
            "heat_url": data_url(heat), "whole_url": data_url(whole),
            "now": dt.datetime.now().strftime("%Y-%m-%d %H:%M")})

    def page_pictures(decoded: Decoded, result: Screening) -> tuple[bytes, bytes]:
        """The heat map over the crop, and the whole image with the box scored (red: flagged) and the other side's."""
        boxes = [(s.box, "#ffcc00") for s in result.sides if s.box and s.box != result.box]
        if result.box:
            boxes.append((result.box, "#ff3b30" if result.label else "#34c759"))
        return heat_overlay_png(result), preview(decoded.display, boxes)[0]

    @app.get("/self-check", response_class=HTMLResponse, include_in_schema=False)
    def selfcheck_page(request: Request):
        return page(request, "selfcheck.html", {"check": self_check({}), "submitted": False})

    @app.post("/self-check", response_class=HTMLResponse, include_in_schema=False)
    async def selfcheck_post(request: Request):
        form = await read_form(request, limit_bytes)
        if not security.valid_token(secret, request.cookies.get(security.CSRF_COOKIE),
                                    form.fields.get(security.CSRF_FIELD)):
            return page(request, "selfcheck.html", {"check": self_check({}), "submitted": False, "error": "csrf"}, 403)
        return page(request, "selfcheck.html", {"check": self_check(form.fields), "submitted": True})

    @app.get("/manual", response_class=HTMLResponse, include_in_schema=False)
    def manual(request: Request):
        shots = {name for name in (s for _, _, s in i18n.MANUAL_STEPS) if name and (SCREENSHOTS / name).exists()}
        return page(request, "manual.html", {"steps": i18n.MANUAL_STEPS, "shots": shots})

    @app.get("/lang/{code}", include_in_schema=False)
    def switch_lang(code: str, next: str = "/"):
        target = next if next.startswith("/") and not next.startswith("//") else "/"  # never an open redirect
        response = RedirectResponse(target, status_code=303)
        if code in i18n.LANGS:
            response.set_cookie(LANG_COOKIE, code, samesite="lax", max_age=365 * 24 * 3600)
        return response

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
