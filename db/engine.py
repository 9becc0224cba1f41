"""Engine and session creation; schema creation is explicit (nothing runs at import time)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db.models import Base


def make_engine(url: str, **kwargs) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


class SchemaOutdated(RuntimeError):
    """The database was created by an older version of the models (there are no migrations yet)."""


def create_schema(engine: Engine) -> None:
    """Create missing tables, and refuse a database whose existing tables lack columns of the models."""
    Base.metadata.create_all(engine)
    inspector = inspect(engine)
    missing = {t.name: sorted({c.name for c in t.columns} - {c["name"] for c in inspector.get_columns(t.name)})
               for t in Base.metadata.sorted_tables}
    missing = {t: cols for t, cols in missing.items() if cols}
    if missing:
        raise SchemaOutdated(f"the database {engine.url.render_as_string(hide_password=True)} was made by an older "
                             f"osteo (missing columns: {missing}); use a new database (OSTEO_HOME or "
                             "OSTEO_DATABASE_URL) or `make clean` for the local one")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)

