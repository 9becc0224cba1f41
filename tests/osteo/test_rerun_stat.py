"""Reruns by stat (issue 15): a file whose size and mtime match its last read is not opened; a touched
file is read again and adds nothing; a replaced one is seen; --rehash reads everything; the walk streams
sorted paths. Reads are COUNTED through the functions that read file bytes, never timed."""

from __future__ import annotations

import inspect
import os
import time

import pytest
from sqlalchemy import func, select

from db import make_session_factory
from db.models import DicomImage, Quarantine, SourceFile, day_number
from osteo.errors import UserError
from osteo.etl import dicom_headers
from osteo.ingest import refresh, stage
from osteo.ingest.report import ExportCounts, PairCounts, StageCounts, ThisRun
from osteo.settings import Settings
from tests.dicom_factory import make_dicom

KEY = b"test-key"
DAY_NS = 86_400 * 10**9


@pytest.fixture
def factory(engine):
    return make_session_factory(engine)


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Every file whose bytes the ingest reads: DICOM (read_one, one per file) and DEXA/VOC (file_bytes)."""
    seen: list[str] = []
    real_one, real_bytes = dicom_headers.read_one, stage.file_bytes

    def read_one(path, *args, **kwargs):
        seen.append(path)
        return real_one(path, *args, **kwargs)

    def file_bytes(path):
        seen.append(path)
        return real_bytes(path)

    monkeypatch.setattr(dicom_headers, "read_one", read_one)
    monkeypatch.setattr(stage, "file_bytes", file_bytes)  # the ingests' shared skeleton reads DEXA and VOC files
    return seen


def archived(*paths, days: int = 2) -> None:
    """Stamp files as written `days` ago: archive files, older than the racy window (RACY_NS)."""
    when = time.time_ns() - days * DAY_NS
    for p in paths:
        os.utime(p, ns=(when, when))


def cohort(d) -> list[str]:
    """A hip image, a bad file (quarantined) and a chest radiograph (out of scope), archived."""
    make_dicom(d / "hip.dcm", patient_id="H1", rows=8, cols=8)
    make_dicom(d / "nodate.dcm", patient_id="H2", rows=8, cols=8, drop=("StudyDate",))
    make_dicom(d / "chest.dcm", patient_id="H3", rows=8, cols=8, body_part="CHEST")
    paths = refresh.discover(d)
    archived(*paths)
    return paths


def rows_of(factory, path: str) -> list[SourceFile]:
    with factory() as s:
        return list(s.scalars(select(SourceFile).where(SourceFile.path == path).order_by(SourceFile.id)))


def test_an_unchanged_file_is_not_opened_on_a_rerun(factory, tmp_path, reads):
    paths = cohort(tmp_path / "in")
    first = refresh.ingest_dicom(factory, paths, KEY)
    assert sorted(reads) == sorted(paths) and (first.added, first.quarantined, first.out_of_scope) == (1, 1, 1)
    for p in paths:  # the stamp recorded at ingest is the file's
        (row,) = rows_of(factory, p)
        st = os.stat(p)
        assert (row.mtime_ns, row.size_bytes) == (st.st_mtime_ns, st.st_size)
    reads.clear()
    again = refresh.ingest_dicom(factory, paths, KEY)
    assert reads == []  # nothing opened
    assert (again.files, again.unchanged, again.already_known, again.added, again.quarantined) == (3, 3, 3, 0, 0)
    # a quarantined file due for a retry is judged again all the same; the others stay unopened
    asked = refresh.ingest_dicom(factory, paths, KEY, retry_quarantined=True)
    assert reads == [str(tmp_path / "in" / "nodate.dcm")] and (asked.retried, asked.unchanged) == (1, 2)


def test_a_touched_file_is_read_again_adds_nothing_and_is_skipped_after(factory, tmp_path, reads):
    paths = cohort(tmp_path / "in")
    refresh.ingest_dicom(factory, paths, KEY)
    hip = str(tmp_path / "in" / "hip.dcm")
    archived(hip, days=1)  # same bytes, another mtime
    reads.clear()
    touched = refresh.ingest_dicom(factory, paths, KEY)
    assert reads == [hip]
    assert (touched.unchanged, touched.already_known, touched.added, touched.quarantined) == (2, 3, 0, 0)
    (row,) = rows_of(factory, hip)  # no new row; its stamp moved with the file
    assert row.mtime_ns == os.stat(hip).st_mtime_ns
    reads.clear()
    assert refresh.ingest_dicom(factory, paths, KEY).unchanged == 3 and reads == []


def test_a_replaced_file_is_read_and_follows_the_rules(factory, tmp_path, reads):
    d = tmp_path / "in"
    paths = cohort(d)
    refresh.ingest_dicom(factory, paths, KEY)
    hip, chest = str(d / "hip.dcm"), str(d / "chest.dcm")
    with factory() as s:
        uid = s.scalar(select(DicomImage.sop_instance_uid))
    make_dicom(d / "hip.dcm", patient_id="H1", rows=8, cols=8, sop_uid=uid, study_date="20200101")  # same UID
    make_dicom(d / "chest.dcm", patient_id="H3", rows=8, cols=8)  # now a hip image: a new image
    archived(hip, chest, days=1)
    reads.clear()
    counts = refresh.ingest_dicom(factory, paths, KEY)
    assert sorted(reads) == sorted([hip, chest]) and counts.unchanged == 1
    assert (counts.added, counts.quarantined) == (1, 1)
    with factory() as s:
        assert s.scalar(select(Quarantine.reason).where(Quarantine.source_path == hip)) == "sop_uid_conflict"
        assert s.scalar(select(func.count(DicomImage.id))) == 2
    for p in (hip, chest):  # a new row each; the latest is the file's state: the next rerun skips both
        old, new = rows_of(factory, p)
        assert old.sha256 != new.sha256 and new.mtime_ns == os.stat(p).st_mtime_ns
    reads.clear()
    assert refresh.ingest_dicom(factory, paths, KEY).unchanged == 3 and reads == []


def test_rehash_reads_every_file_again_and_adds_nothing(factory, tmp_path, reads):
    paths = cohort(tmp_path / "in")
    refresh.ingest_dicom(factory, paths, KEY)
    reads.clear()
    counts = refresh.ingest_dicom(factory, paths, KEY, rehash=True)
    assert sorted(reads) == sorted(paths)
    assert (counts.unchanged, counts.already_known, counts.added, counts.quarantined) == (0, 3, 0, 0)


def test_a_file_stamped_just_now_is_not_trusted_and_is_read_again(factory, tmp_path, reads):
    """A write in the same clock tick as the read would keep the mtime: a fresh stamp is not recorded."""
    make_dicom(tmp_path / "in" / "new.dcm", rows=8, cols=8)
    paths = refresh.discover(tmp_path / "in")
    refresh.ingest_dicom(factory, paths, KEY)
    assert rows_of(factory, paths[0])[0].mtime_ns is None
    reads.clear()
    assert refresh.ingest_dicom(factory, paths, KEY).already_known == 1 and reads == paths


def test_bulk_insert_sets_study_day_from_study_date(factory, tmp_path):
    for i, day in enumerate(("20180102", "20221231", "19991231")):
        make_dicom(tmp_path / "in" / f"{i}.dcm", patient_id=f"S{i % 2}", rows=8, cols=8, study_date=day)
    assert refresh.ingest_dicom(factory, refresh.discover(tmp_path / "in"), KEY).added == 3
    with factory() as s:
        rows = s.execute(select(DicomImage.study_date, DicomImage.study_day, DicomImage.patient_id)).all()
        patients = s.scalar(select(func.count(func.distinct(DicomImage.patient_id))))
    assert len(rows) == 3 and all(day == day_number(date) for date, day, _ in rows) and patients == 2


def test_dexa_and_box_files_skip_by_stat_but_a_waiting_box_is_read_every_time(factory, tmp_path, reads):
    d, ann = tmp_path / "dexa", tmp_path / "ann"
    d.mkdir()
    ann.mkdir()
    (d / "a.csv").write_text("PatientID,ExamDate,Neck_BMD,T-score\nA1,2021-01-02,0.6,-2.2\n")
    (ann / "1.2.3.xml").write_text(  # its image is not here: the file waits
        "<annotation><filename>1.2.3.png</filename><object><name>femoral_neck</name><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    csvs, xmls = refresh.discover(d), refresh.discover(ann)
    archived(*csvs, *xmls)
    settings = Settings(var_dir=tmp_path)
    assert refresh.ingest_dexa(factory, csvs, KEY, settings).added == 1
    assert refresh.ingest_annotations(factory, xmls).waiting == 1
    reads.clear()
    dexa = refresh.ingest_dexa(factory, csvs, KEY, settings)
    boxes = refresh.ingest_annotations(factory, xmls)
    assert reads == xmls and (dexa.unchanged, dexa.already_known, boxes.unchanged, boxes.waiting) == (1, 1, 0, 1)
    archived(*csvs, days=1)  # touched: read again, nothing added, skipped after
    reads.clear()
    assert refresh.ingest_dexa(factory, csvs, KEY, settings).added == 0 and reads == csvs
    reads.clear()
    assert refresh.ingest_dexa(factory, csvs, KEY, settings, rehash=False).unchanged == 1 and reads == []
    assert refresh.ingest_dexa(factory, csvs, KEY, settings, rehash=True).unchanged == 0 and reads == csvs


# --- the walk ------------------------------------------------------------------------------------

def test_the_walk_streams_sorted_paths_and_skips_hidden_entries(tmp_path):
    root = tmp_path / "tree"
    for rel in ("b/2", "a.dcm", "a/z", "a/b/c", "a-b", "A", "ab/x.XML", "ab.xml", ".hidden", ".git/x", "b/.h/y",
                "c/.d"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "empty").mkdir()
    walked = refresh.walk(root)
    assert inspect.isgenerator(walked)  # a generator: nothing listed before the work starts
    paths = list(walked)
    base = str(root.resolve())
    assert paths == sorted(paths)  # a folder "a" sorts after the file "a.dcm", as full paths do
    assert [p[len(base) + 1:] for p in paths] == ["A", "a-b", "a.dcm", "a/b/c", "a/z", "ab.xml", "ab/x.XML", "b/2"]
    assert refresh.discover(root, (".xml",)) == [f"{base}/ab.xml", f"{base}/ab/x.XML"]
    assert list(refresh.walk(None)) == []
    with pytest.raises(UserError):  # a missing folder is said when the walk is asked for, not later
        refresh.walk(tmp_path / "nowhere")


def test_batches_cut_a_stream_without_listing_it():
    def endless():
        n = 0
        while True:
            yield str(n)
            n += 1

    it = refresh.batches(endless(), 3)
    assert next(it) == ["0", "1", "2"] and next(it) == ["3", "4", "5"]
    assert list(refresh.batches(iter(["a", "b"]), 5)) == [["a", "b"]] and list(refresh.batches([], 2)) == []


def test_the_report_counts_unchanged_files():
    dicom = StageCounts(files=5, already_known=5, unchanged=4) + StageCounts(files=2, added=2)
    run = ThisRun(7, dicom, StageCounts(files=1, already_known=1, unchanged=1), StageCounts(), PairCounts(),
                  ExportCounts())
    d = run.to_dict()
    assert (d["unchanged"], d["already_known"], d["files_seen"]) == (5, 6, 7)
