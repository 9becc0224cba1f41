"""Unattended nights: each fault ends in a retry or a clean failure with nothing half-written, and the
next run ends exactly like a clean run in a fresh database (every table's rows and the PNGs' hashes).

Faults: the refresh's database connection dropped mid-ingest (retried by the task; and, with retries
exhausted, a clean failure), the lock's connection dropped mid-run, the export folder read-only, the
disk full mid-export. `pytest -s` prints one FAULT line each for the reliability doc.

Tests run as root here, where a chmod'ed folder stays writable: the read-only folder is chmod 0555
and, as root, file creation in it is refused by a patched mkstemp, the call that fails first in a
read-only folder (atomic_write_bytes), with the PermissionError the kernel would give. The full disk
is the real atomic_write_bytes whose fsync raises ENOSPC after N files, so its own clean-up runs.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import isolated_settings, tree_digest
from tests.osteo.test_refresh_lock import KEY, advisory_holders, counts, db_state, pg_schema, rows_lost, terminate

INGEST_BATCH, EXPORT_BATCH = 8, 4  # small batches: the faults land between and inside them


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from tests.helpers import synthetic_cohort

    return synthetic_cohort(tmp_path_factory.mktemp("fault-cohort"), patients=15, seed=23)


@contextmanager
def refresh_env(home: Path, url: str | None = None):
    extra = {"OSTEO_PSEUDONYM_KEY": KEY, "OSTEO_WORKERS": "1",  # one process: the patched writes apply
             "OSTEO_INGEST_BATCH_SIZE": str(INGEST_BATCH), "OSTEO_EXPORT_BATCH_SIZE": str(EXPORT_BATCH)}
    if url:
        extra["OSTEO_DATABASE_URL"] = url
    with isolated_settings(home, **extra) as settings:
        yield settings


def run_flow(cohort: Path):
    from flows.refresh import refresh_flow
    from osteo.ingest.options import RefreshOptions

    return refresh_flow(options=RefreshOptions(dicom_dir=str(cohort / "dicom"), dexa_dir=str(cohort / "dexa"),
                                               annotations_dir=str(cohort / "annotations")))


def leftovers(home: Path) -> list[str]:
    """Half-written files anywhere under the data folder (atomic_write_bytes names them .NAME.*.tmp)."""
    return sorted(str(p) for p in (home / "data").rglob("*.tmp"))


def scalar(url: str, sql: str):
    from sqlalchemy import text

    from db import make_engine

    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        eng.dispose()


def dicom_sources(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM source_file WHERE kind = 'dicom'")


def last_run(url: str) -> tuple[str, str]:
    from sqlalchemy import select

    from db import make_engine
    from db.models import RefreshRun

    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            status, counts_ = conn.execute(select(RefreshRun.status, RefreshRun.counts)
                                           .order_by(RefreshRun.id.desc()).limit(1)).one()
    finally:
        eng.dispose()
    return status, (counts_ or {}).get("error", "")


@pytest.fixture(scope="module")
def clean(tmp_path_factory, cohort, prefect_harness):
    """One clean refresh per database kind, in a fresh database and home, made when first asked for."""
    made: dict[str, tuple[dict, dict]] = {}

    def reference(kind: str) -> tuple[dict, dict]:
        if kind not in made:
            home = tmp_path_factory.mktemp(f"clean-{kind}")
            if kind == "postgresql":
                with pg_schema("clean") as url, refresh_env(home, url):
                    run_flow(cohort)
                    made[kind] = db_state(url, home), tree_digest(home / "data" / "export")
            else:
                with refresh_env(home) as settings:
                    run_flow(cohort)
                    made[kind] = (db_state(settings.resolved_database_url(), home),
                                  tree_digest(home / "data" / "export"))
        return made[kind]

    return reference


def rerun_equals_clean(cohort: Path, home: Path, url: str, clean_ref: tuple[dict, dict]) -> str:
    """The next night's run, without the fault: it must end exactly like the clean run."""
    run_flow(cohort)
    state, pngs = db_state(url, home), tree_digest(home / "data" / "export")
    clean_state, clean_pngs = clean_ref
    assert counts(state) == counts(clean_state)
    assert rows_lost(state, clean_state) == (0, 0)
    assert state == clean_state
    assert pngs == clean_pngs and pngs
    assert leftovers(home) == []
    assert last_run(url)[0] == "finished"
    return (f"rerun = clean run: {sum(counts(state).values())} rows in {len(counts(state))} tables, "
            f"{len(pngs)} PNG hashes equal, rows lost 0, duplicated 0")


# --- the database connection dropped ---------------------------------------------------------------

