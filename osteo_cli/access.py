"""`osteo users add|list|disable|reset` and `osteo tokens create|list|revoke`: who may use the screening
service (OSTEO_AUTH_MODE, docs/service.md). A password is read from stdin (--password-stdin) or asked twice at
the terminal, never taken as an argument (it would sit in the shell's history and the process list); a token's
secret is printed once, at its creation, and only its SHA-256 is kept."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from osteo.errors import UserError
from osteo.settings import get_settings, session_factory
from osteo_cli.output import emit


def _in_db(fn: Callable[..., Any], *args: Any) -> Any:
    with session_factory(get_settings(), create=True)() as session, session.begin():
        return fn(session, *args)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise UserError("password_mismatch", "the two passwords differ; nothing was changed")
    else:
        raise UserError("bad_option", "no terminal to ask the password at: pass it on stdin with --password-stdin")
    if not password:
        raise UserError("weak_password", "the password is empty")
    return password


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def cmd_users(args: argparse.Namespace) -> int:
    from osteo_service.auth import accounts

    name = getattr(args, "name", None)
    if args.users_command == "list":
        rows = _in_db(accounts.list_users)
        lines = [f"{r['name']:24} {r['role']:10} {'disabled' if r['disabled'] else 'enabled':8} last sign-in "
                 f"{_when(r['last_signin_at'])}" for r in rows]
        emit(args, {"ok": True, "users": rows, "count": len(rows)}, "\n".join(lines) or "no users yet")
        return 0
    if args.users_command == "add":
        password = _password(args)
        _in_db(lambda s: accounts.add_user(s, args.name, args.role, password) and None)
        emit(args, {"ok": True, "user": name, "role": args.role}, f"user {name} added with the role {args.role}")
    elif args.users_command == "disable":
        ended = _in_db(accounts.disable_user, name)
        emit(args, {"ok": True, "user": name, "disabled": True, "sessions_ended": ended},
             f"user {name} disabled; {ended} session(s) ended")
    else:
        password = _password(args)
        ended = _in_db(accounts.reset_password, name, password)
        emit(args, {"ok": True, "user": name, "disabled": False, "sessions_ended": ended},
             f"user {name}: new password set (enabled); {ended} session(s) ended")
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    from osteo_service.auth import tokens

    if args.tokens_command == "list":
        rows = _in_db(tokens.list_tokens)
        lines = [f"{r['name']:24} {r['role']:10} {r['state']:8} expires {_when(r['expires_at'])}  last used "
                 f"{_when(r['last_used_at'])}" for r in rows]
        emit(args, {"ok": True, "tokens": rows, "count": len(rows)}, "\n".join(lines) or "no tokens yet")
    elif args.tokens_command == "create":
        def create(session):
            token, secret = tokens.create_token(session, args.name, args.role, args.expires)
            return secret, token.expires_at

        secret, expires = _in_db(create)
        emit(args, {"ok": True, "name": args.name, "role": args.role, "expires_at": expires, "token": secret},
             f"{secret}\n(token {args.name}, role {args.role}, expires {_when(expires)}: shown once, keep it in the "
             "caller's secret store; send it as `Authorization: Bearer <token>`)")
    else:
        _in_db(lambda s: tokens.revoke_token(s, args.name) and None)
        emit(args, {"ok": True, "name": args.name, "revoked": True}, f"token {args.name} revoked")
    return 0


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("--expires takes a number of days above 0")
    return value


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    from db.values import ROLES

    def children(parent: argparse.ArgumentParser, dest: str, names: str):
        sub = parent.add_subparsers(dest=dest, required=True, metavar="{" + names + "}")

        def child(name: str, help_: str) -> argparse.ArgumentParser:
            c = sub.add_parser(name, help=help_, description=help_)
            c.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
            return c
        return child

    child = children(add("users", cmd_users, "the service's accounts (OSTEO_AUTH_MODE=users)"), "users_command",
                     "add,list,disable,reset")
    c = child("add", "add an account with one role; the password from stdin or asked twice")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--role", required=True, choices=ROLES,
                   help="what the account may use: screening, referrals, audit or admin (required)")
    c.add_argument("--password-stdin", action="store_true", help="read the password from stdin (one line)")
    child("list", "the accounts, their roles, whether enabled, their last sign-in")
    c = child("disable", "disable an account and end its sessions")
    c.add_argument("name", metavar="NAME")
    c = child("reset", "set a new password (the account enabled again) and end its sessions")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--password-stdin", action="store_true", help="read the password from stdin (one line)")

    child = children(add("tokens", cmd_tokens, "bearer tokens for machines that call the API"), "tokens_command",
                     "create,list,revoke")
    c = child("create", "a new token with one role; its secret is printed once")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--role", required=True, choices=ROLES,
                   help="what the token may call: screening, referrals, audit or admin (required)")
    c.add_argument("--expires", type=_days, metavar="DAYS", help="days until it stops working (default: never)")
    child("list", "the tokens, their roles, state (active, expired, revoked) and last use")
    c = child("revoke", "revoke a token at once (its name stays, for the audit)")
    c.add_argument("name", metavar="NAME")
