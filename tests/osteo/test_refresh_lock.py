"""One refresh at a time across worker machines: a database lock (PostgreSQL advisory lock, Oracle lock
row), refused at once with a clear message, released after the block, after an exception and when its
holder's connection dies. The Oracle statements are compiled (no Oracle server here); the lock-row code
itself also runs against PostgreSQL, which has the same SELECT ... FOR UPDATE NOWAIT."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import tree_digest

PG_URL = os.environ.get("OSTEO_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")  # as conftest.py

KEY = "refresh-lock-test-key-0123456789abcdef"
SKIP_TABLES = {"refresh_run", "refresh_lock"}  # one row per run / lock bookkeeping: not the refresh's data


# --- helpers shared with tests/flows/test_faults.py -----------------------------------------------

@contextmanager
def pg_schema(prefix: str = "lock"):
    """A fresh schema on the local PostgreSQL and the URL that works in it (dropped afterwards)."""
    from sqlalchemy import text

    from db import make_engine

    admin = make_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        admin.connect().close()
    except Exception as exc:  # noqa: BLE001 - the machine provides PostgreSQL: its absence fails, never skips
        pytest.fail(f"no PostgreSQL server answers at {PG_URL} ({type(exc).__name__})")
    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        from db.session import _factory

        _factory(url).kw["bind"].dispose()  # the refresh's pooled connections to the schema
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def terminate(pid: int) -> None:
    """pg_terminate_backend from another connection: what a network cut or a DBA's kill does."""
    from sqlalchemy import text

    from db import make_engine

    admin = make_engine(PG_URL)
    try:
        with admin.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    finally:
        admin.dispose()


def advisory_holders(url: str) -> list[int]:
    """Backend pids that hold the refresh's advisory lock of the URL's schema (seen from outside)."""
    from sqlalchemy import text

    from db import make_engine
    from osteo.ingest.lock import advisory_key

    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            key = advisory_key(conn.execute(text("SELECT current_schema()")).scalar())
            return list(conn.scalars(text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                "AND classid::bigint = :hi AND objid::bigint = :lo"),
                {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}))
    finally:
        eng.dispose()


VOLATILE_COLUMNS = {"mtime_ns"}


def db_state(url: str, home: Path) -> dict[str, list[tuple]]:
    """Every table's rows without ids, foreign keys and timestamps (they differ between equal runs; a
    file's mtime_ns too: a stamp read within 2 s of a write is not kept), the run's home written as
    <home>; sorted, duplicates kept (so they show). Any backend."""
    from sqlalchemy import DateTime, select

    from db import make_engine
    from db.models import Base

    eng = make_engine(url)
    out: dict[str, list[tuple]] = {}
    try:
        with eng.connect() as conn:
            for table in Base.metadata.sorted_tables:
                if table.name in SKIP_TABLES:
                    continue
                cols = [c for c in table.columns
                        if not c.primary_key and not c.foreign_keys and not isinstance(c.type, DateTime)
                        and c.name not in VOLATILE_COLUMNS]
                out[table.name] = sorted(tuple(str(v).replace(str(home), "<home>") for v in row)
                                         for row in conn.execute(select(*cols)))
    finally:
        eng.dispose()
    return out


def counts(state: dict[str, list[tuple]]) -> dict[str, int]:
    return {t: len(rows) for t, rows in state.items() if rows}


def rows_lost(state: dict[str, list[tuple]], clean: dict[str, list[tuple]]) -> tuple[int, int]:
    """(rows of the clean run missing here, rows here that the clean run lacks: duplicates or strays)."""
    from collections import Counter

    missing = extra = 0
    for table in clean.keys() | state.keys():
        a, b = Counter(state.get(table, [])), Counter(clean.get(table, []))
        missing += sum((b - a).values())
        extra += sum((a - b).values())
    return missing, extra


