"""DEXA exports as hospitals write them: any of , ; tab, quoted fields, UTF-8 BOM or Big5, Excel .xlsx;
a file type we cannot read is quarantined and named, never ignored."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from sqlalchemy import select

from db import make_session_factory
from db.models import DexaExam, Quarantine, SourceFile
from osteo.etl.dexa import parse_dexa_file, sniff_delimiter
from osteo.etl.errors import InputError
from osteo.etl.pseudonym import pseudonymise
from osteo.ingest import refresh
from osteo.ingest.report import ExportCounts, PairCounts, Problem, RefreshReport, StageCounts, ThisRun
from osteo.settings import Settings

KEY = b"test-key"


def _exams(parsed) -> list[tuple]:
    return [(r.patient_key, r.exam_date, r.side, r.neck_bmd, r.t_score) for r in parsed.rows]


EXPECTED = [(pseudonymise("A1", KEY), dt.date(2021, 1, 2), "L", 0.6, -2.2),
            (pseudonymise("A2", KEY), dt.date(2023, 12, 16), "R", 0.7, -1.3)]


@pytest.mark.parametrize("name,data", [
    ("semi.csv", b"PatientID;ExamDate;Neck_BMD;T-score;Side\nA1;2021-01-02;0.6;-2.2;L\nA2;112/12/16;0.7;-1.3;R\n"),
    ("tab.txt", b"PatientID\tExamDate\tNeck_BMD\tT-score\tSide\nA1\t2021-01-02\t0.6\t-2.2\tL\n"
     b"A2\t112/12/16\t0.7\t-1.3\tR\n"),
    ("tab.tsv", b"PatientID\tExamDate\tNeck_BMD\tT-score\tSide\nA1\t2021-01-02\t0.6\t-2.2\tL\n"
     b"A2\t112/12/16\t0.7\t-1.3\tR\n"),
    # quoted fields holding the other delimiters: a name column with a comma and a semicolon in it
    ("quoted.csv", (b'"PatientID","Name, full","ExamDate","Neck_BMD","T-score","Side"\n'
                    b'"A1","Chen, Mei; Ling","2021-01-02","0.6","-2.2","L"\n'
                    b'"A2","Lin; Wang, Hua","112/12/16","0.7","-1.3","R"\n')),
    ("bom-semi.csv", "\ufeffChartNo;StudyDate;NeckBMD;Neck_T;Side\nA1;2021/01/02;0.6;-2.2;L\nA2;1121216;0.7;-1.3;R\n"
     .encode("utf-8")),
    ("big5-tab.csv", "病歷號\t姓名\t檢查日期\t股骨頸BMD\tT值\t左右\nA1\t王小明\t110/01/02\t0.6\t-2.2\tL\n"
     "A2\t李\t112/12/16\t0.7\t-1.3\tR\n".encode("big5")),
    ("big5-comma.csv", "病歷號,姓名,檢查日期,股骨頸BMD,T值,左右\nA1,王小明,20210102,0.6,-2.2,L\n"
     "A2,李,112/12/16,0.7,-1.3,R\n".encode("big5")),
], ids=lambda v: v if isinstance(v, str) else "")
def test_every_delimiter_and_encoding_reads_the_same_exams(name, data):
    parsed = parse_dexa_file(name, data, KEY)
    assert parsed.errors == [] and _exams(parsed) == EXPECTED


def test_the_delimiter_is_the_headers_not_a_decimal_comma_in_the_rows():
    assert sniff_delimiter("PatientID;ExamDate;T-score\nA1;2021-01-02;-2,2\n") == ";"
    assert sniff_delimiter("PatientID,ExamDate,T-score\n") == ","
    assert sniff_delimiter("\n\nPatientID\tExamDate\tT-score\n") == "\t"
    assert sniff_delimiter("PatientID|ExamDate|T-score\n") == ","  # not one of ours: a comma, as before
    assert sniff_delimiter("") == ","


def _xlsx(rows: list[list], *, extra_sheet: bool = False) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    if extra_sheet:  # only the first sheet is read
        book.create_sheet("notes").append(["PatientID", "ExamDate", "T-score"])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def test_an_excel_workbook_reads_like_its_csv():
    data = _xlsx([["PatientID", "ExamDate", "Neck_BMD", "T-score", "Side", "Age"],
                  ["A1", dt.datetime(2021, 1, 2), 0.6, -2.2, "L", 71],  # an Excel date cell
                  ["A2", "112/12/16", 0.7, -1.3, "R", None],  # a date typed as ROC text
                  [None, None, None, None, None, None],  # an empty row is skipped
                  [12345, dt.date(2022, 5, 5), None, -2.5, None, 66.0],  # a chart number typed as a number
                  ["A3", "not a date", 0.7, -1.3, "R", None]], extra_sheet=True)
    parsed = parse_dexa_file("exams.xlsx", data, KEY)
    assert _exams(parsed)[:2] == EXPECTED
    assert parsed.rows[0].age_at_exam == 71
    # the same key as the CSV's "12345": a number cell is not "12345.0" or "12345"
    assert parsed.rows[2].patient_key == pseudonymise("12345", KEY)
    assert parsed.rows[2].exam_date == dt.date(2022, 5, 5) and parsed.rows[2].side == "-"
    assert [r.source_row for r in parsed.rows] == [1, 2, 4]
    assert [(row, reason) for row, reason, _ in parsed.errors] == [(5, "bad_date")]


def test_a_workbook_with_other_columns_is_unrecognised_like_a_csv():
    with pytest.raises(InputError) as err:
        parse_dexa_file("exams.xlsx", _xlsx([["who", "when", "what"], ["A1", "2021-01-02", "-2.2"]]), KEY)
    assert err.value.reason == "unrecognised_columns"


@pytest.mark.parametrize("name,data,reason", [
    ("report.pdf", b"%PDF-1.4\n...", "unsupported_file_type"),
    ("old.xls", b"\xd0\xcf\x11\xe0 legacy", "unsupported_file_type"),
    ("EXPORT", b"PatientID,ExamDate,T-score\nA1,2021-01-02,-2.2\n", "unsupported_file_type"),
    ("broken.xlsx", b"PK\x03\x04 not a workbook", "unreadable_xlsx"),
    ("text.xlsx", b"PatientID,ExamDate,T-score\n", "unreadable_xlsx"),
])
def test_a_file_we_cannot_read_says_so_plainly(name, data, reason):
    with pytest.raises(InputError) as err:
        parse_dexa_file(name, data, KEY)
    assert err.value.reason == reason and err.value.detail and "A1" not in err.value.detail


@pytest.fixture
def factory(engine):
    return make_session_factory(engine)


def test_every_file_of_the_folder_is_counted_and_a_bad_one_named(factory, tmp_path):
    d = tmp_path / "dexa"
    d.mkdir()
    (d / "a.csv").write_text("PatientID;ExamDate;Neck_BMD;T-score\nA1;2021-01-02;0.6;-2.2\n")
    (d / "b.xlsx").write_bytes(_xlsx([["PatientID", "ExamDate", "T-score"], ["B1", dt.datetime(2022, 3, 4), -1.0]]))
    (d / "report.pdf").write_bytes(b"%PDF-1.4\n")
    (d / "sub").mkdir()
    (d / "sub" / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    (d / ".DS_Store").write_bytes(b"\x00")  # hidden: not an export
    paths = refresh.discover(d)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["a.csv", "b.xlsx", "report.pdf", "old.xls"]
    counts = refresh.ingest_dexa(factory, paths, KEY, Settings(var_dir=tmp_path))
    assert (counts.files, counts.added, counts.quarantined) == (4, 2, 2)
    assert counts.problems == (Problem(str(d / "report.pdf"), "ingest_dexa", "unsupported_file_type"),
                               Problem(str(d / "sub" / "old.xls"), "ingest_dexa", "unsupported_file_type"))
    with factory() as s:
        assert sorted(s.scalars(select(Quarantine.reason))) == ["unsupported_file_type"] * 2
        assert {p.rsplit("/", 1)[1]: st for p, st in s.execute(select(SourceFile.path, SourceFile.status))} == {
            "a.csv": "ingested", "b.xlsx": "ingested", "report.pdf": "quarantined", "old.xls": "quarantined"}
        assert len(s.scalars(select(DexaExam)).all()) == 2
    # a rerun names nothing: the problems are this run's
    assert refresh.ingest_dexa(factory, paths, KEY, Settings(var_dir=tmp_path)).problems == ()


def test_the_summary_names_a_bad_file_first_and_json_lists_it(factory):
    bad = Problem("/in/dexa/report.pdf", "ingest_dexa", "unsupported_file_type")
    run = ThisRun(3, StageCounts(), StageCounts(files=3, quarantined=1, problems=(bad,)) + StageCounts(files=1),
                  StageCounts(), PairCounts(), ExportCounts())
    report = RefreshReport(1, run, refresh.summarise(factory))
    lines = report.summary().splitlines()
    assert lines[0].startswith("PROBLEMS") and "1 file" in lines[0]
    assert "unsupported_file_type" in lines[1] and "/in/dexa/report.pdf" in lines[1]
    d = report.to_dict()["this_run"]
    assert d["problems"] == [{"path": "/in/dexa/report.pdf", "stage": "ingest_dexa", "reason": "unsupported_file_type"}]
    assert d["files_seen"] == 3 and d["quarantined"] == 1  # the existing keys kept
    quiet = RefreshReport(1, ThisRun(0, *(StageCounts(),) * 3, PairCounts(), ExportCounts()), report.totals)
    assert quiet.summary().startswith("this run") and quiet.to_dict()["this_run"]["problems"] == []
