"""What the commands say where a person was left guessing (issue 23, item 8): the quarantine listing's
columns and line numbers, `osteo waiting`, `osteo refresh --strict` on a folder empty where the last night
found files, and `osteo lineage refreshes` with the options a refresh ran under and what it located."""

from __future__ import annotations

import json
import re

from osteo_cli.main import main
from tests.dicom_factory import make_dicom
from tests.helpers import isolated_settings
from tests.osteo.test_annotations import voc

HEAD = "PatientID,ExamDate,Neck_BMD,T-score\n"


def run(capsys, *argv: str, code: int = 0) -> str:
    capsys.readouterr()
    assert main(list(argv)) == code
    return capsys.readouterr().out


def _ingest(tmp_path):
    from db import create_schema
    from osteo.ingest import refresh
    from osteo.settings import get_settings, session_factory

    settings = get_settings()
    factory = session_factory(settings, create=True)
    create_schema(factory.kw["bind"])
    key = settings.resolved_pseudonym_key()
    refresh.ingest_dicom(factory, refresh.discover(tmp_path / "dicom"), key)
    refresh.ingest_dexa(factory, refresh.discover(tmp_path / "dexa"), key, settings)
    refresh.ingest_annotations(factory, refresh.discover(tmp_path / "ann"))


def test_the_quarantine_listing_keeps_its_columns_apart_and_says_the_files_line(tmp_path, capsys):
    make_dicom(tmp_path / "dicom" / "no_study.dcm", rows=8, cols=8, drop=("StudyInstanceUID",))
    (tmp_path / "dexa").mkdir()
    (tmp_path / "dexa" / "rows.csv").write_text(HEAD + "R1,2021-01-02,0.6,-2.2\nR2,someday,0.6,-2.2\n")
    (tmp_path / "ann").mkdir()
    with isolated_settings(tmp_path / "home"):
        _ingest(tmp_path)
        listing = run(capsys, "quarantine").splitlines()
    (dicom,) = [ln for ln in listing if "no_study.dcm" in ln]
    assert re.search(r"missing_tag:StudyInstanceUID  +/\S+/no_study\.dcm \(whole file\)", dicom), dicom
    (dexa,) = [ln for ln in listing if "rows.csv" in ln]
    # R2 is the second data row, on the file's third line (a spreadsheet's row 3)
    assert re.search(r"bad_date  +/\S+/rows\.csv line 3 \(data row 2\)", dexa), dexa


def test_osteo_waiting_lists_the_box_files_that_wait_for_their_image(tmp_path, capsys):
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dexa").mkdir()
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "1.2.826.0.1.99.xml").write_bytes(voc("1.2.826.0.1.99.png"))
    with isolated_settings(tmp_path / "home"):
        _ingest(tmp_path)
        payload = json.loads(run(capsys, "waiting", "--json"))
        human = run(capsys, "waiting")
    (f,) = payload["box_files"]
    assert payload["count"] == 1 and f["path"].endswith("1.2.826.0.1.99.xml") and f["names"] == "1.2.826.0.1.99"
    assert human.startswith("1 box file waits for the image") and "names 1.2.826.0.1.99" in human


def test_strict_refresh_fails_on_an_empty_folder_that_held_files(tmp_path, capsys, prefect_harness):
    dicom, dexa = tmp_path / "dicom", tmp_path / "dexa"
    make_dicom(dicom / "hip.dcm", patient_id="S1", rows=8, cols=8)
    dexa.mkdir()
    (dexa / "exams.csv").write_text(HEAD + "S1,2021-03-01,0.6,-2.6\n")
    folders = ("--dicom", str(dicom), "--dexa", str(dexa))
    with isolated_settings(tmp_path / "home"):
        night = json.loads(run(capsys, "refresh", *folders, "--strict", "--json"))
        assert night["this_run"]["warnings"] == [] and night["this_run"]["images"] == 1

        (dicom / "hip.dcm").unlink()  # the share is not mounted tonight
        empty = run(capsys, "refresh", *folders, "--retry-quarantined").splitlines()  # without --strict: exit 0
        assert empty[0].startswith("WARNING") and "--dicom folder held no file" in empty[0]
        assert f"refresh #{night['refresh_id']} found 1" in empty[0]
        strict = json.loads(run(capsys, "refresh", *folders, "--strict", "--json", code=1))
        assert strict["this_run"]["empty_folders"] == [
            {"folder": "dicom", "last_refresh": night["refresh_id"], "last_files": 1}]

        refreshes = re.split(r"^refresh #", run(capsys, "lineage", "refreshes"), flags=re.M)[1:]  # newest first
    assert "WARNING" in refreshes[0] and "--retry-quarantined" in refreshes[1]
    assert "--retry-quarantined" not in refreshes[2] and "--strict" not in "".join(refreshes)
    assert all("located 0 (no localiser registered)" in r for r in refreshes)
