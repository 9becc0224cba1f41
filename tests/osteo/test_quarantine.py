"""A fix is picked up: a quarantined input is judged again when its column map, the settings its rules
read or the code changed (or on --retry-quarantined); what passes leaves the active quarantine, and
its entry stays for the auditors. `osteo quarantine` lists the entries."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import make_session_factory
from db.models import DexaExam, Quarantine, SourceFile
from osteo.ingest import refresh
from osteo.ingest.quarantine import list_quarantine
from osteo.ingest.report import Problem
from osteo.settings import Settings

KEY = b"test-key"
OTHER_LAYOUT = "Chart,When,BMD_neck,TS\nA1,2021-01-02,0.6,-2.2\nA2,2021-02-03,0.7,-1.2\n"
COLUMN_MAP = {"Chart": "patient_id", "When": "exam_date", "BMD_neck": "neck_bmd", "TS": "t_score"}
GOOD = "PatientID,ExamDate,Neck_BMD,T-score\nG1,2021-03-04,0.8,-0.9\n"


@pytest.fixture
def factory(engine):
    return make_session_factory(engine)


@pytest.fixture
def dexa(tmp_path) -> Path:
    d = tmp_path / "dexa"
    d.mkdir()
    (d / "good.csv").write_text(GOOD)
    (d / "other.csv").write_text(OTHER_LAYOUT)
    return d


def entries(factory) -> list[Quarantine]:
    with factory() as s:
        return s.scalars(select(Quarantine).order_by(Quarantine.id)).all()


def n_exams(factory) -> int:
    with factory() as s:
        return s.scalar(select(func.count(DexaExam.id)))


def test_a_column_map_given_later_is_picked_up_and_the_entry_resolved(factory, dexa, tmp_path):
    settings, paths, other = Settings(var_dir=tmp_path), refresh.discover(dexa), str(dexa / "other.csv")
    first = refresh.ingest_dexa(factory, paths, KEY, settings)
    assert (first.added, first.quarantined) == (1, 1)
    assert first.problems == (Problem(other, "ingest_dexa", "unrecognised_columns"),)
    assert refresh.summarise(factory).quarantined == 1

    # nothing changed: a known file is not read again, and nothing is named
    same = refresh.ingest_dexa(factory, paths, KEY, settings)
    assert (same.already_known, same.retried, same.quarantined, same.problems) == (2, 0, 0, ())

    fixed = refresh.ingest_dexa(factory, paths, KEY, settings, COLUMN_MAP)
    assert (fixed.retried, fixed.already_known, fixed.added, fixed.resolved) == (1, 1, 2, 1)
    assert (fixed.quarantined, fixed.problems) == (0, ())
    assert n_exams(factory) == 3
    with factory() as s:
        assert s.scalar(select(SourceFile.status).where(SourceFile.path == other)) == "ingested"
    (entry,) = entries(factory)  # resolved, not deleted
    assert entry.reason == "unrecognised_columns" and entry.resolved_at is not None
    assert entry.first_seen <= entry.last_seen <= entry.resolved_at
    assert refresh.summarise(factory).quarantined == 0 and refresh.quarantine_table(factory) == []
    assert list_quarantine(factory) == []
    (listed,) = list_quarantine(factory, include_resolved=True)
    assert (listed.path, listed.reason, listed.resolved_at) == (other, "unrecognised_columns", entry.resolved_at)

    # the same map again: nothing is quarantined, so nothing is read again
    rerun = refresh.ingest_dexa(factory, paths, KEY, settings, COLUMN_MAP)
    assert (rerun.already_known, rerun.retried, rerun.added) == (2, 0, 0)


def test_retry_quarantined_judges_an_unchanged_input_again_and_keeps_one_entry(factory, tmp_path):
    d = tmp_path / "dexa"
    d.mkdir()
    (d / "bad.csv").write_text("foo,bar\n1,2\n")
    (d / "rows.csv").write_text("PatientID,ExamDate,Neck_BMD,T-score\nR1,2021-01-02,0.6,-2.2\nR2,bad,0.6,-2.2\n")
    settings, paths = Settings(var_dir=tmp_path), refresh.discover(d)
    first = refresh.ingest_dexa(factory, paths, KEY, settings)
    assert (first.added, first.quarantined) == (1, 2)
    before = {(e.source_row, e.reason): e.last_seen for e in entries(factory)}

    again = refresh.ingest_dexa(factory, paths, KEY, settings, retry_quarantined=True)
    assert (again.retried, again.added, again.duplicates, again.quarantined, again.resolved) == (2, 0, 0, 0, 0)
    assert again.problems == (Problem(str(d / "bad.csv"), "ingest_dexa", "unrecognised_columns"),)  # named again
    after = entries(factory)
    assert len(after) == 2 and all(e.resolved_at is None for e in after)  # once each, still quarantined
    assert all(e.last_seen >= before[(e.source_row, e.reason)] and e.first_seen <= e.last_seen for e in after)
    assert n_exams(factory) == 1 and refresh.summarise(factory).quarantined == 2
    with factory() as s:
        assert s.scalar(select(SourceFile.status).where(SourceFile.path == str(d / "bad.csv"))) == "quarantined"


def test_a_changed_setting_or_code_version_judges_again(factory, tmp_path, monkeypatch):
    d = tmp_path / "dexa"
    d.mkdir()
    # T derived from BMD: (2.2 - 0.858) / 0.120 = 11.2, beyond +-10; with SD 0.2 it is 6.7
    (d / "derived.csv").write_text("PatientID,ExamDate,Neck_BMD,T-score\nD1,2021-01-02,2.2,\nD2,2021-01-03,0.7,\n")
    paths = refresh.discover(d)
    first = refresh.ingest_dexa(factory, paths, KEY, Settings(var_dir=tmp_path))
    assert (first.added, first.quarantined) == (1, 1)
    (entry,) = entries(factory)
    old_context = entry.context_digest

    import osteo.ingest.quarantine

    monkeypatch.setattr(osteo.ingest.quarantine, "code_version", lambda: "9.9+new-code")
    new_code = refresh.ingest_dexa(factory, paths, KEY, Settings(var_dir=tmp_path))
    assert (new_code.retried, new_code.added, new_code.duplicates, new_code.resolved) == (1, 0, 0, 0)
    (entry,) = entries(factory)
    assert entry.resolved_at is None and entry.context_digest not in (None, old_context)

    wider = refresh.ingest_dexa(factory, paths, KEY, Settings(var_dir=tmp_path, bmd_young_sd=0.2))
    assert (wider.retried, wider.added, wider.resolved, wider.quarantined) == (1, 1, 1, 0)
    assert n_exams(factory) == 2 and all(e.resolved_at is not None for e in entries(factory))


def test_a_box_file_is_judged_again_under_new_code_or_when_asked(factory, tmp_path, monkeypatch):
    import osteo.ingest.quarantine

    d = tmp_path / "ann"
    d.mkdir()
    (d / "broken.xml").write_text("<annotation><filename>")
    first = refresh.ingest_annotations(factory, refresh.discover(d))
    assert first.quarantined == 1
    assert refresh.ingest_annotations(factory, refresh.discover(d)).already_known == 1  # same code: not again
    asked = refresh.ingest_annotations(factory, refresh.discover(d), retry_quarantined=True)
    assert (asked.retried, asked.quarantined, asked.resolved) == (1, 0, 0)
    monkeypatch.setattr(osteo.ingest.quarantine, "code_version", lambda: "9.9+new-code")
    new_code = refresh.ingest_annotations(factory, refresh.discover(d))
    assert (new_code.retried, new_code.quarantined, new_code.resolved) == (1, 0, 0)
    (entry,) = entries(factory)  # still bad: one entry, still active
    assert entry.stage == "ingest_annotation" and entry.resolved_at is None
    with factory() as s:
        assert s.scalar(select(SourceFile.status)) == "quarantined"


def test_a_dicom_taken_in_by_new_scope_rules_is_picked_up(factory, tmp_path):
    from db.models import DicomImage
    from osteo.etl.scope import ScopeRules
    from tests.dicom_factory import make_dicom

    d = tmp_path / "dicom"
    d.mkdir()
    make_dicom(d / "who.dcm", patient_id="W1", body_part=None, rows=8, cols=8)  # a radiograph of what?
    make_dicom(d / "hip.dcm", patient_id="H1", rows=8, cols=8)
    paths = refresh.discover(d)
    first = refresh.ingest_dicom(factory, paths, KEY)
    assert (first.added, first.quarantined) == (1, 1)
    assert refresh.ingest_dicom(factory, paths, KEY).already_known == 2  # same rules, same code: not again
    asked = refresh.ingest_dicom(factory, paths, KEY, retry_quarantined=True)
    assert (asked.retried, asked.already_known, asked.quarantined, asked.added) == (1, 1, 0, 0)
    (entry,) = entries(factory)
    assert entry.reason == "unknown_body_part" and entry.resolved_at is None

    taken = refresh.ingest_dicom(factory, paths, KEY, scope=ScopeRules(accept_unknown_body_part=True))
    assert (taken.retried, taken.added, taken.resolved, taken.quarantined) == (1, 1, 1, 0)
    with factory() as s:
        assert s.scalar(select(func.count(DicomImage.id))) == 2
        assert set(s.scalars(select(SourceFile.status))) == {"ingested"}
        assert s.scalar(select(func.count(SourceFile.id))) == 2  # the retried file kept its row
    (entry,) = entries(factory)
    assert entry.resolved_at is not None and refresh.summarise(factory).quarantined == 0


def test_the_quarantine_command_lists_and_filters(tmp_path, capsys):
    from db import create_schema
    from osteo.settings import get_settings, session_factory
    from osteo_cli.main import main
    from tests.helpers import isolated_settings

    d = tmp_path / "dexa"
    d.mkdir()
    (d / "other.csv").write_text(OTHER_LAYOUT)
    (d / "rows.csv").write_text("PatientID,ExamDate,Neck_BMD,T-score\nR1,2021-01-02,0.6,-2.2\nR2,bad,0.6,-2.2\n")
    (d / "report.pdf").write_bytes(b"%PDF-1.4\n")
    with isolated_settings(tmp_path / "home"):
        settings = get_settings()
        factory = session_factory(settings, create=True)
        create_schema(factory.kw["bind"])
        refresh.ingest_dexa(factory, refresh.discover(d), KEY, settings)
        refresh.ingest_dexa(factory, refresh.discover(d), KEY, settings, COLUMN_MAP)  # other.csv passes now

        def run(*argv: str) -> str:
            capsys.readouterr()
            assert main(["quarantine", *argv]) == 0
            return capsys.readouterr().out

        active = json.loads(run("--json"))
        assert (active["count"], active["active"]) == (2, 2)
        assert {(e["path"].rsplit("/", 1)[1], e["row"], e["reason"]) for e in active["entries"]} == {
            ("report.pdf", 0, "unsupported_file_type"), ("rows.csv", 2, "bad_date")}
        assert set(active["entries"][0]) == {"path", "stage", "row", "line", "reason", "detail", "first_seen",
                                             "last_seen", "resolved_at"}
        # the file's line (a spreadsheet's row number), the header being line 1
        assert {e["row"]: e["line"] for e in active["entries"]} == {0: None, 2: 3}
        every = json.loads(run("--all", "--json"))
        resolved = [e for e in every["entries"] if e["resolved_at"]]
        assert every["count"] == 3 and [e["reason"] for e in resolved] == ["unrecognised_columns"]
        assert [e["row"] for e in json.loads(run("--reason", "bad_date", "--json"))["entries"]] == [2]
        assert json.loads(run("--stage", "ingest_annotation", "--json"))["count"] == 0
        rows = list(csv.DictReader(io.StringIO(run("--all", "--csv"))))
        assert len(rows) == 3 and {r["reason"] for r in rows if r["resolved_at"]} == {"unrecognised_columns"}
        human = run("--all")
        assert human.startswith("2 active quarantine entries, 1 resolved") and "report.pdf" in human
        assert main(["quarantine", "--json", "--csv"]) == 2


# --- the real command: a fix is picked up by the next `osteo refresh` --------------------------------

def _osteo(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSTEO_", "MLFLOW_", "PREFECT_"))}
    env.update({"OSTEO_HOME": str(cwd / "home"), "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"})
    done = subprocess.run([sys.executable, "-m", "osteo_cli.main", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.slow
def test_the_refresh_command_picks_up_a_column_map(tmp_path):
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dexa").mkdir()
    (tmp_path / "dexa" / "other.csv").write_text(OTHER_LAYOUT)
    (tmp_path / "map.json").write_text(json.dumps(COLUMN_MAP))
    first = _osteo(tmp_path, "refresh", "--dicom", "dicom", "--dexa", "dexa")
    lines = first.stdout.splitlines()
    assert lines[0].startswith("PROBLEMS") and "unrecognised_columns" in lines[1] and "other.csv" in lines[1]

    fixed = json.loads(_osteo(tmp_path, "refresh", "--dicom", "dicom", "--dexa", "dexa", "--column-map", "map.json",
                              "--json").stdout)
    run = fixed["this_run"]
    assert (run["dexa_exams"], run["retried"], run["resolved"], run["problems"]) == (2, 1, 1, [])
    assert fixed["totals"]["quarantined"] == 0 and fixed["totals"]["dexa_exams"] == 2

    listed = json.loads(_osteo(tmp_path, "quarantine", "--all", "--json").stdout)
    assert (listed["count"], listed["active"]) == (1, 0) and listed["entries"][0]["resolved_at"]
