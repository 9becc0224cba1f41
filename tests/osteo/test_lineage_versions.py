"""Lineage names the version of a source file that a model's rows were read from (issue 23 item 3): a DEXA
file fixed in place and read again, then a model trained: verify passes for that model, while a model
trained before the fix still finds its file changed. The same holds for a person's VOC file saved again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Annotation, DexaExam, SourceFile
from osteo.lineage import model_lineage, verify_lineage
from tests.helpers import plain_refresh

PATIENTS, SEED, TEST_YEAR = 20, 3, 2022
BAD, GOOD = "2021-13-45", "2017-03-15"  # the cohort's unparseable date (osteo/synth/plan.py) and its fix


def _train(factory, root: Path, version: str) -> dict:
    """What a training records in the database (the snapshot and its training_run row), as the registry's dict."""
    from osteo.training.snapshot import record_training_run, take_snapshot

    snap = take_snapshot(factory, root / "snapshots", test_year=TEST_YEAR, folds=2, seed=0)
    run_id = version * 32
    record_training_run(factory, snapshot_id=snap.snapshot_id, run_id=run_id, arch="tiny", preset="demo",
                        model_name="osteo-classifier", model_version=version, test_auc=None)
    return {"name": "osteo-classifier", "version": version, "run_id": run_id, "aliases": [], "tags": {}}


def _lineage(factory, version: dict) -> tuple[dict, dict]:
    with factory() as session:
        lin = model_lineage(session, version)
    return lin, verify_lineage(lin)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    """Refresh, model 1; the bad date fixed in place and a used VOC file saved again (same box, new bytes),
    refresh, model 2."""
    from osteo.settings import session_factory
    from osteo.synth import generate_cohort
    from tests.helpers import isolated_settings

    root = tmp_path_factory.mktemp("lineage-versions")
    cohort = root / "cohort"
    generate_cohort(cohort, patients=PATIENTS, seed=SEED, workers=1)
    with isolated_settings(root / "home") as settings:
        factory = session_factory(settings, create=True)
        plain_refresh(factory, cohort, settings)
        before = _train(factory, root, "1")
        lin, _ = _lineage(factory, before)
        dexa = next(p for p in (cohort / "dexa").iterdir() if BAD in p.read_text(errors="replace"))
        assert str(dexa) in {s["path"] for s in lin["source_files"]}, "model 1 uses rows of the file to fix"
        voc = Path(next(s["path"] for s in lin["source_files"] if s["kind"] == "annotation"))
        dexa.write_text(dexa.read_text(errors="replace").replace(BAD, GOOD))  # sed -i
        voc.write_text(voc.read_text() + "\n")  # saved again by LabelImg: the same box, other bytes
        stamp = os.stat(dexa).st_mtime_ns
        os.utime(dexa, ns=(stamp + 10**9, stamp + 10**9))  # a coarse clock must not hide the change
        os.utime(voc, ns=(stamp + 10**9, stamp + 10**9))
        plain_refresh(factory, cohort, settings)
        after = _train(factory, root, "2")
        yield {"factory": factory, "dexa": str(dexa), "voc": str(voc), "before": before, "after": after}


def test_a_model_trained_after_a_fix_in_place_verifies(fixed):
    lin, result = _lineage(fixed["factory"], fixed["after"])
    assert result["ok"], result["changed"] + result["missing"]
    named = {s["path"]: s["sha256"] for s in lin["source_files"]}
    with fixed["factory"]() as session:
        newest = {p: session.scalars(select(SourceFile.sha256).where(SourceFile.path == p)
                                     .order_by(SourceFile.id.desc())).first() for p in (fixed["dexa"], fixed["voc"])}
    assert named[fixed["dexa"]] == newest[fixed["dexa"]] and named[fixed["voc"]] == newest[fixed["voc"]]
    # each path once: its rows were read from one version, not from the old one and the new
    assert len([s for s in lin["source_files"] if s["path"] in newest]) == 2
    for m in lin["members"]:
        if m["dexa_exam"]["source_file"] == fixed["dexa"]:
            assert m["dexa_exam"]["source_sha256"] == newest[fixed["dexa"]]


def test_a_model_trained_before_the_fix_still_finds_its_file_changed(fixed):
    lin, result = _lineage(fixed["factory"], fixed["before"])
    assert {(c["role"], c["path"]) for c in result["changed"]} == {("dexa", fixed["dexa"]),
                                                                   ("annotation", fixed["voc"])}
    assert not result["ok"]


def test_the_rows_move_to_the_version_that_holds_them(fixed):
    """The exams and boxes read again unchanged from the new version name it (the first version stays recorded)."""
    with fixed["factory"]() as session:
        versions = session.scalars(select(SourceFile.id).where(SourceFile.path == fixed["dexa"])
                                   .order_by(SourceFile.id)).all()
        holders = set(session.scalars(select(DexaExam.source_file_id).join(
            SourceFile, SourceFile.id == DexaExam.source_file_id).where(SourceFile.path == fixed["dexa"])))
        boxes = set(session.scalars(select(Annotation.source_file_id).join(
            SourceFile, SourceFile.id == Annotation.source_file_id).where(SourceFile.path == fixed["voc"])))
        newest_voc = session.scalars(select(SourceFile.id).where(SourceFile.path == fixed["voc"])
                                     .order_by(SourceFile.id.desc())).first()
    assert len(versions) == 2 and holders == {versions[-1]}
    assert boxes == {newest_voc}