def drop_connection_on(monkeypatch, url: str, batch: int, seen: dict) -> None:
    """Terminate the ingest's backend after batch `batch` is written (flushed) and before it commits;
    record what is committed when the next ingest call starts."""
    from sqlalchemy import func, select, text

    from db.models import SourceFile
    from osteo.ingest import refresh as plain

    real = plain.store_dicom_results
    seen["calls"] = []

    def dropping(session, results, retry=()):
        seen["calls"].append(len(results))
        if len(seen["calls"]) == batch + 1:
            seen["committed_before_next"] = dicom_sources(url)
        out = real(session, results, retry)
        if len(seen["calls"]) == batch:
            session.flush()
            seen["written_uncommitted"] = session.scalar(select(func.count(SourceFile.id))
                                                         .where(SourceFile.kind == "dicom"))
            terminate(session.execute(text("SELECT pg_backend_pid()")).scalar())  # no sleep: deterministic
        return out

    monkeypatch.setattr(plain, "store_dicom_results", dropping)


@pytest.mark.postgres
@pytest.mark.slow
def test_connection_dropped_mid_ingest_is_retried(tmp_path, cohort, clean, monkeypatch):
    """The task's retry policy takes the dropped connection as transient: batch 2 runs again, whole."""
    clean_ref = clean("postgresql")
    seen: dict = {}
    with pg_schema("fault") as url, refresh_env(tmp_path, url):
        drop_connection_on(monkeypatch, url, batch=2, seen=seen)
        run_flow(cohort)  # completes: the retry succeeded
        assert seen["calls"][:3] == [INGEST_BATCH] * 3  # batch 2 twice: dropped, then retried
        assert seen["written_uncommitted"] == 2 * INGEST_BATCH  # batch 2 was in the database, uncommitted
        assert seen["committed_before_next"] == INGEST_BATCH  # after the drop: batch 1 only, no half batch 2
        assert last_run(url)[0] == "finished"
        state, pngs = db_state(url, tmp_path), tree_digest(tmp_path / "data" / "export")
        assert state == clean_ref[0] and pngs == clean_ref[1] and leftovers(tmp_path) == []
        monkeypatch.undo()
        summary = rerun_equals_clean(cohort, tmp_path, url, clean_ref)
    print(f"\nFAULT db connection dropped mid-ingest (batch 2 of {INGEST_BATCH} files, written, uncommitted): "
          f"retried by the task, run finished; half-committed rows 0, partial files 0; {summary}")


@pytest.mark.postgres
def test_connection_dropped_with_retries_exhausted_fails_cleanly(tmp_path, cohort, clean, monkeypatch):
    """The same drop where no retry is left (the plain ingest, as the task's last attempt runs it):
    the error surfaces, batch 1 stays, nothing of batch 2; the next night's run ends like a clean one."""
    from sqlalchemy.exc import OperationalError

    from osteo.ingest import refresh as plain
    from osteo.settings import session_factory
    from osteo_common.chunks import batched

    clean_ref = clean("postgresql")
    seen: dict = {}
    with pg_schema("fault") as url, refresh_env(tmp_path, url) as settings:
        factory = session_factory(settings, create=True)
        drop_connection_on(monkeypatch, url, batch=2, seen=seen)
        with pytest.raises(OperationalError) as info:
            for paths in batched(plain.discover(cohort / "dicom"), INGEST_BATCH):
                plain.ingest_dicom(factory, paths, settings.resolved_pseudonym_key(), workers=1)
        reason = str(info.value.orig).strip().splitlines()[0]
        assert "terminat" in reason or "closed" in reason
        assert dicom_sources(url) == INGEST_BATCH  # batch 1 committed, batch 2 rolled back whole
        assert scalar(url, "SELECT count(*) FROM dicom_image") <= INGEST_BATCH
        monkeypatch.undo()
        summary = rerun_equals_clean(cohort, tmp_path, url, clean_ref)
    print(f"\nFAULT db connection dropped mid-ingest, no retry left: failed cleanly ({reason}); committed batch 1 "
          f"({INGEST_BATCH} files) kept, half-committed rows 0; {summary}")


@pytest.mark.postgres
@pytest.mark.slow
def test_lock_connection_dropped_mid_run_stops_the_refresh(tmp_path, cohort, clean, monkeypatch):
    """The lock's own connection dies (the lock is free for another worker): the refresh stops before
    its next batch, says why in its refresh_run row, and the next run goes on from what it committed."""
    from osteo.ingest import refresh as plain
    from osteo.ingest.lock import RefreshLockLost

    clean_ref = clean("postgresql")
    with pg_schema("fault") as url, refresh_env(tmp_path, url):
        real = plain.store_dicom_results
        calls = []

        def kill_lock(session, results, retry=()):
            calls.append(len(results))
            if len(calls) == 1:
                [pid] = advisory_holders(url)
                terminate(pid)
            return real(session, results, retry)

        monkeypatch.setattr(plain, "store_dicom_results", kill_lock)
        with pytest.raises(RefreshLockLost, match="lost its database lock") as info:
            run_flow(cohort)
        assert calls == [INGEST_BATCH]  # stopped before batch 2
        assert dicom_sources(url) == INGEST_BATCH
        assert last_run(url) == ("failed", f"refresh_lock_lost: {info.value.detail}")
        assert advisory_holders(url) == [] and leftovers(tmp_path) == []
        monkeypatch.undo()
        summary = rerun_equals_clean(cohort, tmp_path, url, clean_ref)
    print(f"\nFAULT lock connection dropped mid-ingest: failed cleanly before batch 2 (refresh_lock_lost), "
          f"refresh_run 'failed'; batch 1 kept, half-committed rows 0; {summary}")


