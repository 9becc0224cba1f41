"""One guard per route (FastAPI dependencies): `Public`, `SelfCheck`, `ScreeningRole`, `ReferralsRole`,
`AuditRole`, `AdminRole`. A guard answers who the request is (a Principal) or refuses it with `Refused`
(401: nobody we know; 403: someone without the role), which the app turns into problem details on the API
and a page elsewhere
(osteo_service.routes.signin). The referral list (issue 27) takes `ReferralsRole` like any other route:

    @router.get("/referrals")
    def referrals(state: State, who: ReferralsRole): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from osteo_service import security
from osteo_service.auth.modes import BadToken, identify
from osteo_service.auth.roles import ADMIN, AUDIT, REFERRALS, SCREENING, Principal
from osteo_service.deps import State

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
UNKNOWN = object()
CSRF_HEADER = "X-CSRF-Token"  # a signed-in page's script sends the form's CSRF token with its API calls
# declares the bearer scheme in the OpenAPI schema; the guards read the header themselves
BEARER = HTTPBearer(auto_error=False, description="a token from `osteo tokens create NAME --role ROLE`")


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


class Refused(Exception):
    def __init__(self, status: int, code: str, detail: str, role: str | None = None, who: Principal | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.role, self.who = status, code, detail, role, who


async def who_is(request: Request, state: State) -> Principal | None:
    """The request's principal (None: anonymous), found once per request."""
    if getattr(request.state, "principal", UNKNOWN) is UNKNOWN:
        try:
            request.state.principal = await identify(request, state.access)
        except BadToken:
            raise Refused(401, "invalid_token", "the bearer token is not an active token (forged, expired or "
                                                "revoked)") from None
    return request.state.principal


def require(role: str) -> Callable:
    async def guard(request: Request, state: State, _bearer: Bearer) -> Principal:
        who = await who_is(request, state)
        if who is None:
            raise Refused(401, "signin_required", f"sign in, or send a bearer token (this needs the {role} role)",
                          role)
        if not who.may(role):
            raise Refused(403, "forbidden", f"{who.name} does not hold the {role} role", role, who)
        if who.via in ("password", "oidc") and request.method in UNSAFE and request.url.path.startswith("/api/"):
            check_csrf_header(request, state)
        return who

    guard.__name__ = f"require_{role}"
    return guard


def check_csrf_header(request: Request, state: State) -> None:
    """An API call made with the session cookie (the page's own script) carries the form's CSRF token."""
    if not security.valid_token(state.secret, request.cookies.get(security.CSRF_COOKIE),
                                request.headers.get(CSRF_HEADER)):
        raise Refused(403, "csrf", f"an API call signed in by cookie needs the page's {CSRF_HEADER} header")


async def public(request: Request, state: State) -> Principal | None:
    """Anyone; the principal, when there is one, for the page's header."""
    try:
        return await who_is(request, state)
    except Refused:
        return None


async def self_check(request: Request, state: State) -> Principal | None:
    """The self-assessment: anyone when OSTEO_AUTH_PUBLIC_SELFCHECK (the default), else anyone signed in."""
    who = await public(request, state)
    if state.access.public_selfcheck or (who is not None and who.roles):
        return who
    if who is None:
        raise Refused(401, "signin_required", "sign in to use the self-assessment")
    raise Refused(403, "forbidden", f"{who.name} holds no role", None, who)


Public = Annotated[Principal | None, Depends(public)]
SelfCheck = Annotated[Principal | None, Depends(self_check)]
ScreeningRole = Annotated[Principal, Depends(require(SCREENING))]
ReferralsRole = Annotated[Principal, Depends(require(REFERRALS))]
AuditRole = Annotated[Principal, Depends(require(AUDIT))]
AdminRole = Annotated[Principal, Depends(require(ADMIN))]
