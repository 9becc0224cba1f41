"""`osteo db upgrade | current | history | check`: the database's schema revisions (db/migrate.py).

An upgrade holds the refresh lock, so that a nightly refresh cannot start in the middle of one, and on
SQLite takes a copy of the file first (its path is printed). `--sql` prints the DDL instead, for a DBA
to apply (how Oracle sites change a schema). docs/production.md has the procedure.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from osteo.errors import UserError
from osteo.settings import get_settings, session_factory
from osteo_cli.output import emit

DIALECTS = ("oracle", "postgresql")  # a SQLite file has no DBA: `osteo db upgrade` upgrades it
OFFLINE_URLS = {"oracle": "oracle+oracledb://", "postgresql": "postgresql+psycopg://"}


def engine():
    return session_factory(get_settings()).kw["bind"]


def outdated(exc: Exception) -> UserError:
    return UserError("database_outdated", str(exc))


def cmd_upgrade(args: argparse.Namespace) -> int:
    if (args.dialect or args.start) and not args.sql:
        raise UserError("bad_option", "--dialect and --from describe the DDL of --sql; give --sql too")
    if args.sql:
        return print_sql(args)
    from db.engine import SchemaOutdated
    from db.migrate import MigrationRefused, schema_state, upgrade
    from osteo.ingest.lock import RefreshAlreadyRunning, refresh_lock
    from osteo_mlflow.store import TrackingStoreUpgradeFailed, upgrade_tracking_store

    settings = get_settings()
    eng = engine()
    try:
        # an empty database has no refresh to keep out (and on Oracle no lock row yet)
        if schema_state(eng).state == "empty":
            result, tracking = upgrade(eng), upgrade_tracking_store(settings.resolved_tracking_uri())
        else:
            with refresh_lock(settings):
                result, tracking = upgrade(eng), upgrade_tracking_store(settings.resolved_tracking_uri())
    except RefreshAlreadyRunning as exc:
        raise UserError("refresh_running", f"{exc} The upgrade waits for it: nothing was changed") from None
    except SchemaOutdated as exc:
        raise outdated(exc) from None
    except MigrationRefused as exc:
        raise UserError("upgrade_refused", str(exc)) from None
    except TrackingStoreUpgradeFailed as exc:  # osteo's own schema is upgraded by then; MLflow's is as it was
        raise UserError("mlflow_upgrade_failed", f"osteo's schema is upgraded, MLflow's store is not: {exc}") \
            from None
    emit(args, {"ok": True, **result.to_dict(), "mlflow": tracking},
         upgrade_summary(result) + "\n" + tracking_summary(tracking))
    return 0


def tracking_summary(tracking: dict) -> str:
    before = tracking["before"]
    if tracking["upgraded"]:
        copy = f" (copy before it: {tracking['backup']})" if tracking["backup"] else ""
        return (f"MLflow's tracking store upgraded {before['current']} -> {tracking['after']} by `mlflow db upgrade`"
                f"{copy}")
    return f"MLflow's tracking store {before['uri']}: {TRACKING_WORDS[before['state']]}"


TRACKING_WORDS = {"not_sql": "not a SQL database here: the tracking server's operator upgrades it",
                  "empty": "not made yet: MLflow makes it on first use", "current": "MLflow's newest schema",
                  "behind": "behind the installed MLflow: `osteo db upgrade` runs `mlflow db upgrade` on it"}


def upgrade_summary(result) -> str:
    before = result.before
    if not result.applied and not result.stamped:
        return f"schema revision {result.after}: already the newest this osteo knows ({before.url})"
    lines = []
    if result.backup:
        lines.append(f"copy of the database before the upgrade: {result.backup}")
    if result.stamped:
        lines.append(f"made before schema migrations: found to be revision {result.stamped}, recorded")
    start = result.stamped or before.current or "empty"
    applied = ", ".join(result.applied) or "none"
    lines.append(f"schema upgraded {start} -> {result.after} (revisions {applied}) in {before.url}")
    return "\n".join(lines)


def print_sql(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from db.migrate import head, known, offline_sql

    if args.start and not known(args.start):
        raise UserError("bad_option", f"--from {args.start}: no such revision (see `osteo db history`)")
    url = OFFLINE_URLS[args.dialect] if args.dialect else get_settings().resolved_database_url()
    dialect = make_url(url).get_backend_name()
    if dialect not in DIALECTS:
        raise UserError("bad_option", f"--sql prints the DDL for a DBA's database ({', '.join(DIALECTS)}); the "
                        f"configured one is {dialect}: run `osteo db upgrade`, or give --dialect")
    sql = offline_sql(url, args.start)
    if getattr(args, "json", False):
        emit(args, {"ok": True, "dialect": dialect, "from": args.start, "to": head(), "sql": sql}, "")
    else:
        print(sql, end="")
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    from db.migrate import schema_state
    from osteo_mlflow.store import tracking_store_state

    state = schema_state(engine())
    tracking = tracking_store_state(get_settings().resolved_tracking_uri())
    words = {"empty": "no tables yet (the first command that opens it makes them)",
             "current": "the newest this osteo knows",
             "behind": "behind this osteo: run `osteo db upgrade`",
             "unversioned": "made before schema migrations: run `osteo db upgrade`",
             "ahead": "newer than this osteo knows: run a newer osteo"}
    emit(args, {"ok": True, **state.to_dict(), "mlflow": tracking.to_dict()},
         f"schema revision {state.current or '-'} (this osteo: {state.head}): {words[state.state]} ({state.url})\n"
         f"MLflow's tracking store: {tracking.current or '-'}, {TRACKING_WORDS[tracking.state]} ({tracking.uri})")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from db.migrate import history, schema_state

    current = schema_state(engine()).current
    revisions = [{**r, "current": r["revision"] == current} for r in history()]
    lines = [f"{'*' if r['current'] else ' '} {r['revision']}  {r['doc']}" for r in revisions]
    emit(args, {"ok": True, "current": current, "revisions": revisions}, "\n".join(lines))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """The models and the migrations agree: the database at head compared with the models (exit 1 on drift)."""
    from db.engine import SchemaOutdated, create_schema
    from db.migrate import drift, head

    eng = engine()
    try:
        create_schema(eng)  # an empty database is made through the migrations; one behind is refused
    except SchemaOutdated as exc:
        raise outdated(exc) from None
    found = drift(eng)
    human = (f"schema revision {head()}: the models and the migrations agree" if not found else
             f"the models and the migrations differ ({len(found)}): make a revision for each\n" + "\n".join(found))
    emit(args, {"ok": not found, "head": head(), "drift": found}, human)
    return 1 if found else 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("db", None, "the database's schema: upgrade it, and say which revision it is at")
    sub = p.add_subparsers(dest="db_command", required=True, metavar="{upgrade,current,history,check}")

    def command(name: str, func, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_)
        # --json after the subcommand too; SUPPRESS keeps `osteo db --json current` working
        c.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
        c.set_defaults(func=func)
        return c

    c = command("upgrade", cmd_upgrade, "upgrade the database to this osteo's schema (a SQLite file is copied "
                "first; the refresh lock is held throughout)")
    c.add_argument("--sql", action="store_true",
                   help="print the DDL instead of running it, for a DBA to apply (Oracle); nothing is connected to")
    c.add_argument("--dialect", choices=DIALECTS, help="with --sql: the database's dialect (default: the "
                   "configured database's)")
    c.add_argument("--from", dest="start", metavar="REV",
                   help="with --sql: the revision the database is at (default: an empty schema)")
    command("current", cmd_current, "the database's schema revision, and whether it is this osteo's")
    command("history", cmd_history, "every schema revision, oldest first; * marks the database's")
    command("check", cmd_check, "the models and the migrations agree (Alembic's compare); exit 1 when they differ")
