"""Server-side sessions: the cookie holds 256 random bits, the auth_session row their SHA-256, the person's
name and roles. A session ends at sign-out, after the idle time-out, at the absolute time-out, or when its
account is disabled or given a new password; an ended row never comes back, so a copied cookie is dead."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from db.access import AuthSession
from osteo_service.auth.roles import Principal

SEEN_EVERY = dt.timedelta(seconds=30)  # last_seen_at is written at most this often (a write per request is waste)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Timeouts:
    idle: dt.timedelta
    absolute: dt.timedelta


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def open_session(session: Session, who: Principal) -> str:
    """A new session for `who`; returns the cookie's value (never stored)."""
    cookie = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(AuthSession(id_sha256=_digest(cookie), user_name=who.name, kind=who.via,
                            roles=",".join(sorted(who.roles)), created_at=now, last_seen_at=now))
    return cookie


def end_session(session: Session, cookie: str | None) -> bool:
    if not cookie:
        return False
    result = session.execute(update(AuthSession).where(AuthSession.id_sha256 == _digest(cookie),
                                                       AuthSession.ended_at.is_(None)).values(ended_at=utcnow()))
    return bool(cast(CursorResult, result).rowcount)  # an UPDATE's result has a row count


def end_sessions_of(session: Session, name: str) -> int:
    result = session.execute(update(AuthSession).where(AuthSession.user_name == name, AuthSession.ended_at.is_(None))
                             .values(ended_at=utcnow()))
    return cast(CursorResult, result).rowcount or 0


def principal_of_session(session: Session, cookie: str | None, timeouts: Timeouts) -> Principal | None:
    """The signed-in person of a live session, else None (a session found timed out is ended)."""
    if not cookie:
        return None
    row = session.scalar(select(AuthSession).where(AuthSession.id_sha256 == _digest(cookie)))
    if row is None or row.ended_at is not None:
        return None
    now = utcnow()
    if now - row.last_seen_at > timeouts.idle or now - row.created_at > timeouts.absolute:
        row.ended_at = now
        return None
    if now - row.last_seen_at >= SEEN_EVERY:
        row.last_seen_at = now
    return Principal(row.user_name, frozenset(r for r in row.roles.split(",") if r), row.kind)
