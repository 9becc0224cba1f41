"""Messages that leave nobody guessing (issue 23, item 8): what a refresh says of a DICOM changed in place,
a Thumbs.db, a DEXA header it cannot read, a re-exported DEXA file, box files waiting for their image and a
folder that held files last night and none tonight."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from db import make_session_factory
from db.models import DicomImage, Quarantine
from osteo.ingest import refresh
from osteo.ingest.report import EmptyFolder, ExportCounts, PairCounts, RefreshReport, StageCounts, ThisRun
from osteo.ingest.waiting import waiting_box_files
from osteo.settings import Settings
from tests.dicom_factory import make_dicom
from tests.osteo.test_annotations import voc

KEY = b"test-key"
HEAD = "PatientID,ExamDate,Neck_BMD,T-score\n"


@pytest.fixture
def factory(engine):
    return make_session_factory(engine)


def details(factory, stage: str) -> dict[str, str]:
    """path name -> detail of the active entries of a stage"""
    with factory() as s:
        return {p.rsplit("/", 1)[1]: d for p, d in s.execute(
            select(Quarantine.source_path, Quarantine.detail)
            .where(Quarantine.stage == stage, Quarantine.resolved_at.is_(None)))}


def test_a_dicom_changed_in_place_says_so_and_what_happens_to_the_image(factory, tmp_path):
    d = tmp_path / "dicom"
    hip = d / "hip.dcm"
    make_dicom(hip, rows=8, cols=8)
    refresh.ingest_dicom(factory, refresh.discover(d), KEY)
    with open(hip, "ab") as f:  # one byte appended: other content, the same SOP Instance UID, the same path
        f.write(b"\0")
    other = tmp_path / "other"
    other.mkdir()
    (other / "copy.dcm").write_bytes(hip.read_bytes() + b"\1")  # other bytes of the same UID elsewhere
    counts = refresh.ingest_dicom(factory, refresh.discover(d) + refresh.discover(other), KEY, rehash=True)
    assert (counts.added, counts.quarantined) == (0, 2)
    found = details(factory, "ingest_dicom")
    assert "changed since it was ingested" in found["hip.dcm"] and "earlier content is kept" in found["hip.dcm"]
    assert "restore the file" in found["hip.dcm"]
    assert "another file with different content" in found["copy.dcm"]  # not the same path: said as before
    with factory() as s:
        assert s.scalar(select(func.count(DicomImage.id))) == 1  # the image of the first content stays


def test_a_thumbs_db_is_not_a_dicom_file(factory, tmp_path):
    d = tmp_path / "dicom"
    make_dicom(d / "hip.dcm", rows=8, cols=8)
    (d / "Thumbs.db").write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 600)  # an OLE file, as Windows writes
    (d / "desktop.ini").write_bytes(b"[.ShellClassInfo]\n")  # shorter than a DICOM preamble
    refresh.ingest_dicom(factory, refresh.discover(d), KEY)
    found = details(factory, "ingest_dicom")
    assert set(found) == {"Thumbs.db", "desktop.ini"}
    for detail in found.values():
        assert detail.startswith("not a DICOM file") and "force" not in detail, detail


def test_an_unreadable_dexa_header_is_listed_as_decoded_with_the_column_map_named(factory, tmp_path):
    d = tmp_path / "dexa"
    d.mkdir()
    (d / "big5.csv").write_bytes("病歷編號,日期,骨密度\nA1,2021-03-01,0.6\n".encode("big5"))
    refresh.ingest_dexa(factory, refresh.discover(d), KEY, Settings(var_dir=tmp_path))
    detail = details(factory, "ingest_dexa")["big5.csv"]
    assert '"病歷編號", "日期", "骨密度"' in detail  # decoded from Big5: checked by eye
    assert "--column-map" in detail


def test_a_reexported_dexa_file_says_its_rows_are_held_already(factory, tmp_path):
    d = tmp_path / "dexa"
    d.mkdir()
    rows = "S1,2021-03-01,0.6,-2.6\nS2,2021-03-02,0.8,-0.9\n"
    (d / "2021.csv").write_text(HEAD + rows)
    settings = Settings(var_dir=tmp_path)
    refresh.ingest_dexa(factory, refresh.discover(d), KEY, settings)
    (d / "2021_again.csv").write_text(HEAD.replace(",", ";") + rows.replace(",", ";"))  # exported again
    again = refresh.ingest_dexa(factory, refresh.discover(d), KEY, settings)
    report = RefreshReport(1, ThisRun(2, StageCounts(), again, StageCounts(),
                                              PairCounts(), ExportCounts()),
                                   refresh.summarise(factory))
    run = report.to_dict()["this_run"]
    assert (run["dexa_exams"], run["duplicates_by_stage"]["dexa"]) == (0, 2)
    (line,) = [ln for ln in report.summary().splitlines() if ln.strip().startswith("duplicates")]
    assert "2 DEXA exams already held" in line and "re-export" in line


def test_box_files_waiting_for_their_image_are_said_and_listed(factory, tmp_path):
    d = tmp_path / "ann"
    d.mkdir()
    (d / "1.2.826.0.1.77.xml").write_bytes(voc("1.2.826.0.1.77.png"))  # its DICOM is not here yet
    (d / "hip_0012.xml").write_bytes(voc("hip_0012.png"))  # names no image by itself
    assert refresh.ingest_annotations(factory, refresh.discover(d)).waiting == 2
    totals = refresh.summarise(factory)
    assert totals.waiting["unmatched_box_files"] == 2
    report = RefreshReport(1, ThisRun(2, *(StageCounts(),) * 3, PairCounts(),
                                              ExportCounts()), totals)
    (line,) = [ln for ln in report.summary().splitlines() if ln.strip().startswith("waiting")]
    assert "2 box files for the image they name (osteo waiting lists them)" in line
    files = {f.path.rsplit("/", 1)[1]: f for f in waiting_box_files(factory)}
    assert files["1.2.826.0.1.77.xml"].names == "1.2.826.0.1.77" and "is ingested yet" in files[
        "1.2.826.0.1.77.xml"].why
    assert files["hip_0012.xml"].names is None and "--annotation-map" in files["hip_0012.xml"].why


def test_a_folder_empty_where_the_last_refresh_found_files_is_a_warning(factory, tmp_path):
    inputs = {"dicom_dir": "/share/dicom", "dexa_dir": "/share/dexa", "annotations_dir": None}
    stages = (StageCounts(files=3412), StageCounts(files=2), StageCounts())
    first = refresh.start_refresh_run(factory, inputs)
    night = refresh.finish_refresh_run(factory, first, ThisRun(3414, *stages, PairCounts(),
                                                                ExportCounts()))
    assert night.this_run.warnings() == [] and night.to_dict()["this_run"]["files_by_folder"]["dicom"] == 3412

    second = refresh.start_refresh_run(factory, inputs)  # the share is not mounted: no DICOM tonight
    empty = ThisRun(2, StageCounts(), *stages[1:], PairCounts(), ExportCounts())
    report = refresh.finish_refresh_run(factory, second, empty)
    assert report.this_run.empty_folders == (EmptyFolder("dicom", first, 3412),)
    (warning,) = report.this_run.warnings()
    assert "--dicom folder held no file" in warning and "3412" in warning and "mounted" in warning
    assert report.summary().splitlines()[0] == f"WARNING         {warning}"
    stored = report.to_dict()["this_run"]
    assert stored["warnings"] == [warning] and stored["empty_folders"][0]["last_files"] == 3412
    assert json.loads(json.dumps(stored)) == stored  # what the refresh_run row keeps
    # still empty the next night: still the share, still a warning
    third = refresh.start_refresh_run(factory, inputs)
    assert refresh.finish_refresh_run(factory, third, empty).this_run.empty_folders == report.this_run.empty_folders
    # an empty folder that no refresh found files in says nothing (a new, still empty share)
    new = refresh.start_refresh_run(factory, {**inputs, "dicom_dir": "/new-share/dicom"})
    assert refresh.finish_refresh_run(factory, new, empty).this_run.warnings() == []
