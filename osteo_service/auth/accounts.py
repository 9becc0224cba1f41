"""The accounts of OSTEO_AUTH_MODE=users in osteo's database: add, list, disable, reset and check a
password. Disabling an account or setting its password ends its sessions (sessions.end_sessions_of)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.access import NAME, Account
from db.values import ROLES
from osteo.errors import UserError
from osteo_service.auth.passwords import hash_password, verify_password, weak
from osteo_service.auth.roles import Principal
from osteo_service.auth.sessions import end_sessions_of, utcnow


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME or any(c.isspace() or c in ",:" for c in name):
        raise UserError("bad_name", f"{name!r} is not a user or token name: 1 to {NAME} characters, no spaces, "
                                    "commas or colons")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError("bad_role", f"{role!r} is not a role: {', '.join(ROLES)}")
    return role


def _checked(password: str) -> str:
    why = weak(password)
    if why:
        raise UserError("weak_password", why)
    return hash_password(password)


def add_user(session: Session, name: str, role: str, password: str) -> Account:
    name, role = check_name(name), check_role(role)
    if session.scalar(select(Account).where(Account.name == name)) is not None:
        raise UserError("user_exists", f"a user named {name} exists already (osteo users reset {name} sets a new "
                                       "password)")
    account = Account(name=name, role=role, password_hash=_checked(password))
    session.add(account)
    return account


def _account(session: Session, name: str) -> Account:
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None:
        raise UserError("no_such_user", f"no user named {name} (osteo users list)")
    return account


def disable_user(session: Session, name: str) -> int:
    """Disable the account and end its sessions; the number of sessions ended."""
    _account(session, name).disabled = True
    return end_sessions_of(session, name)


def reset_password(session: Session, name: str, password: str) -> int:
    """A new password (and the account enabled again); its sessions end. The number of sessions ended."""
    account = _account(session, name)
    account.password_hash, account.disabled = _checked(password), False
    return end_sessions_of(session, name)


def list_users(session: Session) -> list[dict[str, Any]]:
    return [{"name": a.name, "role": a.role, "disabled": a.disabled, "created_at": a.created_at,
             "last_signin_at": a.last_signin_at} for a in session.scalars(select(Account).order_by(Account.name))]


def check_password(session: Session, name: str, password: str) -> Principal | None:
    """The person when the name and password match an enabled account (its last sign-in noted), else None."""
    account = session.scalar(select(Account).where(Account.name == name.strip()))
    ok = verify_password(account.password_hash if account else None, password)
    if not ok or account is None or account.disabled:
        return None
    if account.password_hash and _hasher_wants_new(account.password_hash):
        account.password_hash = hash_password(password)  # parameters raised since: re-hash while we hold it
    account.last_signin_at = utcnow()
    return Principal(account.name, frozenset({account.role}), "password")


def _hasher_wants_new(stored: str) -> bool:
    from osteo_service.auth.passwords import hasher

    return hasher().check_needs_rehash(stored)


def as_of(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None
