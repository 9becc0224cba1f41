"""CSRF for the page's forms and the security headers of every response.

CSRF: a signed double-submit token. The page sets a random nonce, signed with the service's secret,
in a SameSite=Strict cookie and in the form; a POST must bring both, equal, with a valid signature.
The secret is the setting OSTEO_SERVE_SECRET or a key generated once under var/, so that every worker
process (and a restart) accepts the forms of the others.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

CSRF_COOKIE = "osteo_csrf"
CSRF_FIELD = "csrf_token"

# the page loads nothing from elsewhere; images are data: URLs made by the service
CSP = ("default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
# FastAPI's /docs page loads Swagger UI from its CDN: that page alone may
DOCS_CSP = ("default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
            "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; style-src 'self' https://cdn.jsdelivr.net; "
            "frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-store",  # results are about a person: no shared or back-button caches
}


def service_secret(configured: str, var_dir: Path) -> bytes:
    if configured:
        return configured.encode()
    path = var_dir / "serve-secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        tmp.replace(path)  # two workers starting together write the same kind of key; one wins
    return path.read_text().strip().encode()


def new_token(secret: bytes) -> str:
    nonce = secrets.token_urlsafe(24)
    return f"{nonce}.{_sign(secret, nonce)}"


def valid_token(secret: bytes, cookie: str | None, field: str | None) -> bool:
    if not cookie or not field or not hmac.compare_digest(cookie, field):
        return False
    nonce, _, signature = field.partition(".")
    return bool(nonce) and hmac.compare_digest(signature, _sign(secret, nonce))


def _sign(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()


def security_headers(path: str) -> dict[str, str]:
    csp = DOCS_CSP if path.startswith(("/docs", "/redoc")) else CSP
    return {**HEADERS, "Content-Security-Policy": csp}


class SecurityHeaders:
    """Pure ASGI middleware adding the headers to every response (Starlette's BaseHTTPMiddleware costs
    a task and a stream copy per request: about half a millisecond of every prediction)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in security_headers(scope["path"]).items()]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
