"""A batch of a rerun asks for its files' rows and active quarantine entries at once (db/store.py,
db/quarantine.py, issue 28): the few active entries loaded whole, or IN lists when they are many, give
the same answers; a path's latest row is its highest id."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from db import make_session_factory
from db import quarantine as q
from db.models import Quarantine, SourceFile
from db.store import latest_sources
from db.values import QuarantineStage

DICOM, DEXA = QuarantineStage.INGEST_DICOM, QuarantineStage.INGEST_DEXA
N = 150  # over FEW_FROM: a batch's size


def _entry(stage: str, path: str, sha: str, *, row: int = 0, context: str | None = None,
           resolved: bool = False) -> Quarantine:
    return Quarantine(stage=stage, source_path=path, source_sha256=sha, source_row=row, reason="bad",
                      context_digest=context, resolved_at=dt.datetime(2026, 1, 1) if resolved else None)


@pytest.fixture
def batch(engine) -> tuple:
    """N files of a folder (one of them read twice: two rows) and entries at the DICOM and DEXA stages."""
    factory = make_session_factory(engine)
    paths = [f"/archive/D0/IM{i:03d}.dcm" for i in range(N)]
    with factory() as s, s.begin():
        s.add_all(SourceFile(kind="dicom", path=p, sha256=f"s{i}", size_bytes=i, mtime_ns=i)
                  for i, p in enumerate(paths))
        s.flush()
        s.add(SourceFile(kind="dicom", path=paths[1], sha256="s1-new", size_bytes=1, mtime_ns=2))
        s.add(SourceFile(kind="dicom", path="/other/z.dcm", sha256="sz", size_bytes=1, mtime_ns=1))  # not in the batch
        s.add_all([
            _entry(DICOM, paths[3], "s3", context="c1"), _entry(DICOM, paths[3], "s3", row=1),
            _entry(DICOM, paths[7], "s7", context="c2"), _entry(DICOM, paths[9], "s9", context="c1", resolved=True),
            _entry(DICOM, "/elsewhere/x.dcm", "zz", context="c1"),  # not in the batch
            _entry(DEXA, paths[5], "s5"),  # a DICOM of the batch once read as a bad CSV: resolved
            _entry(DEXA, paths[6], "not-its-content"),  # no dicom row of that content: kept
            _entry(DEXA, "/elsewhere/y.csv", "s8"), _entry(DEXA, "/other/z.dcm", "sz"),  # not in the batch: kept
        ])
    return factory, paths


@pytest.mark.parametrize("few_from", [10**9, q.FEW_FROM], ids=["in-lists", "whole"])
@pytest.mark.parametrize("crowd", [0, 2 * N], ids=["few", "many-active"])
def test_a_batch_finds_the_same_entries_whichever_way_it_asks(batch, monkeypatch, few_from, crowd):
    factory, paths = batch
    monkeypatch.setattr(q, "FEW_FROM", few_from)
    with factory() as s, s.begin():  # active entries of other files, more than the batch: IN lists again
        s.add_all(_entry(stage, f"/crowd/{i}", f"c{i}") for i in range(crowd) for stage in (DICOM, DEXA))
    with factory() as s, s.begin():
        assert q.active_contexts(s, DICOM, [f"s{i}" for i in range(N)]) == {"s3": {"c1", None}, "s7": {"c2"}}
        assert q.resolve_known_elsewhere(s, stage=DICOM, kind="dicom", paths=paths) == 1
    with factory() as s:
        active = s.execute(select(Quarantine.stage, Quarantine.source_path).where(
            Quarantine.resolved_at.is_(None), ~Quarantine.source_path.startswith("/crowd/"))).all()
        assert sorted(active) == sorted([(DICOM, paths[3]), (DICOM, paths[3]), (DICOM, paths[7]),
                                         (DICOM, "/elsewhere/x.dcm"), (DEXA, paths[6]), (DEXA, "/elsewhere/y.csv"),
                                         (DEXA, "/other/z.dcm")])


def test_the_latest_row_of_each_path_is_its_highest_id(batch):
    factory, paths = batch
    with factory() as s:
        latest = latest_sources(s, [*paths, "/archive/D0/unknown.dcm"])
    assert len(latest) == N and latest[paths[1]].sha256 == "s1-new" and latest[paths[2]].sha256 == "s2"
    assert (latest[paths[4]].size_bytes, latest[paths[4]].mtime_ns, latest[paths[4]].kind) == (4, 4, "dicom")
