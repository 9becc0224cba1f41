"""A file is judged by the stage that reads it, and a fixed file leaves the active quarantine (issue 23,
items 1, 2 and 4): swapped folders lose nothing, a replaced, fixed, restored or deleted file's entries
are resolved (kept for the auditors), a truncated DICOM is quarantined at ingest."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import make_session_factory
from db.models import DexaExam, DicomImage, Quarantine, SourceFile
from db.quarantine import quarantine
from osteo.ingest import refresh
from osteo.ingest.report import ExportCounts, PairCounts, RefreshReport, StageCounts, ThisRun, Totals
from osteo.settings import Settings
from tests.dicom_factory import make_dicom
from tests.osteo.test_annotations import voc

KEY = b"test-key"
DAY_NS = 86_400 * 10**9
HEAD = "PatientID,ExamDate,Neck_BMD,T-score\n"


@pytest.fixture
def factory(engine):
    return make_session_factory(engine)


def archived(*paths) -> None:
    """Stamp files as written two days ago: their mtime is trusted, so a rerun skips them unopened."""
    when = time.time_ns() - 2 * DAY_NS
    for p in paths:
        os.utime(p, ns=(when, when))


def active(factory, stage: str | None = None) -> list[Quarantine]:
    with factory() as s:
        stmt = select(Quarantine).where(Quarantine.resolved_at.is_(None)).order_by(Quarantine.id)
        return list(s.scalars(stmt if stage is None else stmt.where(Quarantine.stage == stage)))


def count(factory, model) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count(model.id))))


def folders(tmp_path: Path) -> tuple[Path, Path]:
    dicom, dexa = tmp_path / "dicom", tmp_path / "dexa"
    make_dicom(dicom / "a.dcm", patient_id="S1", rows=8, cols=8)
    make_dicom(dicom / "b.dcm", patient_id="S2", rows=8, cols=8)
    dexa.mkdir()
    (dexa / "export.csv").write_text(HEAD + "S1,2021-03-01,0.6,-2.6\nS2,2021-03-02,0.8,-0.9\n")
    archived(*refresh.discover(dicom), *refresh.discover(dexa))
    return dicom, dexa


# --- item 1: swapped folders ------------------------------------------------------------------------

@pytest.mark.parametrize("rehash", [False, True])
def test_swapped_folders_lose_nothing_on_the_next_correct_night(factory, tmp_path, rehash):
    dicom, dexa = folders(tmp_path)
    settings = Settings(var_dir=tmp_path)
    wrong_dicom = refresh.ingest_dicom(factory, refresh.discover(dexa), KEY)  # --dicom dexa --dexa dicom
    wrong_dexa = refresh.ingest_dexa(factory, refresh.discover(dicom), KEY, settings)
    assert (wrong_dicom.added, wrong_dicom.quarantined, wrong_dicom.wrong_folder) == (0, 1, 1)
    assert (wrong_dexa.added, wrong_dexa.quarantined, wrong_dexa.wrong_folder) == (0, 2, 2)
    assert len(active(factory)) == 3

    right_dicom = refresh.ingest_dicom(factory, refresh.discover(dicom), KEY, rehash=rehash)
    right_dexa = refresh.ingest_dexa(factory, refresh.discover(dexa), KEY, settings, rehash=rehash)
    assert (right_dicom.added, right_dicom.already_known, right_dicom.wrong_folder) == (2, 0, 0)
    assert (right_dexa.added, right_dexa.already_known) == (2, 0)
    assert count(factory, DicomImage) == 2 and count(factory, DexaExam) == 2
    assert active(factory) == []  # each file was taken in by the stage that reads it: nothing still bad
    with factory() as s:
        assert {(Path(p).parent.name, k, st) for p, k, st in s.execute(
            select(SourceFile.path, SourceFile.kind, SourceFile.status))} == {
            ("dicom", "dicom", "ingested"), ("dexa", "dexa", "ingested")}

    again = refresh.ingest_dicom(factory, refresh.discover(dicom), KEY)
    assert (again.added, again.unchanged) == (0, 2)  # known now: a rerun opens nothing
    assert refresh.ingest_dexa(factory, refresh.discover(dexa), KEY, settings).unchanged == 1


def test_a_good_file_met_in_the_wrong_folder_keeps_its_record(factory, tmp_path):
    dicom, dexa = folders(tmp_path)
    settings = Settings(var_dir=tmp_path)
    refresh.ingest_dicom(factory, refresh.discover(dicom), KEY)
    refresh.ingest_dexa(factory, refresh.discover(dexa), KEY, settings)
    wrong = refresh.ingest_dexa(factory, refresh.discover(dicom), KEY, settings)  # the DICOMs as CSVs
    assert wrong.quarantined == 2 and wrong.wrong_folder == 2
    with factory() as s:
        assert set(s.execute(select(SourceFile.kind, SourceFile.status))) == {("dicom", "ingested"),
                                                                              ("dexa", "ingested")}
    assert len(active(factory, "ingest_dexa")) == 2
    right = refresh.ingest_dicom(factory, refresh.discover(dicom), KEY)  # the right folders again
    assert (right.already_known, right.unchanged, right.resolved) == (2, 2, 2)
    assert count(factory, DicomImage) == 2 and active(factory) == []  # good files: nothing still bad


def test_the_summary_says_the_folders_look_swapped():
    run = ThisRun(files_seen=3, dicom=StageCounts(files=1, quarantined=1, wrong_folder=1),
                  dexa=StageCounts(files=2, quarantined=2, wrong_folder=2), annotations=StageCounts(),
                  pairing=PairCounts(), export=ExportCounts())
    report = RefreshReport(refresh_id=1, this_run=run, totals=Totals(
        images=0, dexa_exams=0, annotations=0, model_boxes=0, exported_from_model_boxes=0, pairs=0, positives=0,
        negatives=0, exported=0, excluded=0, quarantined=3, waiting={}, excluded_by_reason={},
        quarantined_by_reason={}, out_of_scope=0, out_of_scope_by_reason={}))
    assert report.to_dict()["this_run"]["folders_look_swapped"] == ["dicom", "dexa"]
    lines = report.summary().splitlines()
    assert lines[0].startswith("WARNING") and "--dicom folder" in lines[0] and "swapped" in lines[0]
    assert "--dexa folder" in lines[1]
    one_bad = ThisRun(files_seen=10, dicom=StageCounts(files=10, quarantined=1, wrong_folder=1),
                      dexa=StageCounts(), annotations=StageCounts(), pairing=PairCounts(), export=ExportCounts())
    assert one_bad.swapped() == []  # one stray CSV among ten DICOMs is a stray file, not swapped folders


# --- item 2: a fixed file leaves the active quarantine ------------------------------------------------

def test_a_fixed_dexa_row_is_resolved_and_the_bad_ones_keep_one_entry(factory, tmp_path):
    d = tmp_path / "dexa"
    d.mkdir()
    f = d / "export.csv"
    f.write_text(HEAD + "F1,2021-13-45,0.6,-2.6\nF2,2021-03-02,0.8,-0.9\nF3,bad,0.8,-0.9\nF4,never,0.8,-0.9\n")
    settings = Settings(var_dir=tmp_path)
    first = refresh.ingest_dexa(factory, refresh.discover(d), KEY, settings)
    assert (first.added, first.quarantined) == (1, 3)
    f.write_text(f.read_text().replace("2021-13-45", "2017-03-15"))
    fixed = refresh.ingest_dexa(factory, refresh.discover(d), KEY, settings)
    assert fixed.added == 1 and count(factory, DexaExam) == 2
    entries = active(factory)
    assert sorted(e.source_row for e in entries) == [3, 4]  # once each: the count went down, not up
    assert refresh.summarise(factory).quarantined == 2
    with factory() as s:
        assert s.scalar(select(func.count(Quarantine.id)).where(Quarantine.resolved_at.is_not(None))) == 3


def test_a_replaced_box_file_and_a_deleted_file_leave_the_active_quarantine(factory, tmp_path):
    dicom, ann = tmp_path / "dicom", tmp_path / "ann"
    uid = make_dicom(dicom / "a.dcm", rows=64, cols=64)
    refresh.ingest_dicom(factory, refresh.discover(dicom), KEY)
    ann.mkdir()
    (ann / "keep.xml").write_bytes(voc(f"{uid}.png"))
    (ann / "box.xml").write_text("<annotation><filename>")
    (ann / "gone.xml").write_text("<annotation>")
    archived(*refresh.discover(ann))  # keep.xml is skipped unopened by the second run
    first = refresh.ingest_annotations(factory, refresh.discover(ann))
    assert (first.added, first.quarantined) == (1, 2)
    (ann / "box.xml").write_bytes(voc(f"{uid}.png", (12, 6, 40, 30)))
    (ann / "gone.xml").unlink()
    second = refresh.ingest_annotations(factory, refresh.discover(ann))
    assert (second.updated, second.unchanged, second.resolved) == (1, 1, 2)
    assert active(factory) == []
    with factory() as s:
        assert s.scalar(select(func.count(Quarantine.id)).where(Quarantine.resolved_at.is_not(None))) == 2


def test_a_deleted_file_beside_unchanged_ones_leaves_the_active_quarantine(factory, tmp_path):
    dicom, dexa = folders(tmp_path)
    (dicom / "junk.dcm").write_bytes(b"not a dicom at all" * 10)
    (dexa / "junk.csv").write_text("foo,bar\n1,2\n")
    archived(dicom / "junk.dcm", dexa / "junk.csv")
    settings = Settings(var_dir=tmp_path)
    refresh.ingest_dicom(factory, refresh.discover(dicom), KEY)
    refresh.ingest_dexa(factory, refresh.discover(dexa), KEY, settings)
    assert len(active(factory)) == 2
    (dicom / "junk.dcm").unlink()
    (dexa / "junk.csv").unlink()
    night = refresh.ingest_dicom(factory, refresh.discover(dicom), KEY)
    assert (night.unchanged, night.resolved) == (2, 1)
    assert refresh.ingest_dexa(factory, refresh.discover(dexa), KEY, settings).resolved == 1
    assert active(factory) == []
    (dexa / "junk2.csv").write_text("foo,bar\n1,2\n")
    refresh.ingest_dexa(factory, refresh.discover(dexa), KEY, settings)
    for f in refresh.discover(dexa):  # an emptied (unmounted?) folder says nothing of its files
        os.unlink(f)
    refresh.ingest_dexa(factory, refresh.discover(dexa), KEY, settings)
    assert len(active(factory)) == 1


def test_a_dicom_restored_byte_for_byte_leaves_the_active_quarantine(factory, tmp_path):
    d = tmp_path / "dicom"
    make_dicom(d / "a.dcm", rows=8, cols=8)
    make_dicom(d / "b.dcm", rows=8, cols=8)
    f = d / "a.dcm"
    good = f.read_bytes()
    refresh.ingest_dicom(factory, refresh.discover(d), KEY)
    f.write_bytes(good + b"\0\0")  # changed in place: the same SOP Instance UID with other bytes
    changed = refresh.ingest_dicom(factory, refresh.discover(d), KEY)
    assert changed.quarantined == 1 and len(active(factory)) == 1
    f.write_bytes(good)
    restored = refresh.ingest_dicom(factory, refresh.discover(d), KEY)
    assert restored.resolved == 1 and active(factory) == [] and count(factory, DicomImage) == 2


def test_retry_quarantined_resolves_the_entries_of_an_older_content(factory, tmp_path):
    d = tmp_path / "dexa"
    d.mkdir()
    (d / "export.csv").write_text(HEAD + "R1,2021-03-01,0.6,-2.6\n")
    archived(d / "export.csv")
    settings, paths = Settings(var_dir=tmp_path), refresh.discover(d)
    refresh.ingest_dexa(factory, paths, KEY, settings)
    with factory() as s, s.begin():  # an entry of the file's earlier, bad content (an older database)
        quarantine(s, stage="ingest_dexa", path=paths[0], sha256="0" * 64, reason="bad_date", row=1)
    assert refresh.ingest_dexa(factory, paths, KEY, settings).unchanged == 1 and len(active(factory)) == 1
    asked = refresh.ingest_dexa(factory, paths, KEY, settings, retry_quarantined=True)
    assert asked.resolved == 1 and active(factory) == [] and count(factory, DexaExam) == 1


# --- item 4: a truncated DICOM ------------------------------------------------------------------------

def test_a_truncated_dicom_is_quarantined_at_ingest_not_added(factory, tmp_path):
    d = tmp_path / "dicom"
    make_dicom(tmp_path / "whole.dcm", rows=64, cols=64)
    data = (tmp_path / "whole.dcm").read_bytes()
    d.mkdir()
    (d / "cut.dcm").write_bytes(data[: len(data) // 2])
    counts = refresh.ingest_dicom(factory, refresh.discover(d), KEY)
    assert (counts.added, counts.quarantined) == (0, 1) and count(factory, DicomImage) == 0
    (entry,) = active(factory)
    assert entry.reason == "truncated" and "declares 8192 bytes" in entry.detail and "cut short" in entry.detail


def test_the_quarantine_command_accepts_every_stage(tmp_path, capsys):
    import json

    from db import create_schema
    from osteo.ingest.quarantine import STAGES
    from osteo.settings import get_settings, session_factory
    from osteo_cli.main import main
    from tests.helpers import isolated_settings

    assert {"ingest_dicom", "ingest_dexa", "ingest_annotation", "locate", "export"} <= set(STAGES)
    with isolated_settings(tmp_path / "home"):
        create_schema(session_factory(get_settings(), create=True).kw["bind"])
        for stage in STAGES:
            capsys.readouterr()
            assert main(["quarantine", "--stage", stage, "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["count"] == 0
