"""Per-process session factories, one per database URL (tasks may run in other processes)."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.orm import Session, sessionmaker

from db.engine import create_schema, make_engine, make_session_factory


@lru_cache(maxsize=4)
def _factory(url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(url))


def session_factory(url: str, *, create: bool = False) -> sessionmaker[Session]:
    """The process's session factory for `url`; `create=True` makes an empty database through the
    migrations and refuses one not at head (db.migrate.ensure_schema)."""
    factory = _factory(url)
    if create:
        create_schema(factory.kw["bind"])
    return factory
