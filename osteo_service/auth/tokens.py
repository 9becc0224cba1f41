"""Bearer tokens for machines: `osteo_` + 256 random bits, shown once; the database keeps its SHA-256 (a hash
of so much randomness cannot be searched back, and a look-up by it costs no slow hash per request)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.access import ApiToken
from osteo.errors import UserError
from osteo_service.auth.roles import Principal
from osteo_service.auth.sessions import utcnow

PREFIX = "osteo_"
USE_EVERY = dt.timedelta(minutes=1)  # last_used_at is written at most this often per token


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, name: str, role: str, days: float | None) -> tuple[ApiToken, str]:
    """A new token and its secret (the only time the secret exists outside the caller's hands)."""
    from osteo_service.auth.accounts import check_name, check_role

    name, role = check_name(name), check_role(role)
    if session.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
        raise UserError("token_exists", f"a token named {name} exists (a revoked one keeps its name: the audit "
                                         "names it); choose another name")
    if days is not None and days <= 0:
        raise UserError("bad_option", "--expires takes a number of days above 0")
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, role=role, secret_sha256=digest(secret),
                     expires_at=utcnow() + dt.timedelta(days=days) if days is not None else None)
    session.add(token)
    return token, secret


def revoke_token(session: Session, name: str) -> ApiToken:
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None:
        raise UserError("no_such_token", f"no token named {name} (osteo tokens list)")
    token.revoked_at = token.revoked_at or utcnow()
    return token


def list_tokens(session: Session) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"name": t.name, "role": t.role, "created_at": t.created_at, "expires_at": t.expires_at,
             "revoked_at": t.revoked_at, "last_used_at": t.last_used_at, "state": state_of(t, now)}
            for t in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def state_of(token: ApiToken, now: dt.datetime) -> str:
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.expires_at is not None and token.expires_at <= now else "active"


def principal_of_token(session: Session, secret: str) -> Principal | None:
    """The token's machine when the secret is an active token's (its use noted), else None."""
    if not secret.startswith(PREFIX):
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.secret_sha256 == digest(secret)))
    now = utcnow()
    if token is None or state_of(token, now) != "active":
        return None
    if token.last_used_at is None or now - token.last_used_at >= USE_EVERY:
        token.last_used_at = now
    return Principal(token.name, frozenset({token.role}), "token")
