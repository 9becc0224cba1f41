"""The refresh lock: one refresh at a time per database, however many worker machines run the nightly flow
(plain functions, no Prefect; nothing here runs at import time).

- PostgreSQL: `pg_try_advisory_lock(key)` taken on a dedicated connection (NullPool: closing it
  ends the session) and held for the whole refresh. Session-level: the server drops it when the
  session ends, so a killed worker or a dropped connection never leaves a stale lock. The key is
  derived from the schema, as Oracle's lock row lives in the schema. Needs a direct connection or
  session pooling (a transaction-pooling bouncer would hand the lock to another client).
- Oracle (and any other server database): the `refresh_lock` row (db.models.RefreshLock) taken
  with SELECT ... FOR UPDATE NOWAIT in a transaction left open for the whole refresh, rolled back
  at the end; the server's cleanup of a dead session rolls it back too.
- SQLite: an exclusive, non-blocking `flock` on `<var_dir>/refresh.lock` holding the owner's PID;
  the kernel drops it when the owner dies (kill -9 included). SQLite is one machine's database.
A second refresh is refused at once (RefreshAlreadyRunning), never queued. A holder whose lock
connection died has lost the lock (another refresh may take it): `assert_still_held` between the
refresh's stages stops it with RefreshLockLost before it writes more. `failure_reason` is the one
line a failed refresh records (the driver's message trimmed as the lock's errors are).
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from osteo.errors import UserError
from osteo.settings import Settings, get_settings

LOCK_NAME = "refresh"  # the lock row's name (Oracle) and the seed of the advisory key (PostgreSQL)
REFUSED = "this one was refused so that records are never ingested twice at once. Wait for it to finish"


class RefreshAlreadyRunning(RuntimeError):
    """Another refresh holds the lock (this machine's lock file, or the database's lock)."""


class RefreshLockLost(UserError):
    """The refresh's lock connection died mid-run: another refresh may hold the lock now."""

    def __init__(self, why: str) -> None:
        super().__init__("refresh_lock_lost", f"the refresh lost its database lock ({why}); it stopped so that two "
                                              "refreshes never write at once. What it committed is kept: run the "
                                              "refresh again")


def lock_path(settings: Settings) -> Path:
    return Path(settings.var_dir) / "refresh.lock"


def holder_label() -> str:
    return f"osteo refresh: pid {os.getpid()} on {socket.gethostname()}"


@contextmanager
def refresh_lock(settings: Settings | None = None) -> Iterator[Any]:
    """Hold the refresh lock for the block, or raise RefreshAlreadyRunning at once (never wait).

    Yields the lock file's Path on SQLite, a DatabaseLock on a server database; pass either to
    `assert_still_held` between stages.
    """
    from sqlalchemy.engine import make_url

    settings = settings or get_settings()
    url = settings.resolved_database_url()
    if (url, str(lock_path(settings))) in _CALLER_HOLDS:  # taken by this process before the flow started
        yield _CALLER_HOLDS[url, str(lock_path(settings))]
        return
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        lock = file_lock(lock_path(settings))
    elif backend == "postgresql":
        lock = advisory_lock(url)
    else:
        lock = row_lock(url)
    with lock as held:
        yield held


# locks `hold_refresh_lock` took for a flow this process runs, by (database URL, lock file)
_CALLER_HOLDS: dict[tuple[str, str], Any] = {}


@contextmanager
def hold_refresh_lock(settings: Settings | None = None) -> Iterator[Any]:
    """Take the refresh lock before a flow starts, so that a refusal is one line and no flow run's traceback
    (`osteo refresh`); the flow's own `refresh_lock` in this process then uses this one instead of refusing."""
    settings = settings or get_settings()
    key = (settings.resolved_database_url(), str(lock_path(settings)))
    with refresh_lock(settings) as held:
        _CALLER_HOLDS[key] = held
        try:
            yield held
        finally:
            _CALLER_HOLDS.pop(key, None)


def assert_still_held(held: Any) -> None:
    """Raise RefreshLockLost when a database lock's connection died (a file lock cannot be lost)."""
    if isinstance(held, DatabaseLock):
        held.check()


@contextmanager
def file_lock(path: Path) -> Iterator[Path]:
    """The SQLite variant: an exclusive, non-blocking flock on `path` that names its holder."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise RefreshAlreadyRunning(f"another refresh is running ({holder}); {REFUSED} (lock file {path}).") \
                from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class DatabaseLock:
    """A held database lock: the dedicated connection that holds it, and how to tell it still does."""

    def __init__(self, conn, kind: str, where: str, probe) -> None:
        self.conn, self.kind, self.where, self._probe = conn, kind, where, probe

    def check(self) -> None:
        from sqlalchemy.exc import DBAPIError

        try:
            held = bool(self.conn.execute(self._probe[0], self._probe[1]).scalar())
        except DBAPIError as exc:
            raise RefreshLockLost(f"its connection dropped: {_first_line(exc)}") from None
        if not held:
            raise RefreshLockLost(f"{self.where} is no longer held by this refresh")

    def __repr__(self) -> str:
        return f"DatabaseLock({self.kind}: {self.where})"


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The driver's message, without SQLAlchemy's statement and parameters (they may hold data)."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0][:limit]


def failure_reason(exc: BaseException) -> str:
    """One plain line for a failed refresh's refresh_run row: a UserError's code and words, else the
    error's type and first line."""
    if isinstance(exc, UserError):
        return f"{exc.reason}: {exc.detail}"[:1000]
    return f"{type(exc).__name__}: {_first_line(exc, 1000)}"


