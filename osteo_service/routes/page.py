"""The page (HTML, Traditional Chinese or English): upload and result, the stand-alone self-assessment, the
manual and the language switch. Works without JavaScript; every form carries the signed CSRF token."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from osteo.settings import REPO_ROOT
from osteo_service import i18n, security
from osteo_service.auth.guards import Public, ScreeningRole, SelfCheck
from osteo_service.deps import RequestForm, State
from osteo_service.form_parser import read_form
from osteo_service.image_decoding import Decoded
from osteo_service.limits import UploadError
from osteo_service.routes.steps import image_of, run_screening
from osteo_service.screening import Screening, data_url, heat_overlay_png, preview
from osteo_service.selfcheck import IOF_QUESTIONS, self_check
from osteo_service.state import ServiceState

SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"  # the manual's pictures, made by the browser test
FRAX_URL = "https://frax.shef.ac.uk/FRAX/"
LANG_COOKIE = "osteo_lang"
A_YEAR = 365 * 24 * 3600

router = APIRouter(include_in_schema=False)


def render(request: Request, state: ServiceState, template: str, context: dict[str, Any],
           status: int = 200) -> HTMLResponse:
    """A page in the language asked (query), chosen (cookie) or the default, with a valid CSRF token."""
    settings = state.settings
    asked = request.query_params.get("lang")
    lang = i18n.pick_lang(asked, request.cookies.get(LANG_COOKIE))
    token = request.cookies.get(security.CSRF_COOKIE)
    if token is None or not security.valid_token(state.secret, token, token):
        token = security.new_token(state.secret)
    model = state.served()
    t = i18n.translator(lang)
    response = state.templates.TemplateResponse(request, template, {
        "t": t, "lang": lang, "other": "en" if lang == "zh-TW" else "zh-TW",
        "test_year": lambda m: i18n.describe_test_year(t, m.test_year),  # the answering version's figures
        "csrf": token, "csrf_field": security.CSRF_FIELD, "served": model,
        "demo_banner": bool(model and model.synthetic_training()),
        "booking_url": settings.serve_booking_url,
        "frax_url": FRAX_URL, "limit_mb": f"{settings.serve_upload_limit_mb:g}", "iof": IOF_QUESTIONS,
        "model_uri": settings.serve_model, "path": request.url.path,
        "principal": getattr(request.state, "principal", None), "open_banner": state.access.mode == "none",
        "signs_in": state.access.signs_in, **context}, status_code=status)
    response.set_cookie(security.CSRF_COOKIE, token, httponly=True, samesite="strict")
    if asked in i18n.LANGS:
        response.set_cookie(LANG_COOKIE, asked, samesite="lax", max_age=A_YEAR)
    return response


def csrf_ok(request: Request, state: ServiceState, fields: dict[str, str]) -> bool:
    return security.valid_token(state.secret, request.cookies.get(security.CSRF_COOKIE),
                                fields.get(security.CSRF_FIELD))


@router.get("/", response_class=HTMLResponse)
def index(request: Request, state: State, who: ScreeningRole):
    if state.served() is None:
        return render(request, state, "no_model.html", {}, 503)
    return render(request, state, "index.html", {"error": None, "check": self_check({})})


@router.post("/predict", response_class=HTMLResponse)
async def predict_page(request: Request, state: State, who: ScreeningRole):
    try:
        form = await read_form(request, state.limit_bytes)
    except UploadError as exc:
        return render(request, state, "index.html", {"error": exc.code, "check": self_check({})}, exc.status)
    check = self_check(form.fields)
    if not csrf_ok(request, state, form.fields):
        return render(request, state, "index.html", {"error": "csrf", "check": check}, 403)
    try:
        model, decoded, result, (heat, whole) = await run_screening(state, "page", image_of(form), form.fields,
                                                                    page_pictures, who.audit_name)
    except UploadError as exc:
        if exc.code == "no_model":
            return render(request, state, "no_model.html", {}, 503)
        return render(request, state, "index.html", {"error": exc.code, "check": check}, exc.status)
    return render(request, state, "result.html", {
        "result": result, "model": model, "check": check, "reference": form.fields.get("reference", "")[:80],
        "heat_url": data_url(heat), "whole_url": data_url(whole),
        "now": dt.datetime.now().strftime("%Y-%m-%d %H:%M")})


def page_pictures(decoded: Decoded, result: Screening) -> tuple[bytes, bytes]:
    """The heat map over the crop, and the whole image with the box scored (red: flagged) and the other side's."""
    boxes = [(s.box, "#ffcc00") for s in result.sides if s.box and s.box != result.box]
    if result.box:
        boxes.append((result.box, "#ff3b30" if result.label else "#34c759"))
    return heat_overlay_png(result), preview(decoded.display, boxes)[0]


@router.get("/self-check", response_class=HTMLResponse)
def selfcheck_page(request: Request, state: State, who: SelfCheck):
    return render(request, state, "selfcheck.html", {"check": self_check({}), "submitted": False})


@router.post("/self-check", response_class=HTMLResponse)
async def selfcheck_post(request: Request, state: State, who: SelfCheck, form: RequestForm):
    if not csrf_ok(request, state, form.fields):
        return render(request, state, "selfcheck.html", {"check": self_check({}), "submitted": False,
                                                         "error": "csrf"}, 403)
    return render(request, state, "selfcheck.html", {"check": self_check(form.fields), "submitted": True})


@router.get("/manual", response_class=HTMLResponse)
def manual(request: Request, state: State, who: Public):
    shots = {name for name in (s for _, _, s in i18n.MANUAL_STEPS) if name and (SCREENSHOTS / name).exists()}
    return render(request, state, "manual.html", {"steps": i18n.MANUAL_STEPS, "shots": shots})


@router.get("/lang/{code}")
def switch_lang(who: Public, code: str, next: str = "/"):
    target = next if next.startswith("/") and not next.startswith("//") else "/"  # never an open redirect
    response = RedirectResponse(target, status_code=303)
    if code in i18n.LANGS:
        response.set_cookie(LANG_COOKIE, code, samesite="lax", max_age=A_YEAR)
    return response
