"""Sign-in and sign-out (users and oidc modes), and every refusal of a guard: problem details (RFC 9457) on
the API, a page in the person's language elsewhere (401: the sign-in page; 403: not allowed)."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from osteo_service import security
from osteo_service.auth import oidc
from osteo_service.auth.accounts import check_password
from osteo_service.auth.guards import Public, Refused
from osteo_service.auth.proxy import client_address
from osteo_service.auth.roles import Principal
from osteo_service.auth.sessions import end_session, open_session
from osteo_service.deps import State
from osteo_service.form_parser import read_form
from osteo_service.limits import UploadError
from osteo_service.routes.page import csrf_ok, render
from osteo_service.schemas import problem
from osteo_service.state import ServiceState

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path of this site (never an open redirect), never back to the sign-in itself."""
    if not target or not target.startswith("/") or target.startswith("//") or target.startswith("/signin"):
        return "/"
    return target


def signin_page(request: Request, state: ServiceState, status: int = 200, message: str | None = None,
                **values) -> HTMLResponse:
    return render(request, state, "signin.html", {"message": message, "values": values, "mode": state.access.mode,
                                                  "next": safe_next(request.query_params.get("next"))}, status)


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request, state: State, who: Public):
    if who is not None:  # signed in already, or mode none (nobody signs in)
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return signin_page(request, state, message="signed_out" if request.query_params.get("out") else None)


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request, state: State):
    access = state.access
    if access.mode != "users":
        return signin_page(request, state, 404)
    try:
        form = await read_form(request, 64 * 1024)
    except UploadError as exc:
        return signin_page(request, state, exc.status)
    if not csrf_ok(request, state, form.fields):
        return render(request, state, "signin.html", {"message": "csrf_error", "values": {}, "mode": access.mode,
                                                      "next": "/"}, 403)
    name, password = form.fields.get("name", "")[:128], form.fields.get("password", "")
    wait = access.throttle.admit(name, client_address(request, access.proxies))
    if wait is not None:
        response = signin_page(request, state, 429, "signin_throttled", minutes=max(1, math.ceil(wait / 60)))
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    who = await run_in_threadpool(_in_db, state, check_password, name, password)
    if who is None:
        return signin_page(request, state, 401, "signin_failed")
    access.throttle.forget_user(name)
    return await signed_in(request, state, who, safe_next(form.fields.get("next")))


async def signed_in(request: Request, state: ServiceState, who: Principal, target: str) -> Response:
    """A new session (the one the browser brought, if any, ended: a session id never survives a sign-in) and a
    new CSRF token."""
    access = state.access
    cookie = await run_in_threadpool(_in_db, state, _rotate, request.cookies.get(access.cookie), who)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(access.cookie, cookie, max_age=int(access.timeouts.absolute.total_seconds()), path="/",
                        secure=access.cookie_secure, httponly=True, samesite="lax")
    response.set_cookie(security.CSRF_COOKIE, security.new_token(state.secret), httponly=True, samesite="strict")
    return response


def _rotate(session, old: str | None, who: Principal) -> str:
    end_session(session, old)
    return open_session(session, who)


def _in_db(state: ServiceState, fn, *args):
    with state.access.sessions()() as session, session.begin():
        return fn(session, *args)


@router.post("/signout")
async def signout(request: Request, state: State):
    access = state.access
    form = await read_form(request, 64 * 1024)
    if not csrf_ok(request, state, form.fields):
        return render(request, state, "signin.html", {"message": "csrf_error", "values": {}, "mode": access.mode,
                                                      "next": "/"}, 403)
    if access.db is not None:
        await run_in_threadpool(_in_db, state, end_session, request.cookies.get(access.cookie))
    response = RedirectResponse("/signin?out=1", status_code=303)
    response.delete_cookie(access.cookie, path="/", secure=access.cookie_secure, httponly=True, samesite="lax")
    return response


@router.get("/signin/oidc")
async def signin_oidc(request: Request, state: State):
    access = state.access
    if access.mode != "oidc":
        return signin_page(request, state, 404)
    request.session["next"] = safe_next(request.query_params.get("next"))
    redirect = access.settings.auth_oidc_redirect_url or str(request.url_for("signin_callback"))
    return await oidc.begin(access.oidc, request, redirect)


@router.get("/signin/callback", name="signin_callback")
async def signin_callback(request: Request, state: State):
    access = state.access
    if access.mode != "oidc":
        return signin_page(request, state, 404)
    s = access.settings
    who = await oidc.finish(access.oidc, request, s.auth_oidc_groups_claim, s.auth_oidc_group_roles)
    if who is None:
        return signin_page(request, state, 401, "signin_oidc_failed")
    return await signed_in(request, state, who, safe_next(request.session.pop("next", "/")))


async def refused(request: Request, exc: Refused) -> Response:
    """A guard's refusal: problem details on the API (with the Bearer challenge on 401), else a page."""
    if request.url.path.startswith("/api/"):
        response = problem(exc.status, exc.code, exc.detail)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="osteo"' + (
                ', error="invalid_token"' if exc.code == "invalid_token" else "")
        return response
    state = request.app.state.service
    if exc.status == 401:
        # back to the page asked for after the sign-in; a refused form post goes back to the start
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = target if request.method == "GET" else "/"
        return render(request, state, "signin.html", {"message": "signin_needed", "values": {},
                                                      "mode": state.access.mode, "next": safe_next(target)}, 401)
    return render(request, state, "forbidden.html", {"role": exc.role or "-", "who": exc.who}, exc.status)
