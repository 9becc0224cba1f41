"""Lineage of boxes: a crop from the localiser's box names the localiser's name, version and confidence (and no
VOC file), a crop from a person's box names its VOC file; image, patient, snapshot and model lineage all say which."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas
import pytest
from sqlalchemy import select

from db.models import Annotation, DicomImage, Pair
from osteo.lineage import image_lineage, lineage_csv, model_lineage, patient_lineage, snapshot_lineage

PATIENTS, SEED, TEST_YEAR = 20, 1, 2022
MODEL_BOX = {"source": "model", "model_name": "osteo-roi", "model_version": "7", "confidence": 0.93}


def _withheld_box(factory, cohort: Path) -> tuple[Path, dict]:
    """A person's VOC file for a paired left hip of the test year (exported cleanly per truth.csv), read but
    not ingested: its box, given to the localiser, is the one box of that image."""
    from osteo.etl.annotations import parse_voc
    from osteo.etl.errors import InputError
    from osteo.ingest import refresh
    from osteo.ingest.boxes import match_box

    truth = pandas.read_csv(cohort / "truth.csv", dtype=str)
    clean = set(truth.loc[truth["expected_exclusion"].fillna("none") == "none", "sop_instance_uid"])
    with factory() as session:
        paired = {uid: img for img, uid in session.execute(
            select(DicomImage, DicomImage.sop_instance_uid).join(Pair, Pair.image_id == DicomImage.id))}
        for path in refresh.discover(cohort / "annotations", (".xml",)):
            try:
                voc = parse_voc(Path(path).read_bytes(), Path(path).name)
                rows = match_box(session, voc) if voc.matched else None
            except InputError:  # the cohort's broken VOC files (quarantined at ingest)
                continue
            img = paired.get(rows[0]["sop_instance_uid"]) if rows else None
            if (img is not None and img.laterality == "L" and img.study_date.year == TEST_YEAR
                    and img.sop_instance_uid in clean):
                return Path(path), rows[0]
    raise AssertionError("the synthetic cohort has no clean, paired left hip of the test year")


@pytest.fixture(scope="module")
def boxed(tmp_path_factory):
    """A small fresh database: every person's box but one ingested; that image gets an osteo-roi/7 box
    (confidence 0.93) instead; exported, snapshotted with box_source 'any' and recorded as a model version."""
    from osteo.ingest import refresh
    from osteo.settings import session_factory
    from osteo.training.snapshot import record_training_run, take_snapshot
    from tests.helpers import isolated_settings, synthetic_cohort

    root = tmp_path_factory.mktemp("lineage-boxes")
    cohort = root / "cohort"
    synthetic_cohort(cohort, patients=PATIENTS, seed=SEED)
    with isolated_settings(root / "home") as settings:
        assert settings.roi_min_confidence <= MODEL_BOX["confidence"]
        factory = session_factory(settings, create=True)
        key = settings.resolved_pseudonym_key()
        refresh.ingest_dicom(factory, refresh.discover(cohort / "dicom"), key, workers=1)
        refresh.ingest_dexa(factory, refresh.discover(cohort / "dexa", (".csv", ".txt")), key, settings)
        refresh.pair_and_label(factory, settings)
        withheld, box = _withheld_box(factory, cohort)
        refresh.ingest_annotations(factory, [p for p in refresh.discover(cohort / "annotations", (".xml",))
                                             if Path(p) != withheld])
        with factory() as session, session.begin():
            session.add(Annotation(**(box | MODEL_BOX), source_file_id=None))
        refresh.export_images(factory, refresh.plan_exports(factory, settings), settings, workers=1)
        snap = take_snapshot(factory, root / "snapshots", test_year=TEST_YEAR, folds=2, seed=0, box_source="any")
        run_id = "ab" * 16
        record_training_run(factory, snapshot_id=snap.snapshot_id, run_id=run_id, arch="tiny", preset="demo",
                            model_name="osteo-classifier", model_version="1", test_auc=None)
        yield {"factory": factory, "cohort": cohort, "uid": box["sop_instance_uid"], "side": box["side"],
               "snapshot": snap,
               "version": {"name": "osteo-classifier", "version": "1", "run_id": run_id, "aliases": [], "tags": {}}}


def test_image_lineage_names_the_localiser_box_and_the_export_that_used_it(boxed, capsys):
    with boxed["factory"]() as session:
        lin = image_lineage(session, boxed["uid"])
        pat = patient_lineage(session, lin["image"]["patient_key"])
    [box] = lin["boxes"]
    assert box["source"] == "model" and box["side"] == boxed["side"] and box["source_file"] is None
    assert (box["model_name"], box["model_version"], box["box_model"]) == ("osteo-roi", "7", "osteo-roi/7")
    assert box["confidence"] == pytest.approx(0.93)
    [export] = lin["exports"]
    assert export["status"] == "exported" and export["side"] == boxed["side"]
    assert (export["annotation_id"], export["box_source"], export["box_model"]) == (box["id"], "model", "osteo-roi/7")
    [snap] = lin["snapshots"]
    assert snap["digest"] == boxed["snapshot"].digest and snap["side"] == boxed["side"] and snap["split"] == "test"

    image = next(i for i in pat["images"] if i["sop_instance_uid"] == boxed["uid"])
    assert not image["annotated"] and [b["box_model"] for b in image["boxes"]] == ["osteo-roi/7"]
    assert [(e["box_source"], e["box_model"]) for e in image["exports"]] == [("model", "osteo-roi/7")]

    from osteo_cli.main import main

    capsys.readouterr()
    assert main(["lineage", "image", boxed["uid"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["boxes"][0]["box_model"] == "osteo-roi/7"
    assert main(["lineage", "image", boxed["uid"]]) == 0
    out = capsys.readouterr().out
    assert f"side {boxed['side']} model osteo-roi version 7 confidence 0.93" in out
    assert "(osteo-roi/7) exported" in out


def test_a_persons_box_names_its_voc_file_and_each_pelvis_side_its_own_box(boxed):
    with boxed["factory"]() as session:
        lin = snapshot_lineage(session, boxed["snapshot"].snapshot_id)
        human = next(m for m in lin["members"] if m["box_source"] == "human")
        img = image_lineage(session, human["image"]["sop_instance_uid"])
        pelvis = session.scalars(select(DicomImage.sop_instance_uid).join(Pair, Pair.image_id == DicomImage.id)
                                 .where(DicomImage.laterality == "B")).all()
        pelvis_lins = [image_lineage(session, uid) for uid in pelvis]
    box = next(b for b in img["boxes"] if b["id"] == human["annotation"]["id"])
    assert box["source"] == "human" and box["model_name"] is None and box["confidence"] is None
    assert box["source_file"]["path"].endswith(".xml") and len(box["source_file"]["sha256"]) == 64
    assert human["annotation"]["source_file"] == box["source_file"]["path"] and human["box_model"] is None
    truth = pandas.read_csv(boxed["cohort"] / "truth.csv", dtype=str)
    if "view" in truth and ((truth["view"] == "pelvis") & (truth["expected_export"] == "1")).any():
        assert any(len(p["exports"]) == 2 for p in pelvis_lins), "a paired pelvis with two boxes gives two crops"
    for p in pelvis_lins:  # an AP pelvis: one box and one crop per side, each export naming its own box
        assert len({b["side"] for b in p["boxes"]}) == len(p["boxes"])
        assert {e["side"] for e in p["exports"]} <= {b["side"] for b in p["boxes"]}
        for e in p["exports"]:
            assert next(b for b in p["boxes"] if b["id"] == e["annotation_id"])["side"] == e["side"]


def test_model_lineage_lists_the_crop_from_the_localiser_box(boxed):
    from osteo_cli.lineage import boxes_summary, model_summary

    with boxed["factory"]() as session:
        lin = model_lineage(session, boxed["version"])
    [member] = [m for m in lin["members"] if m["box_source"] == "model"]
    assert member["image"]["sop_instance_uid"] == boxed["uid"] and member["side"] == boxed["side"]
    assert member["box_model"] == "osteo-roi/7" and member["annotation"]["source_file"] is None
    assert (member["annotation"]["model_name"], member["annotation"]["model_version"]) == ("osteo-roi", "7")
    n_human = len(lin["members"]) - 1
    assert lin["box_sources"] == {"human": n_human, "osteo-roi/7": 1}
    assert (lin["counts"]["human_boxes"], lin["counts"]["model_boxes"]) == (n_human, 1)
    assert f"{n_human} crops from people's boxes, 1 from osteo-roi/7 boxes" in model_summary(lin)
    assert boxes_summary({"osteo-roi/7": 1}) == "1 crop from osteo-roi/7 boxes"
    # no VOC file behind the model box: the annotation files are those of the people's boxes only
    vocs = {m["annotation"]["source_file"] for m in lin["members"] if m["box_source"] == "human"}
    assert {s["path"] for s in lin["source_files"] if s["kind"] == "annotation"} == vocs

    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(lineage_csv(lin)))}
    dicom = rows[member["image"]["source_file"]]
    assert (dicom["box_source"], dicom["box_model"], dicom["side"]) == ("model=1", "osteo-roi/7=1",
                                                                         f"{boxed['side']}=1")
    assert all(r["box_model"] == "" for r in rows.values() if r["kind"] == "annotation")