def advisory_key(schema: str) -> int:
    """The bigint key of the refresh's advisory lock in `schema` (advisory locks are per database)."""
    return int.from_bytes(hashlib.sha256(f"osteo.{LOCK_NAME}:{schema}".encode()).digest()[:8], "big", signed=True)


def _lock_engine(url: str, **connect_args):
    """An engine without a pool: closing its connection ends the database session, and the lock with it."""
    from sqlalchemy.pool import NullPool

    from db.engine import make_engine

    return make_engine(url, poolclass=NullPool, connect_args=connect_args)


# pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32 bits), objsubid 1
_PG_LOCK_ROWS = ("FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                 "AND l.classid::bigint = :hi AND l.objid::bigint = :lo")


@contextmanager
def advisory_lock(url: str) -> Iterator[DatabaseLock]:
    """The PostgreSQL variant: pg_try_advisory_lock on a dedicated autocommit connection (idle
    between checks, never idle in a transaction), released by pg_advisory_unlock and the close."""
    from sqlalchemy import text

    engine = _lock_engine(url, application_name=holder_label()[:63])
    try:
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            # the server drops the session (and the lock) of a worker that vanished (powered off, cut off)
            # within about 2 minutes instead of the kernel's default of over 2 hours
            for setting, value in (("idle", 60), ("interval", 10), ("count", 6)):
                conn.execute(text(f"SET tcp_keepalives_{setting} = {value}"))
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            key = advisory_key(schema)
            parts = {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}
            where = f"PostgreSQL advisory lock {key} (schema {schema})"
            if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                holder = conn.execute(text(
                    "SELECT coalesce(nullif(a.application_name, ''), 'database session ' || a.pid) "
                    "|| coalesce(' from ' || host(a.client_addr), '') || ', since ' "
                    "|| to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS') "
                    f"FROM pg_stat_activity a WHERE a.pid IN (SELECT l.pid {_PG_LOCK_ROWS})"), parts).scalar()
                raise RefreshAlreadyRunning(f"another refresh is running ({holder or 'unknown holder'}); "
                                            f"{REFUSED} ({where}).")
            probe = (text(f"SELECT count(*) {_PG_LOCK_ROWS} AND l.pid = pg_backend_pid()"), parts)
            try:
                yield DatabaseLock(conn, "advisory", where, probe)
            finally:
                _quietly(conn.execute, text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            _quietly(conn.close)
    finally:
        engine.dispose()


def lock_row_select(name: str = LOCK_NAME):
    """SELECT name FROM refresh_lock WHERE name = :name FOR UPDATE NOWAIT (compiled per dialect)."""
    from sqlalchemy import select

    from db.models import RefreshLock

    return select(RefreshLock.name).where(RefreshLock.name == name).with_for_update(nowait=True)


def lock_row_insert(name: str = LOCK_NAME):
    from sqlalchemy import insert

    from db.models import RefreshLock

    return insert(RefreshLock).values(name=name)


def lock_busy(exc: BaseException) -> bool:
    """Whether a database error says the lock row is held by another session (NOWAIT refused)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) == "55P03":  # PostgreSQL lock_not_available
        return True
    first = orig.args[0] if orig is not None and orig.args else None
    return getattr(first, "code", None) == 54 or "ORA-00054" in str(orig)  # Oracle: resource busy, NOWAIT


def _ensure_lock_row(engine, name: str) -> None:
    """The lock table and its row exist (created with the schema; made here when the refresh runs first)."""
    from sqlalchemy import inspect, select
    from sqlalchemy.exc import DBAPIError, IntegrityError

    from db.models import RefreshLock

    try:
        RefreshLock.metadata.tables[RefreshLock.__tablename__].create(engine, checkfirst=True)
    except DBAPIError:  # another worker created it at the same moment
        if not inspect(engine).has_table(RefreshLock.__tablename__):
            raise
    try:
        with engine.begin() as conn:
            if conn.execute(select(RefreshLock.id).where(RefreshLock.name == name)).first() is None:
                conn.execute(lock_row_insert(name))
    except IntegrityError:  # inserted by another worker at the same moment: it exists, which is all we need
        pass


@contextmanager
def row_lock(url: str, name: str = LOCK_NAME) -> Iterator[DatabaseLock]:
    """The Oracle variant: the lock row held by SELECT ... FOR UPDATE NOWAIT in an open transaction."""
    from sqlalchemy import select
    from sqlalchemy.exc import DBAPIError

    from db.models import RefreshLock

    engine = _lock_engine(url)
    try:
        _ensure_lock_row(engine, name)
        conn = engine.connect()
        try:
            where = f"lock row {name!r} of table {RefreshLock.__tablename__}"
            try:
                conn.execute(lock_row_select(name)).one()
            except DBAPIError as exc:
                if not lock_busy(exc):
                    raise
                # the holder's identity is not readable from here (its row lock is uncommitted)
                raise RefreshAlreadyRunning(f"another refresh is running (it holds the {where}); {REFUSED}.") \
                    from None
            probe = (select(RefreshLock.id).where(RefreshLock.name == name), {})
            try:
                yield DatabaseLock(conn, "row", where, probe)
            finally:
                _quietly(conn.rollback)  # ends the transaction: the row lock goes with it
        finally:
            _quietly(conn.close)
    finally:
        engine.dispose()


def _quietly(fn, *args) -> None:
    """Release steps on a connection that may be dead: its lock is already gone with its session."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - nothing left to release on a dead connection
        pass
