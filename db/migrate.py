"""Schema migrations: Alembic's revisions in db/migrations/versions/, configured here (no alembic.ini).

Every database is made by the migrations, never create_all: an empty one is upgraded to head when
first opened (`ensure_schema`), so the demo, the tests and production take one path. One behind the
code is refused in one line naming `osteo db upgrade`; one ahead names that it needs a newer osteo.
A database made by create_all before the migrations (no version table) is stamped with the revision
its tables match (`legacy_revision`) by `upgrade`, then upgraded. docs/production.md has the procedure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Connection, Engine, inspect, text
from sqlalchemy.engine import make_url

from db.engine import SchemaOutdated
from db.models import Base

SCRIPTS = Path(__file__).resolve().parent / "migrations"
# not Alembic's default name: MLflow's tracking store may share the database and keeps its own alembic_version
VERSION_TABLE = "osteo_alembic_version"
FIRST = "0001"  # the schema of commit 82910aa, the release before migrations
SYNTHETIC = "0002"  # dicom_image.synthetic, the one change made before migrations existed
UPGRADE_HINT = "run `osteo db upgrade` (it copies a SQLite file first; docs/production.md)"


class MigrationRefused(RuntimeError):
    """A revision found rows it cannot carry over and changed nothing (the message names them)."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: `state` is empty, unversioned (made before migrations), behind, current or ahead."""

    url: str
    current: str | None
    head: str
    state: str

    def refusal(self) -> str:
        where = f"the database {self.url}"
        if self.state == "unversioned":
            return f"{where} was made by an osteo before schema migrations (no {VERSION_TABLE} table); {UPGRADE_HINT}"
        if self.state == "behind":
            return f"{where} is at schema revision {self.current}, behind this osteo's {self.head}; {UPGRADE_HINT}"
        return (f"{where} is at schema revision {self.current}, which this osteo (schema {self.head}) does not know: "
                "a newer osteo upgraded it; run that release or a newer one")

    def to_dict(self) -> dict:
        return {"url": self.url, "current": self.current, "head": self.head, "state": self.state}


@dataclass(frozen=True)
class UpgradeResult:
    before: SchemaState
    after: str | None
    applied: tuple[str, ...]
    backup: Path | None = None  # the SQLite copy taken first
    stamped: str | None = None  # the revision an unversioned database was found to be at
    sql: str = field(default="", repr=False)

    def to_dict(self) -> dict:
        return {"before": self.before.to_dict(), "after": self.after, "applied": list(self.applied),
                "backup": str(self.backup) if self.backup else None, "stamped": self.stamped}


def include_name(name: str | None, type_: str, _parent) -> bool:
    """Only osteo's tables are compared: MLflow's or a DBA's tables may share the database."""
    return type_ != "table" or name in Base.metadata.tables