# --- the export folder ------------------------------------------------------------------------------

def export_state(url: str, home: Path) -> tuple[set[str], set[str], int]:
    """(PNG files in the export folder, paths the database records as exported, export rows)."""
    files = {str(p) for p in (home / "data" / "export").rglob("*") if p.is_file()}
    recorded = set(filter(None, (r[0] for r in _rows(url, "SELECT path FROM export WHERE status = 'exported'"))))
    return files, recorded, scalar(url, "SELECT count(*) FROM export")


def _rows(url: str, sql: str) -> list[tuple]:
    from sqlalchemy import text

    from db import make_engine

    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        eng.dispose()


@pytest.mark.slow
def test_read_only_export_folder_fails_cleanly(tmp_path, cohort, clean, monkeypatch):
    import tempfile

    import osteo_common.files as files_mod
    from osteo.ingest.refresh import ExportWriteError

    clean_ref = clean("sqlite")
    export = tmp_path / "data" / "export"
    export.mkdir(parents=True)
    export.chmod(0o555)
    if os.geteuid() == 0:  # root writes through the mode bits: refuse as the kernel would for others
        real_mkstemp = tempfile.mkstemp

        def read_only_mkstemp(*args, dir=None, **kwargs):  # mkstemp's own keyword
            if dir is not None and Path(dir).resolve().is_relative_to(export.resolve()):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(files_mod.tempfile, "mkstemp", read_only_mkstemp)
    try:
        with refresh_env(tmp_path) as settings:
            url = settings.resolved_database_url()
            with pytest.raises(ExportWriteError) as info:
                run_flow(cohort)
            assert info.value.reason == "export_not_writable"
            assert "Permission denied" in info.value.detail and "none of it was recorded" in info.value.detail
            files, recorded, rows = export_state(url, tmp_path)
            assert files == set() and recorded == set() and rows == 0
            assert leftovers(tmp_path) == []
            assert last_run(url) == ("failed", f"export_not_writable: {info.value.detail}")
            assert scalar(url, "SELECT count(*) FROM pair") == sum(1 for _ in clean_ref[0]["pair"])  # kept
            monkeypatch.undo()
            export.chmod(0o755)
            summary = rerun_equals_clean(cohort, tmp_path, url, clean_ref)
    finally:
        export.chmod(0o755)
    print(f"\nFAULT export folder read-only: failed cleanly (export_not_writable: {info.value.detail[:90]}...); "
          f"PNG/tmp files left 0, export rows 0, ingest and pairs kept; {summary}")


@pytest.mark.slow
def test_disk_full_mid_export_fails_cleanly(tmp_path, cohort, clean, monkeypatch):
    from unittest import mock

    import osteo.etl.imaging.export as export_mod
    import osteo_common.files as files_mod
    from osteo.ingest.refresh import ExportWriteError

    clean_ref = clean("sqlite")
    full_after = EXPORT_BATCH + 1  # batch 1 commits; batch 2 writes a file, then the disk is full
    written: list[str] = []
    real_write = export_mod.atomic_write_bytes

    def filling_write(path, data):
        if len(written) < full_after:
            real_write(path, data)
            written.append(str(path))
            return
        enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        with mock.patch.object(files_mod.os, "fsync", side_effect=enospc):  # the real write's own clean-up runs
            real_write(path, data)

    monkeypatch.setattr(export_mod, "atomic_write_bytes", filling_write)
    with refresh_env(tmp_path) as settings:
        url = settings.resolved_database_url()
        with pytest.raises(ExportWriteError) as info:
            run_flow(cohort)
        assert info.value.reason == "disk_full"
        assert "No space left on device" in info.value.detail
        files, recorded, rows = export_state(url, tmp_path)
        assert files == recorded  # every PNG left is recorded, every recorded PNG is there
        assert 0 < len(files) < len(written)  # batch 1 kept; what batch 2 had written was removed
        assert rows <= EXPORT_BATCH  # whole batches only
        assert leftovers(tmp_path) == []
        assert last_run(url) == ("failed", f"disk_full: {info.value.detail}")
        monkeypatch.undo()
        summary = rerun_equals_clean(cohort, tmp_path, url, clean_ref)
    print(f"\nFAULT disk full after {full_after} PNGs (ENOSPC at fsync): failed cleanly (disk_full); "
          f"{len(written) - len(files)} PNG(s) of the failed batch removed, {len(files)} of the committed batch "
          f"kept, tmp files 0, half-recorded rows 0; {summary}")