def settings_for(home: Path, url: str):
    from osteo.settings import Settings

    return Settings(var_dir=home / "var", data_dir=home / "data", database_url=url, pseudonym_key=KEY, workers=1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from tests.helpers import synthetic_cohort

    return synthetic_cohort(tmp_path_factory.mktemp("lock-cohort"), patients=15, seed=23)


# --- two refreshes at once ------------------------------------------------------------------------

@pytest.mark.postgres
def test_two_refreshes_started_together_leave_what_one_leaves(tmp_path, cohort):
    """Two workers (threads, each with its own connections) start the same refresh at the same moment
    against one database and one export folder: one runs, the other is refused at once."""
    from osteo.ingest.lock import RefreshAlreadyRunning, refresh_lock
    from osteo.settings import session_factory
    from tests.helpers import plain_refresh

    with pg_schema("clean") as clean_url:  # the reference: one refresh in a fresh database
        clean_home = tmp_path / "clean"
        settings = settings_for(clean_home, clean_url)
        plain_refresh(session_factory(settings, create=True), cohort, settings)
        clean, clean_pngs = db_state(clean_url, clean_home), tree_digest(clean_home / "data" / "export")

    with pg_schema("race") as url:
        home = tmp_path / "race"
        settings = settings_for(home, url)
        factory = session_factory(settings, create=True)
        start, attempted = threading.Barrier(2), threading.Barrier(2)
        outcome: dict[int, str] = {}

        def worker(i: int) -> None:
            start.wait(timeout=30)  # both ask for the lock at the same moment
            try:
                with refresh_lock(settings):
                    attempted.wait(timeout=60)  # the other one has asked too before this one writes
                    plain_refresh(factory, cohort, settings)
                    outcome[i] = "ran"
            except RefreshAlreadyRunning as exc:
                outcome[i] = f"refused: {exc}"
                attempted.wait(timeout=60)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome[i] = f"error: {type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        state, pngs = db_state(url, home), tree_digest(home / "data" / "export")
        assert advisory_holders(url) == [], "the lock outlived the refresh"

    ran = [o for o in outcome.values() if o == "ran"]
    refused = [o for o in outcome.values() if o.startswith("refused")]
    assert len(ran) == 1 and len(refused) == 1, outcome
    assert "another refresh is running (osteo refresh: pid" in refused[0]
    assert "records are never ingested twice at once" in refused[0]
    assert counts(state) == counts(clean)
    assert state == clean
    assert pngs == clean_pngs and pngs
    lost, extra = rows_lost(state, clean)
    print(f"\nLOCK two refreshes at once (PostgreSQL): 1 ran, 1 refused at once: {refused[0][9:130]}...; "
          f"rows {sum(counts(state).values())} in {len(counts(state))} tables = one clean refresh, "
          f"PNGs {len(pngs)} identical, rows lost {lost}, duplicated {extra}")


@pytest.mark.postgres
def test_a_refresh_on_another_machine_is_refused_with_the_holder_named(tmp_path):
    """Another process (as another worker machine would) gets RefreshAlreadyRunning naming the holder."""
    from osteo.ingest.lock import refresh_lock
    from osteo.settings import REPO_ROOT

    with pg_schema() as url:
        with refresh_lock(settings_for(tmp_path, url)) as held:
            assert held.kind == "advisory"
            env = {k: v for k, v in os.environ.items() if not k.startswith("OSTEO_")}
            env.update({"OSTEO_HOME": str(tmp_path / "other"), "OSTEO_DATABASE_URL": url})
            probe = subprocess.run(
                [sys.executable, "-c", "from osteo.ingest.lock import refresh_lock\n"
                 "from osteo.settings import get_settings\n"
                 "with refresh_lock(get_settings()): pass"],
                capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
        assert probe.returncode != 0
        assert "RefreshAlreadyRunning: another refresh is running" in probe.stderr
        assert f"osteo refresh: pid {os.getpid()}" in probe.stderr  # the holder, read from pg_stat_activity
        # the other machine has its own var folder: the file lock alone would have let it run
        assert not (tmp_path / "other" / "var" / "refresh.lock").exists()


# --- release ---------------------------------------------------------------------------------------

@pytest.mark.postgres
def test_advisory_lock_is_released_after_the_block_and_after_an_exception(tmp_path):
    from sqlalchemy import text

    from osteo.ingest.lock import RefreshAlreadyRunning, refresh_lock

    with pg_schema() as url:
        settings = settings_for(tmp_path, url)
        with refresh_lock(settings) as held:
            assert len(advisory_holders(url)) == 1
            held.check()
            # a vanished worker's session (and lock) is dropped by the server within minutes, not hours
            assert held.conn.execute(text("SHOW tcp_keepalives_idle")).scalar() == "60"
            with pytest.raises(RefreshAlreadyRunning, match="another refresh is running"):
                with refresh_lock(settings):
                    pass
        assert advisory_holders(url) == []
        with pytest.raises(RuntimeError, match="the refresh failed"):
            with refresh_lock(settings):
                raise RuntimeError("the refresh failed")
        assert advisory_holders(url) == []
        with refresh_lock(settings):  # the next night gets it
            pass


@pytest.mark.postgres
def test_a_dead_holder_connection_frees_the_lock_and_the_holder_stops(tmp_path):
    from osteo.ingest.lock import RefreshLockLost, assert_still_held, refresh_lock

    with pg_schema() as url:
        settings = settings_for(tmp_path, url)
        with refresh_lock(settings) as held:  # its exit must not fail on the dead connection
            [pid] = advisory_holders(url)
            terminate(pid)
            assert advisory_holders(url) == []
            with refresh_lock(settings) as other:  # taken at once by the next refresh
                assert advisory_holders(url) != [pid]
                with pytest.raises(RefreshLockLost, match="lost its database lock"):
                    assert_still_held(held)  # the first refresh stops before writing more
                other.check()
            # leaving the dead holder's block releases nothing of anybody's
        with refresh_lock(settings):
            pass
    print(f"\nLOCK dead holder: backend {pid} terminated -> lock free at once, holder stopped with RefreshLockLost")


@pytest.mark.postgres
def test_lock_row_variant_on_a_real_server(tmp_path):
    """The Oracle variant's code (lock row, FOR UPDATE NOWAIT, open transaction) run on PostgreSQL:
    refused while held, released after the block and an exception, freed by a dead holder."""
    from sqlalchemy import text

    from osteo.ingest.lock import RefreshAlreadyRunning, RefreshLockLost, row_lock

    with pg_schema() as url:  # no tables yet: the lock table and its row are made on first use
        with row_lock(url) as held:
            assert held.kind == "row"
            with pytest.raises(RefreshAlreadyRunning, match="another refresh is running .*lock row 'refresh'"):
                with row_lock(url):
                    pass
        with pytest.raises(RuntimeError, match="the refresh failed"):
            with row_lock(url):
                raise RuntimeError("the refresh failed")
        with row_lock(url) as held:
            terminate(held.conn.execute(text("SELECT pg_backend_pid()")).scalar())
            with row_lock(url):  # the server rolled the dead session back: the row is free
                with pytest.raises(RefreshLockLost):
                    held.check()
        with row_lock(url):
            pass


# --- Oracle (compiled) and SQLite ----------------------------------------------------------------

def test_oracle_lock_statements_compile():
    from sqlalchemy.dialects import oracle
    from sqlalchemy.schema import CreateTable

    from db.models import RefreshLock
    from osteo.ingest.lock import lock_row_insert, lock_row_select

    dialect = oracle.dialect()
    select_sql = " ".join(str(lock_row_select().compile(dialect=dialect)).split())
    assert select_sql == ("SELECT refresh_lock.name FROM refresh_lock WHERE refresh_lock.name = :name_1 "
                          "FOR UPDATE NOWAIT")
    assert lock_row_select().compile(dialect=dialect).params == {"name_1": "refresh"}
    insert_sql = str(lock_row_insert().compile(dialect=dialect))
    assert insert_sql.startswith("INSERT INTO refresh_lock (name, created_at)")
    ddl = str(CreateTable(RefreshLock.__table__).compile(dialect=dialect))
    assert "GENERATED BY DEFAULT AS IDENTITY" in ddl and "UNIQUE (name)" in ddl


def test_lock_busy_recognises_oracle_and_postgresql_refusals():
    from sqlalchemy.exc import OperationalError

    from osteo.ingest.lock import lock_busy

    class OracleError:  # oracledb puts an _Error with .code in args[0]
        code = 54
        full_code = "ORA-00054"

        def __str__(self):
            return "ORA-00054: resource busy and acquire with NOWAIT specified or timeout expired"

    class DriverError(Exception):
        sqlstate = None

    ora = DriverError(OracleError())
    pg = DriverError("could not obtain lock on row in relation \"refresh_lock\"")
    pg.sqlstate = "55P03"
    other = DriverError("ORA-00942: table or view does not exist")
    assert lock_busy(OperationalError("SELECT", {}, ora))
    assert lock_busy(OperationalError("SELECT", {}, pg))
    assert not lock_busy(OperationalError("SELECT", {}, other))


def test_sqlite_keeps_the_file_lock(tmp_path):
    from osteo.ingest.lock import RefreshAlreadyRunning, assert_still_held, lock_path, refresh_lock
    from osteo.settings import Settings

    settings = Settings(var_dir=tmp_path / "var", data_dir=tmp_path / "data", pseudonym_key=KEY)
    assert settings.resolved_database_url().startswith("sqlite")
    with refresh_lock(settings) as held:
        assert held == lock_path(settings) and f"pid {os.getpid()}" in held.read_text()
        assert_still_held(held)  # a file lock cannot be lost while its process lives
        with pytest.raises(RefreshAlreadyRunning, match="another refresh is running"):
            with refresh_lock(settings):
                pass
