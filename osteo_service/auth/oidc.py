"""OIDC mode: sign-in with the hospital's OpenID Connect provider through Authlib's Starlette client,
authorization code with PKCE (S256) and a nonce; Authlib checks the ID token (signature by the provider's
JWKS, issuer, audience, expiry, nonce). The groups claim maps to roles (OSTEO_AUTH_OIDC_GROUP_ROLES). The
state, nonce and code verifier wait in a short-lived signed cookie (Starlette's SessionMiddleware) between the
redirect and the callback; after the callback the person holds an osteo session like a password sign-in."""

from __future__ import annotations

from typing import Any

from osteo.errors import UserError
from osteo_service.auth.roles import Principal, roles_of_groups

NAME_CLAIMS = ("preferred_username", "email", "sub")  # the first one present names the person
FLOW_COOKIE = "osteo_oidc"
FLOW_SECONDS = 600  # a sign-in at the provider must finish within this


def oidc_client(issuer: str, client_id: str, client_secret: str) -> Any:
    """Authlib's client of the provider (its metadata read on first use, then kept)."""
    if not issuer or not client_id:
        raise UserError("bad_setting", "OSTEO_AUTH_MODE=oidc needs OSTEO_AUTH_OIDC_ISSUER and "
                                       "OSTEO_AUTH_OIDC_CLIENT_ID (docs/service.md)")
    from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    oauth.register("hospital", client_id=client_id, client_secret=client_secret or None,
                   server_metadata_url=issuer.rstrip("/") + "/.well-known/openid-configuration",
                   client_kwargs={"scope": "openid profile", "code_challenge_method": "S256"})
    return oauth.create_client("hospital")


async def begin(client: Any, request, redirect_uri: str):
    """The redirect to the provider's authorization endpoint (state, nonce, PKCE challenge)."""
    return await client.authorize_redirect(request, redirect_uri)


async def finish(client: Any, request, groups_claim: str, mapping: dict[str, str]) -> Principal | None:
    """The person of the provider's answer, or None when it is an error, forged, replayed or unverifiable."""
    from authlib.integrations.base_client.errors import OAuthError
    from joserfc.errors import JoseError

    try:
        token = await client.authorize_access_token(request)
    except (OAuthError, JoseError, KeyError, ValueError):
        return None
    claims = token.get("userinfo")  # set only when the ID token was checked against the nonce
    if not claims:
        return None
    name = next((str(claims[c]) for c in NAME_CLAIMS if claims.get(c)), None)
    if not name:
        return None
    groups = claims.get(groups_claim) or []
    groups = [groups] if isinstance(groups, str) else [str(g) for g in groups]
    return Principal(name[:128], roles_of_groups(groups, mapping), "oidc")
