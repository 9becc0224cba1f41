"""What the service knows about sign-in while it runs (Access, on the ServiceState) and who a request is:
mode none answers everyone as OPEN; a bearer token names a machine in every other mode; proxy mode believes
a trusted proxy's headers; users and oidc modes read the session cookie."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from osteo.settings import Settings
from osteo_service.auth.proxy import Proxies, check_proxies, principal_of_headers
from osteo_service.auth.roles import OPEN, Principal, check_mapping
from osteo_service.auth.sessions import Timeouts, principal_of_session
from osteo_service.auth.throttle import Throttle
from osteo_service.auth.tokens import principal_of_token

Sessions = Callable[[], AbstractContextManager[Any]]  # a session factory of osteo's database


@dataclass(frozen=True)
class Access:
    mode: str  # none | users | proxy | oidc
    db: Sessions | None  # None only in mode none
    timeouts: Timeouts
    throttle: Throttle
    proxies: Proxies
    cookie_secure: bool
    public_selfcheck: bool
    settings: Settings = field(repr=False)
    oidc: Any = None  # Authlib's client (oidc mode)

    def sessions(self) -> Sessions:
        """The database's session factory, which every mode but none has."""
        if self.db is None:
            raise RuntimeError(f"access mode {self.mode} keeps no database")
        return self.db

    @property
    def cookie(self) -> str:
        # __Host-: the browser keeps it only when Secure, for this host and path / (no sub-domain can set it)
        return "__Host-osteo_session" if self.cookie_secure else "osteo_session"

    @property
    def signs_in(self) -> bool:
        """The service has its own sign-in page (users, oidc); proxy mode leaves it to the proxy."""
        return self.mode in ("users", "oidc")


def build_access(settings: Settings, db: Sessions | None) -> Access:
    """The sign-in of these settings; a bad setting refuses the start in one line (osteo.errors.UserError)."""
    check_mapping(settings.auth_proxy_group_roles, "OSTEO_AUTH_PROXY_GROUP_ROLES")
    check_mapping(settings.auth_oidc_group_roles, "OSTEO_AUTH_OIDC_GROUP_ROLES")
    oidc = None
    if settings.auth_mode == "oidc":
        from osteo_service.auth.oidc import oidc_client

        oidc = oidc_client(settings.auth_oidc_issuer, settings.auth_oidc_client_id, settings.auth_oidc_client_secret)
    return Access(mode=settings.auth_mode, db=db if settings.auth_mode != "none" else None,
                  timeouts=Timeouts(dt.timedelta(minutes=settings.auth_idle_minutes),
                                    dt.timedelta(hours=settings.auth_session_hours)),
                  throttle=Throttle(settings.auth_signin_per_user, settings.auth_signin_per_address,
                                    settings.auth_signin_window_minutes * 60),
                  proxies=check_proxies(settings.auth_proxy_trusted), cookie_secure=settings.auth_cookie_secure,
                  public_selfcheck=settings.auth_public_selfcheck, settings=settings, oidc=oidc)


def bearer_of(request: Request) -> str | None:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else None


class BadToken(Exception):
    """A bearer token was sent and is not an active token's (forged, expired, revoked)."""


async def identify(request: Request, access: Access) -> Principal | None:
    """Who the request is, or None (anonymous). Raises BadToken for a token that names nobody."""
    if access.mode == "none":
        return OPEN
    secret = bearer_of(request)
    if secret is not None:
        who = await run_in_threadpool(_in_db, access, principal_of_token, secret)
        if who is None:
            raise BadToken
        return who
    if access.mode == "proxy":
        s = access.settings
        return principal_of_headers(request, access.proxies, s.auth_proxy_user_header, s.auth_proxy_groups_header,
                                    s.auth_proxy_group_roles)
    cookie = request.cookies.get(access.cookie)
    if not cookie:
        return None
    return await run_in_threadpool(_in_db, access, principal_of_session, cookie, access.timeouts)


def _in_db(access: Access, fn: Callable[..., Any], *args: Any) -> Any:
    with access.sessions()() as session, session.begin():
        return fn(session, *args)
