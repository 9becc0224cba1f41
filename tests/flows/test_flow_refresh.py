"""End to end under Prefect's test harness: synthetic cohort -> refresh -> exactly truth.csv's exports."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from osteo.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, patients=80, seed=7)
    return out


@pytest.fixture(scope="module")
def refreshed(cohort, tmp_path_factory, prefect_harness):
    """Two refreshes over the same cohort in a fresh database."""
    from tests.helpers import isolated_settings

    home = tmp_path_factory.mktemp("home")
    with isolated_settings(home):
        from flows.refresh import refresh_flow
        from osteo.ingest.options import RefreshOptions

        options = RefreshOptions(dicom_dir=str(cohort / "dicom"), dexa_dir=str(cohort / "dexa"),
                                 annotations_dir=str(cohort / "annotations"))
        first = refresh_flow(options=options)
        pngs_after_first = _tree_digest(home / "data" / "export")
        second = refresh_flow(options=options)
        pngs_after_second = _tree_digest(home / "data" / "export")
        from osteo.settings import get_settings, session_factory

        factory = session_factory(get_settings())
        yield {"first": first, "second": second, "factory": factory, "home": home,
               "pngs": (pngs_after_first, pngs_after_second)}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_exports_exactly_the_expected_images_with_expected_labels(cohort, refreshed):
    from db.models import DicomImage, Export, Pair

    truth = pd.read_csv(cohort / "truth.csv", dtype=str)
    with refreshed["factory"]() as s:
        rows = s.execute(select(DicomImage.sop_instance_uid, Export.status, Export.exclusion, Pair.label, Export.side)
                         .join(Export, Export.image_id == DicomImage.id)
                         .join(Pair, Pair.image_id == DicomImage.id)).all()
        paired = dict(s.execute(select(DicomImage.sop_instance_uid, Pair.label)
                                .join(Pair, Pair.image_id == DicomImage.id)).all())
    exported = {uid: label for uid, status, _, label, _ in rows if status == "exported"}
    excluded = {uid: exclusion for uid, status, exclusion, _, _ in rows if status == "excluded"}
    expected = truth[truth["expected_export"] == "1"]
    assert set(exported) == set(expected["sop_instance_uid"])
    # one crop per hip the image shows: an AP pelvis exports both, each with its side
    sides = {}
    for uid, status, _, _, side in rows:
        if status == "exported":
            sides.setdefault(uid, set()).add(side)
    assert all(sides[r.sop_instance_uid] == ({"L", "R"} if r.view == "pelvis" else {r.laterality})
               for r in expected.itertuples())
    assert all(exported[r.sop_instance_uid] == int(r.expected_label) for r in expected.itertuples())
    want_pair = truth[truth["expected_pair"] == "1"]
    assert set(paired) == set(want_pair["sop_instance_uid"])
    assert all(paired[r.sop_instance_uid] == int(r.expected_label) for r in want_pair.itertuples())
    want_excl = truth[(truth["expected_exclusion"] != "none") & (truth["expected_pair"] == "1")
                      & (truth["annotated"] == "1")]
    assert excluded == dict(zip(want_excl["sop_instance_uid"], want_excl["expected_exclusion"]))
    first = refreshed["first"]
    assert first.totals.exported == first.this_run.export.exported == expected["crops"].astype(int).sum()
    assert first.totals.positives + first.totals.negatives == first.totals.pairs == len(want_pair)
    assert set(first.to_dict()) == {"refresh_id", "this_run", "totals"}
    assert first.this_run.files_seen > 0 and first.totals.images == first.this_run.dicom.added
    # the cohort's junk files and bad rows are quarantined, not dropped
    assert first.totals.quarantined == first.this_run.to_dict()["quarantined"] > 0


def test_only_hip_radiographs_become_images_the_rest_is_out_of_scope_with_its_reason(cohort, refreshed):
    from db.models import DicomImage

    truth = pd.read_csv(cohort / "truth.csv", dtype=str)
    with refreshed["factory"]() as s:
        images = set(s.scalars(select(DicomImage.sop_instance_uid)))
    hips = truth[truth["expected_scope"] == "in_scope"]
    assert images == set(hips["sop_instance_uid"])  # so only hips can be paired and exported
    unknown = truth[truth["expected_scope"] == "unknown_body_part"]
    out = truth[~truth["expected_scope"].isin(["in_scope", "unknown_body_part"])]
    first = refreshed["first"]
    assert len(out) > 0 and first.this_run.to_dict()["out_of_scope"] == first.totals.out_of_scope == len(out)
    assert first.totals.out_of_scope_by_reason == dict(sorted(out["expected_scope"].value_counts().items()))
    assert first.totals.quarantined_by_reason.get("unknown_body_part", 0) == len(unknown) > 0
    assert first.to_dict()["totals"]["out_of_scope_by_reason"] == first.totals.out_of_scope_by_reason
    line = next(ln for ln in first.summary().splitlines()[::-1] if "out of scope" in ln)
    assert line.split()[3] == str(len(out)) and all(reason in line for reason in out["expected_scope"])


def test_second_refresh_adds_nothing(cohort, refreshed):
    first, second = refreshed["first"], refreshed["second"]
    assert not second.this_run.added_anything(), second.this_run
    run = second.this_run.to_dict()
    assert run["quarantined"] == 0  # this run's count, not the database's total
    assert run["out_of_scope"] == 0 and second.totals.out_of_scope == first.totals.out_of_scope
    # read again: only the boxes drawn for an image that is quarantined (it may be fixed); a box for
    # an out-of-scope image is closed, not re-read every night
    truth = pd.read_csv(cohort / "truth.csv", dtype=str)
    waiting = truth[(truth["annotated"] == "1") & (truth["expected_scope"] == "unknown_body_part")]
    assert run["waiting"] == len(waiting) > 0
    assert run["already_known"] + run["waiting"] == second.this_run.files_seen
    assert refreshed["pngs"][0] == refreshed["pngs"][1]
    assert second.totals == first.totals
    assert second.refresh_id == first.refresh_id + 1


def test_pngs_carry_no_patient_identifier(cohort, refreshed):
    from PIL import Image

    truth = pd.read_csv(cohort / "truth.csv", dtype=str)
    ids = set(truth["patient_id"])
    for path in (refreshed["home"] / "data" / "export").rglob("*.png"):
        with Image.open(path) as im:
            assert not im.info, f"{path} has metadata {list(im.info)}"
        data = path.read_bytes()
        assert not any(pid.encode() in data for pid in ids)
        assert not any(pid in path.name for pid in ids)
