"""Ingest of DICOM headers, DEXA CSVs and VOC boxes: validation, quarantine, idempotency."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time

import pytest
from sqlalchemy import func, select

from db import make_session_factory
from db.models import Annotation, DexaExam, DicomImage, Patient, Quarantine, SourceFile
from osteo.etl.dexa import parse_date, parse_dexa_csv, resolve_columns
from osteo.etl.errors import InputError
from osteo.ingest import refresh
from osteo.settings import Settings
from tests.dicom_factory import make_dicom

KEY = b"test-key"


def count(factory, model) -> int:
    with factory() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("text,expected", [
    ("2023-12-16", dt.date(2023, 12, 16)), ("2023/12/16", dt.date(2023, 12, 16)), ("20231216", dt.date(2023, 12, 16)),
    ("112/12/16", dt.date(2023, 12, 16)), ("107/1/5", dt.date(2018, 1, 5)), ("1121216", dt.date(2023, 12, 16)),
])
def test_dates_in_every_hospital_format(text, expected):
    assert parse_date(text) == expected


@pytest.mark.parametrize("bad", ["2021-13-45", "16/12/2023x", "", "yesterday"])
def test_bad_dates_raise(bad):
    with pytest.raises(ValueError):
        parse_date(bad)


def test_headers_are_recognised_ignoring_case_spaces_and_punctuation():
    cols = resolve_columns(["Patient ID", "exam-date", "NECK_BMD", "T-score", "Side", "姓名"])
    assert cols == {"patient_id": 0, "exam_date": 1, "neck_bmd": 2, "t_score": 3, "side": 4}
    with pytest.raises(InputError) as err:
        resolve_columns(["who", "when", "what"])
    assert err.value.reason == "unrecognised_columns"
    assert resolve_columns(["MRN_X", "Fecha", "T"], {"MRN_X": "patient_id", "Fecha": "exam_date", "T": "t_score"}) == {
        "patient_id": 0, "exam_date": 1, "t_score": 2}


def test_big5_roc_dates_derived_t_and_bad_rows():
    csv_text = (
        "病歷號,姓名,檢查日期,股骨頸BMD,T值\n"
        "A1,王小明,112/12/16,0.600,\n"  # T derived from BMD: (0.6 - 0.858) / 0.12
        ",李,112/12/17,0.7,-1.3\n"  # no patient
        "A2,陳,2021-13-45,0.7,-1.3\n"  # impossible date
        "A3,林,110/01/02,N/A,\n"  # nothing usable
        "A4,黃,110/01/03,0.7,-15\n"  # implausible T
        "A5,張,110/01/04\n"  # short row
        "A6,吳,20220505,,-2.5\n"
        "A7,周,20220506,0.7x,\n"  # not a number
    )
    parsed = parse_dexa_csv(csv_text.encode("big5"), KEY)
    assert [r.source_row for r in parsed.rows] == [1, 7]
    assert parsed.rows[0].t_score == pytest.approx((0.6 - 0.858) / 0.12) and parsed.rows[0].t_score_derived
    assert parsed.rows[0].exam_date == dt.date(2023, 12, 16)
    assert {r: reason for r, reason, _ in parsed.errors} == {
        2: "missing_patient_id", 3: "bad_date", 4: "missing_bmd_and_t", 5: "t_score_out_of_range", 6: "short_row",
        8: "bad_number"}
    assert all("A1" not in str(v) and "王小明" not in str(v) for r in parsed.rows for v in dataclasses.astuple(r))


def test_utf8_bom_layout():
    data = "\ufeffChartNo,StudyDate,NeckBMD,Neck_T,Side,Z-score\nB7,2020/02/03,0.812,-0.4,R,0.1\n".encode("utf-8")
    (row,) = parse_dexa_csv(data, KEY).rows
    assert row.side == "R" and row.z_score == 0.1 and not row.t_score_derived


@pytest.fixture
def factory(engine):
    return make_session_factory(engine)


def test_dicom_ingest_quarantines_each_bad_kind_and_keeps_the_good(factory, tmp_path):
    good = make_dicom(tmp_path / "in" / "good.dcm")
    make_dicom(tmp_path / "in" / "nodate.dcm", drop=("StudyDate",))
    make_dicom(tmp_path / "in" / "nolat.dcm", drop=("ImageLaterality",))
    (tmp_path / "in" / "notes.txt").write_text("not an image " * 20)
    whole = (tmp_path / "in" / "good.dcm").read_bytes()
    (tmp_path / "in" / "cut.dcm").write_bytes(whole[:300])
    paths = refresh.discover(tmp_path / "in")
    counts = refresh.ingest_dicom(factory, paths, KEY)
    assert counts.added == 1 and counts.quarantined == 4
    with factory() as s:
        reasons = dict(s.execute(select(Quarantine.source_path, Quarantine.reason)).all())
        img = s.scalar(select(DicomImage))
        patient = s.get(Patient, img.patient_id)
    assert img.sop_instance_uid == good and img.age_at_exam == 71 and img.laterality == "L"
    assert patient.patient_key.startswith("P") and "A1234567" not in patient.patient_key
    by_name = {p.rsplit("/", 1)[1]: r for p, r in reasons.items()}
    assert by_name["nodate.dcm"] == "missing_tag:StudyDate"
    assert by_name["nolat.dcm"] == "missing_tag:ImageLaterality"
    assert by_name["notes.txt"] == "not_dicom"
    assert by_name["cut.dcm"] in ("truncated", "not_dicom", "missing_tag:SOPInstanceUID")
    # a rerun adds nothing; a copy of a known file under another path is not a new image
    again = refresh.ingest_dicom(factory, paths, KEY)
    assert again.added == 0 and again.quarantined == 0 and again.already_known == 5
    (tmp_path / "in2").mkdir()
    (tmp_path / "in2" / "copy.dcm").write_bytes(whole)
    copy = refresh.ingest_dicom(factory, refresh.discover(tmp_path / "in2"), KEY)
    assert copy.duplicates == 1 and count(factory, DicomImage) == 1
    # the same SOP Instance UID with other content is a conflict, quarantined
    make_dicom(tmp_path / "in3" / "clash.dcm", sop_uid=good, study_date="20200101")
    clash = refresh.ingest_dicom(factory, refresh.discover(tmp_path / "in3"), KEY)
    assert clash.quarantined == 1 and count(factory, DicomImage) == 1
    assert count(factory, Quarantine) == 5


def test_the_dicom_reader_is_silent_on_malformed_values(factory, tmp_path, capfd, caplog):
    """pydicom warns and logs on values that break their VR, quoting some of them ("Invalid value
    for VR UI: '1.2.826.0.1.'"): on a hospital's files that is console noise at best and a quoted
    header value at worst. Our reads keep it quiet: the file with a valid UID is taken, the one whose
    UID is not a UID is quarantined (osteo/etl/values.py), and neither says a word."""
    import logging
    import warnings

    from pydicom import config

    from osteo.etl.imaging import read_dicom

    raw_id, bad_uid = "B987654321-" + "7" * 60, "1.2.826.0.1.3680043.99.1."  # LO over 64; UI ending in '.'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the writer warns too: that is the test's own doing
        make_dicom(tmp_path / "in" / "odd.dcm", patient_id=raw_id, sop_uid=bad_uid)
        good_uid = make_dicom(tmp_path / "in" / "long.dcm", patient_id=raw_id)
    capfd.readouterr()
    caplog.clear()
    mode = config.settings.reading_validation_mode
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="pydicom"):
        warnings.simplefilter("always")
        counts = refresh.ingest_dicom(factory, refresh.discover(tmp_path / "in"), KEY)
        assert read_dicom(tmp_path / "in" / "odd.dcm").Rows == 64
    out, err = capfd.readouterr()
    assert (counts.added, counts.quarantined) == (1, 1), counts
    assert not [str(w.message) for w in caught] and not caplog.records and not (out + err).strip()
    assert config.settings.reading_validation_mode == mode  # validation is back for everyone else
    with factory() as s:
        assert s.scalar(select(DicomImage.sop_instance_uid)) == good_uid
        reason, detail = s.execute(select(Quarantine.reason, Quarantine.detail)).one()
    assert reason == "bad_tag:SOPInstanceUID" and bad_uid not in detail


def test_parallel_header_reading_matches_serial(tmp_path):
    from osteo.etl.dicom_headers import read_headers

    for i in range(70):
        make_dicom(tmp_path / f"{i}.dcm", patient_id=f"X{i}", rows=8, cols=8)
        # a minute old: a file younger than the trusted-stamp age gets no mtime_ns, and the two reads
        # below could fall either side of that age on a loaded machine
        os.utime(tmp_path / f"{i}.dcm", ns=(time.time_ns() - 60 * 10**9,) * 2)
    paths = refresh.discover(tmp_path)
    assert read_headers(paths, KEY, workers=2) == read_headers(paths, KEY, workers=1)


def test_dexa_ingest_rerun_duplicates_and_conflicts(factory, tmp_path):
    settings = Settings(var_dir=tmp_path)
    d = tmp_path / "dexa"
    d.mkdir()
    (d / "a.csv").write_text("PatientID,ExamDate,Neck_BMD,T-score\nA1,2021-01-02,0.6,-2.2\nA2,bad,0.6,-2.2\n")
    first = refresh.ingest_dexa(factory, refresh.discover(d), KEY, settings)
    again = refresh.ingest_dexa(factory, refresh.discover(d), KEY, settings)
    assert first.added == 1 and first.quarantined == 1 and again.already_known == 1 and again.added == 0
    # a later export repeating the exam adds nothing; one with other values for it is quarantined
    (d / "b.csv").write_text("PatientID,ExamDate,Neck_BMD,T-score\nA1,2021/01/02,0.6,-2.2\nA1,110/01/02,0.5,-3.0\n"
                             "A1,2022-01-02,0.5,-3.0\n")
    later = refresh.ingest_dexa(factory, refresh.discover(d), KEY, settings)
    assert later.duplicates == 1 and later.quarantined == 1 and later.added == 1
    assert count(factory, DexaExam) == 2
    with factory() as s:
        reasons = sorted(s.scalars(select(Quarantine.reason)))
    assert reasons == ["bad_date", "conflicting_exam"]
    # the same exam with a side in one export and none in another is still one exam
    (d / "s.csv").write_text("PatientID,ExamDate,Neck_BMD,T-score,Side\nA9,2020-09-18,0.51,-2.9,R\n")
    (d / "t.csv").write_text("PatientID,ExamDate,Neck_BMD,T-score\nA9,109/09/18,0.51,-2.9\n")
    sided = refresh.ingest_dexa(factory, [str(d / "s.csv"), str(d / "t.csv")], KEY, settings)
    assert sided.added == 1 and sided.duplicates == 1
    assert count(factory, DexaExam) == 3
    # an unusable file is quarantined as a whole, the others still count
    (d / "c.csv").write_text("foo,bar\n1,2\n")
    bad = refresh.ingest_dexa(factory, [str(d / "c.csv")], KEY, settings)
    assert bad.quarantined == 1


def test_quarantine_details_name_the_column_and_rule_never_the_value(factory, tmp_path):
    """docs/privacy.md: a quarantine detail says which column broke which rule, and quotes no cell."""
    d = tmp_path / "dexa"
    d.mkdir()
    (d / "a.csv").write_text("PatientID,ExamDate,Neck_BMD,T-score\n"
                             "Q1,2021-01-02,0.6,-12.4321\n"  # T-score beyond +-10
                             "Q2,2021-01-03,-0.4321,-2.2\n"  # negative BMD
                             "Q3,1999/99/99,0.6,-2.2\n"  # not a date
                             "Q4,2021-01-04,2.4321,\n")  # T derived from BMD: (2.4321 - 0.858) / 0.12 = 13.1175
    # no header row: the first patient's row would be read as the header
    (d / "b.csv").write_text("Q5-CHART-9876,CHEN MEI LING,2021-01-05,0.6,-2.2\n")
    counts = refresh.ingest_dexa(factory, refresh.discover(d), KEY, Settings(var_dir=tmp_path))
    assert counts.quarantined == 5 and counts.added == 0
    with factory() as s:
        found = sorted(s.execute(select(Quarantine.reason, Quarantine.detail)).all())
    assert [r for r, _ in found] == ["bad_date", "bmd_out_of_range", "t_score_out_of_range", "t_score_out_of_range",
                                     "unrecognised_columns"]
    details = dict(found[:2]) | {"t": found[2][1] + " / " + found[3][1], "columns": found[4][1]}
    assert "exam date" in details["bad_date"] and "BMD" in details["bmd_out_of_range"] and "T-score" in details["t"]
    for value in ("12.4321", "0.4321", "1999", "99/99", "2.4321", "13.1", "Q5", "9876", "CHEN", "MEI LING"):
        assert not [r for r, detail in found if value in detail], (value, found)


def test_annotations_ingest_bad_xml_and_updates(factory, tmp_path):
    def voc(uid: str, x0: int) -> str:
        return (f"<annotation><filename>{uid}.png</filename><object><name>femoral_neck</name><bndbox>"
                f"<xmin>{x0}</xmin><ymin>5</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>")

    make_dicom(tmp_path / "dicom" / "a.dcm", sop_uid="1.2.3")  # a box waits for its image (its side)
    refresh.ingest_dicom(factory, refresh.discover(tmp_path / "dicom"), b"k" * 32)
    d = tmp_path / "ann"
    d.mkdir()
    (d / "1.2.3.xml").write_text(voc("1.2.3", 10))
    (d / "broken.xml").write_text("<annotation><filename>")
    (d / "bomb.xml").write_text('<!DOCTYPE x [<!ENTITY a "aaaa">]><annotation>&a;</annotation>')
    first = refresh.ingest_annotations(factory, refresh.discover(d))
    assert first.added == 1 and first.quarantined == 2
    assert refresh.ingest_annotations(factory, refresh.discover(d)).already_known == 3
    (d / "1.2.3.xml").write_text(voc("1.2.3", 12))  # a corrected box replaces the old one
    assert refresh.ingest_annotations(factory, refresh.discover(d)).updated == 1
    with factory() as s:
        ann = s.scalar(select(Annotation))
        assert (ann.box_xmin, ann.box_xmax) == (12, 40)
        assert s.scalar(select(func.count()).select_from(SourceFile).where(SourceFile.kind == "annotation")) == 4
