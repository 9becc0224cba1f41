"""Per-process database handles built from the settings (tasks may run in other processes)."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db import create_schema, make_engine, make_session_factory
from osteo.settings import get_settings


TRANSIENT = (OperationalError, DisconnectionError, TimeoutError, ConnectionError, BlockingIOError)


@lru_cache(maxsize=4)
def _factory(url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(url))


def session_factory() -> sessionmaker[Session]:
    return _factory(get_settings().resolved_database_url())


def ensure_schema() -> None:
    create_schema(session_factory().kw["bind"])


def transient_only(task, task_run, state) -> bool:
    """Retry a dropped connection or a briefly unreadable file, never bad input (that is quarantined)."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception:  # noqa: BLE001 - anything else is a bug or bad input: fail now
        return False
    return False


# Retries with backoff (2 s, 10 s, 30 s, each +-20 % jitter) on transient faults only.
RETRY = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_jitter_factor=0.2, retry_condition_fn=transient_only)
