"""Who may use the screening service (issue 26, migration 0004): the accounts of OSTEO_AUTH_MODE=users,
the API's bearer tokens and the signed-in sessions. Secrets are never stored: an argon2 hash of a
password, a SHA-256 of a token's or a session cookie's 256 random bits (a hash of so much randomness
cannot be searched back, and a look-up by it needs no slow hash per request).

On db.models' Base (db.models imports this module last, so the metadata always holds these tables)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, Identity, String, false
from sqlalchemy.orm import Mapped, mapped_column

from db.models import SHA256, Base, _now
from db.values import Role, SessionKind, one_of

NAME = 128  # a person's or a token's name; never a patient's


class Account(Base):
    """A person who signs in with a password (OSTEO_AUTH_MODE=users): one role each."""

    __tablename__ = "account"
    __table_args__ = (one_of("account", "role", Role),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, with its parameters and salt
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    last_signin_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class ApiToken(Base):
    """A machine's bearer token for the API: one role, optionally an expiry, revocable, its last use kept."""

    __tablename__ = "api_token"
    __table_args__ = (one_of("api_token", "role", Role),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME), unique=True)  # kept after revocation: the audit names it
    role: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(SHA256), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class AuthSession(Base):
    """A signed-in browser: the cookie holds a random id, this row its SHA-256. Sign-out, a disabled
    account or a new password ends the row, so a copied cookie stops working at once."""

    __tablename__ = "auth_session"
    __table_args__ = (one_of("auth_session", "kind", SessionKind),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    id_sha256: Mapped[str] = mapped_column(String(SHA256), unique=True)
    user_name: Mapped[str] = mapped_column(String(NAME), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # password | oidc
    roles: Mapped[str] = mapped_column(String(80))  # comma-separated, fixed at sign-in
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
