"""Proxy mode: the hospital's reverse proxy (or SSO gateway) signs people in and passes the user and groups in
headers. The headers are believed only on a connection from a configured proxy address; from anywhere else
they are ignored, so a person who reaches the service directly cannot name themselves."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

from starlette.requests import Request

from osteo_service.auth.roles import Principal, roles_of_groups


@dataclass(frozen=True)
class Proxies:
    trusted: tuple[str, ...]  # addresses or networks (OSTEO_AUTH_PROXY_TRUSTED)

    @cached_property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(t, strict=False) for t in self.trusted)

    def trusts(self, host: str | None) -> bool:
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:  # no address (a test client, a Unix socket): never a trusted proxy
            return False
        return any(address in net for net in self.networks)


def check_proxies(trusted: list[str]) -> Proxies:
    from osteo.errors import UserError

    try:
        proxies = Proxies(tuple(trusted))
        proxies.networks  # noqa: B018 - parse now: a typo refuses the start, not every request
    except ValueError as exc:
        raise UserError("bad_setting", f"OSTEO_AUTH_PROXY_TRUSTED: {exc}") from None
    return proxies


def client_address(request: Request, proxies: Proxies) -> str:
    """The client's address: the connection's, or the nearest X-Forwarded-For hop when a trusted proxy sent it
    (the sign-in throttle counts per person's address, not per proxy)."""
    host = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and proxies.trusts(host):
        return forwarded.split(",")[-1].strip() or host
    return host


def principal_of_headers(request: Request, proxies: Proxies, user_header: str, groups_header: str,
                         mapping: dict[str, str]) -> Principal | None:
    """The proxy's user with the roles of their groups; None when the connection is not a trusted proxy's or
    names no user."""
    if not proxies.trusts(request.client.host if request.client else None):
        return None
    user = request.headers.get(user_header, "").strip()
    if not user:
        return None
    groups = [g.strip() for g in request.headers.get(groups_header, "").split(",") if g.strip()]
    return Principal(user[:128], roles_of_groups(groups, mapping), "proxy")