def config(url: str | None = None, connection: Connection | None = None, out: io.StringIO | None = None) -> Config:
    cfg = Config(output_buffer=out)
    cfg.set_main_option("script_location", str(SCRIPTS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolates %
    cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    current = scripts().get_current_head()
    if current is None:  # the package ships its revisions: none found is a broken install
        raise RuntimeError("no schema revisions found in db/migrations/versions")
    return current


def known(revision: str) -> bool:
    return any(s.revision == revision for s in scripts().walk_revisions())


def shown_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def schema_state(engine: Engine) -> SchemaState:
    with engine.connect() as conn:
        return state_of(conn, shown_url(engine))


def state_of(conn: Connection, url: str) -> SchemaState:
    tables = set(inspect(conn).get_table_names())
    current = None
    if VERSION_TABLE in tables:
        current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    top = head()
    if current is None:
        state = "unversioned" if tables & set(Base.metadata.tables) else "empty"
    elif current == top:
        state = "current"
    else:
        state = "behind" if known(current) else "ahead"
    return SchemaState(url, current, top, state)


def ensure_schema(engine: Engine) -> None:
    """Every entry point's check: an empty database is upgraded to head; any other not at head is refused."""
    state = schema_state(engine)
    if state.state == "current":
        return
    if state.state != "empty":
        raise SchemaOutdated(state.refusal())
    with migration_lock(engine):  # two processes opening one empty database: the second waits, then finds it made
        state = schema_state(engine)
        if state.state == "empty":
            run_upgrade(engine, "head")
        elif state.state != "current":
            raise SchemaOutdated(state.refusal())


def upgrade(engine: Engine, target: str = "head", *, backup: bool = True) -> UpgradeResult:
    """Upgrade to `target` (an unversioned database is stamped first); on a SQLite file, a copy is taken
    beside it before any change. Refuses a database ahead of the code. The caller holds the refresh lock."""
    with migration_lock(engine):
        before = schema_state(engine)
        if before.state == "ahead":
            raise SchemaOutdated(before.refusal())
        stamped = legacy_revision(engine) if before.state == "unversioned" else None
        start = stamped or before.current
        pending = tuple(pending_revisions(start, target))
        copy = None
        if backup and pending and before.state != "empty":
            copy = sqlite_backup(engine, start or "empty")
        if stamped:
            with engine.connect() as conn:
                command.stamp(config(connection=conn), stamped)
        if pending:
            run_upgrade(engine, target)
        return UpgradeResult(before, schema_state(engine).current, pending, copy, stamped)


def downgrade(engine: Engine, target: str) -> None:
    with migration_lock(engine), sqlite_foreign_keys_off(engine) as conn:
        command.downgrade(config(connection=conn), target)


def run_upgrade(engine: Engine, target: str) -> None:
    with sqlite_foreign_keys_off(engine) as conn:
        command.upgrade(config(connection=conn), target)


def pending_revisions(start: str | None, target: str) -> list[str]:
    """The revisions an upgrade from `start` (None: empty) to `target` runs, oldest first."""
    upper = scripts().get_revision(target).revision
    if start == upper:
        return []
    revs = scripts().iterate_revisions(upper, start or "base")
    return [r.revision for r in revs][::-1]


def legacy_revision(engine: Engine) -> str:
    """The revision of a database made by create_all before the migrations: its tables hold every column of
    revision 0001 (commit 82910aa), and dicom_image.synthetic when a later release (a9b1351) made it."""
    inspector = inspect(engine)
    names = set(inspector.get_table_names())
    columns = {t: {c["name"] for c in inspector.get_columns(t)} for t in Base.metadata.tables if t in names}
    expected = first_release_columns()
    missing = {t: sorted(cols - columns.get(t, set())) for t, cols in expected.items()}
    missing = {t: cols for t, cols in missing.items() if cols}
    if missing:
        raise SchemaOutdated(f"the database {shown_url(engine)} was made by an osteo older than 82910aa, the first "
                             f"release migrations know (missing: {missing}); it cannot be upgraded: keep it for the "
                             "record and start a new database (OSTEO_HOME or OSTEO_DATABASE_URL)")
    return SYNTHETIC if "synthetic" in columns["dicom_image"] else FIRST


@lru_cache(maxsize=1)
def first_release_columns() -> dict[str, set[str]]:
    """The tables and columns of revision 0001, read from an in-memory SQLite that revision makes: the later
    revisions' tables and columns (0004's sign-in tables, ...) were never in a database made before migrations."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    engine = create_engine("sqlite://", poolclass=StaticPool)  # one connection: the in-memory database lives on
    run_upgrade(engine, FIRST)
    inspector = inspect(engine)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names() if t != VERSION_TABLE}


def sqlite_backup(engine: Engine, revision: str) -> Path | None:
    """A consistent copy of a SQLite file (VACUUM INTO) beside it, named by its revision and the time."""
    url = make_url(str(engine.url))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    source = Path(url.database)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    name = f"{source.stem}.before-{revision}-{stamp}"
    target = source.with_name(name + source.suffix)
    n = 1
    while target.exists():  # a second upgrade within the second never overwrites (VACUUM INTO refuses to)
        n += 1
        target = source.with_name(f"{name}-{n}{source.suffix}")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM INTO ?", (str(target),))
    return target


@contextmanager
def sqlite_foreign_keys_off(engine: Engine) -> Iterator[Connection]:
    """A connection for Alembic. On SQLite, foreign keys are off while it runs (a batch copy drops and renames
    tables that others refer to; Alembic's advice) and checked, then on again for the pooled connection."""
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            yield conn
            return
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()  # Alembic begins its own transaction per revision on an idle connection
        try:
            yield conn
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise SchemaOutdated(f"a migration left {len(broken)} rows whose foreign key has no row "
                                     f"(first: {broken[0]}); restore the copy taken before it")
        finally:
            conn.rollback()
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()


MIGRATION_LOCK_KEY = int.from_bytes(hashlib.sha256(b"osteo schema migration").digest()[:8], "big", signed=True)


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """One migration at a time per database; the others wait (a first open is seconds, an upgrade is rare).

    PostgreSQL: a session advisory lock; SQLite: a flock on a file beside the database. Oracle: none (its
    schema changes are applied by a DBA from `osteo db upgrade --sql`)."""
    url = make_url(str(engine.url))
    backend = url.get_backend_name()
    if backend == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
    elif backend == "sqlite" and url.database and url.database != ":memory:":
        import fcntl

        with open(f"{url.database}.migrate.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield


def offline_sql(url: str, start: str | None = None, target: str = "head") -> str:
    """The DDL of the revisions after `start` (None: from an empty schema) up to `target`, for `url`'s
    dialect, as a DBA applies it (Oracle); nothing is connected to."""
    out = io.StringIO()
    command.upgrade(config(url, out=out), f"{start}:{target}" if start else target, sql=True)
    return out.getvalue()


def history() -> list[dict]:
    """Every revision, oldest first: its id, the one before it and its first line."""
    revs = list(scripts().walk_revisions())[::-1]
    return [{"revision": r.revision, "down_revision": r.down_revision,
             "doc": (r.doc or "").strip().splitlines()[0] if r.doc else ""} for r in revs]


def drift(engine: Engine) -> list[str]:
    """What differs between the models and a database at head (Alembic's compare, and the CHECK constraints
    it does not compare: by name and the values they allow); empty when they agree."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True,
                                                     "include_name": include_name})
        found = [repr(d) for d in compare_metadata(ctx, Base.metadata)]
        inspector = inspect(conn)
        for table in Base.metadata.sorted_tables:
            ours = {str(c.name): quoted(str(c.sqltext)) for c in table.constraints if isinstance(c, CheckConstraint)}
            theirs = {str(c["name"]): quoted(c["sqltext"]) for c in inspector.get_check_constraints(table.name)}
            found += [f"check {table.name}.{name}: models {ours.get(name)}, database {theirs.get(name)}"
                      for name in sorted(set(ours) | set(theirs)) if ours.get(name) != theirs.get(name)]
        return found


def quoted(sqltext: str) -> list[str]:
    """The values a CHECK's text allows, however the database spelled it back (PostgreSQL: = ANY (ARRAY[...]))."""
    return sorted(re.findall(r"'([^']*)'", sqltext))
