"""Screening (osteo/screening/score.py, plan.py): every in-scope hip image gets one result per classifier version,
scored through ONNX Runtime on the box a person drew or the localiser placed; a rerun screens nothing, a new
version screens everything once, `rescreen` replaces the version's rows in place."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import Annotation, DicomImage
from db.screening import ScreeningResult
from db.values import SCREENING_STATUSES
from osteo.screening.plan import images_to_screen
from osteo.screening.score import screen_images
from tests.helpers import isolated_settings
from tests.screening_support import FixedLocator, onnx_classifier, refreshed_cohort, screening_model

THRESHOLDS = {"metal_threshold": 0.005, "blur_threshold": 6.0}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("screening")
    with isolated_settings(root / "home") as settings:
        factory = refreshed_cohort(root, settings)
        yield {"factory": factory, "classifier": onnx_classifier(root), "settings": settings}


def screen_all(factory, model, rescreen=False):
    todo, already = images_to_screen(factory, model.name, model.version, rescreen=rescreen)
    return screen_images(factory, model, todo, **THRESHOLDS), already


def rows(factory, version):
    with factory() as session:
        return list(session.scalars(select(ScreeningResult).where(ScreeningResult.model_version == version)
                                    .order_by(ScreeningResult.image_id)))


def test_one_result_per_image_and_version_and_a_rerun_screens_nothing(cohort):
    factory, model = cohort["factory"], screening_model(cohort["classifier"], version="3")
    with factory() as session:
        images = session.scalar(select(func.count(DicomImage.id)))
    counts, already = screen_all(factory, model)
    assert already == 0 and counts.images == images > 0
    assert counts.screened + counts.not_located + sum(n for _, n in counts.excluded) == images
    first = rows(factory, "3")
    assert len(first) == images and len({r.image_id for r in first}) == images
    assert {r.status for r in first} <= set(SCREENING_STATUSES) and counts.screened > 0
    for r in first:
        if r.status == "screened":
            assert 0.0 <= r.probability <= 1.0 and r.label == int(r.probability >= model.threshold)
            assert r.probability == max(p for p in (r.probability_l, r.probability_r) if p is not None)
        assert (r.localiser_name, r.localiser_version) == ("osteo-roi", "7")

    again, already = screen_all(factory, model)  # the same version again: nothing to do
    assert again.images == 0 and already == images

    redo, already = screen_all(factory, model, rescreen=True)  # every image again, its row replaced in place
    assert redo.images == images and already == 0
    assert [(r.id, r.status, r.probability) for r in rows(factory, "3")] == \
           [(r.id, r.status, r.probability) for r in first]

    newer = screening_model(cohort["classifier"], version="4")  # a new champion screens what it has not
    assert screen_all(factory, newer)[0].images == images and screen_all(factory, newer)[0].images == 0
    assert len(rows(factory, "3")) == len(rows(factory, "4")) == images


def test_a_persons_box_wins_and_a_pelvis_has_two_sides(cohort):
    factory = cohort["factory"]
    screen_all(factory, screening_model(cohort["classifier"], version="5"))
    with factory() as session:
        drawn = {(a.sop_instance_uid, a.side): (a.box_xmin, a.box_ymin, a.box_xmax, a.box_ymax)
                 for a in session.scalars(select(Annotation).where(Annotation.source == "human"))}
        found = session.execute(select(ScreeningResult, DicomImage).join(DicomImage)
                                .where(ScreeningResult.model_version == "5")).all()
    sources = set()
    for r, image in found:
        for side in ("L", "R"):
            box, source = getattr(r, f"box_{side.lower()}"), getattr(r, f"box_source_{side.lower()}")
            shown = image.laterality in (side, "B")
            assert (box is not None) == shown or r.status == "excluded: unreadable"
            if (image.sop_instance_uid, side) in drawn:
                assert source == "human" and tuple(box) == drawn[(image.sop_instance_uid, side)]
            elif box is not None:
                assert source == "model" and getattr(r, f"confidence_{side.lower()}") == pytest.approx(0.95)
            sources.add(source)
    assert {"human", "model"} <= sources and any(i.laterality == "B" for _, i in found)


def test_an_unsure_localiser_leaves_the_unboxed_images_not_located(cohort):
    factory = cohort["factory"]
    model = screening_model(cohort["classifier"], version="6", locator=FixedLocator(confidence=0.3))
    counts, _ = screen_all(factory, model)
    assert counts.not_located > 0
    with factory() as session:
        humans = set(session.scalars(select(Annotation.sop_instance_uid).where(Annotation.source == "human")))
        found = session.execute(select(ScreeningResult, DicomImage.sop_instance_uid).join(DicomImage)
                                .where(ScreeningResult.model_version == "6")).all()
    for r, uid in found:
        if r.status == "not_located":
            assert uid not in humans and r.probability is None and r.label is None
            kept = [c for c in (r.confidence_l, r.confidence_r) if c is not None]  # the unsure boxes, kept
            assert kept and kept == [pytest.approx(0.3)] * len(kept)
        elif r.status == "screened":
            assert uid in humans


def test_lineage_shows_an_images_results_and_counts_what_a_version_screened(cohort, capsys):
    from osteo.lineage import image_lineage
    from osteo.lineage.screening import version_screening
    from osteo_cli.main import main

    factory = cohort["factory"]
    screen_all(factory, screening_model(cohort["classifier"], version="8"))
    with factory() as session:
        uid = session.scalar(select(DicomImage.sop_instance_uid).join(ScreeningResult).where(
            ScreeningResult.model_version == "8", ScreeningResult.status == "screened"))
        lin = image_lineage(session, uid)
        counts = version_screening(session, "osteo-classifier", "8")
        images = session.scalar(select(func.count(DicomImage.id)))
    mine = [r for r in lin["screening"] if r["model"] == "osteo-classifier/8"]
    assert len(mine) == 1 and mine[0]["status"] == "screened" and mine[0]["pushed"] == []
    assert mine[0]["sides"] and all(s["probability"] is not None for s in mine[0]["sides"].values())
    assert counts["images"] == images and sum(counts["by_status"].values()) == images and counts["pushed"] == {}
    assert main(["lineage", "image", uid]) == 0
    assert "screening       osteo-classifier/8 screened p=" in capsys.readouterr().out


def test_the_scores_equal_a_plain_onnx_runtime_loop_over_the_exports_crops(cohort, tmp_path):
    """Whatever the reading overlaps, each scored side's probability is what a plain loop gives: the export's own
    crop of the stored box (export_roi's PNG), resized and normalised by hand, through the same session."""
    import copy

    import numpy as np
    from PIL import Image

    from db.models import SourceFile
    from osteo.etl.imaging import export_roi

    factory, classifier = cohort["factory"], copy.copy(cohort["classifier"])
    classifier.batch_size = 4  # several runs, each overlapping the reading of the next images
    model = screening_model(classifier, version="9")
    screen_all(factory, model)
    with factory() as session:
        found = session.execute(select(ScreeningResult, SourceFile.path).select_from(ScreeningResult)
                                .join(DicomImage, DicomImage.id == ScreeningResult.image_id)
                                .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
                                .where(ScreeningResult.model_version == "9", ScreeningResult.status == "screened")
                                .order_by(ScreeningResult.image_id)).all()
    ours, crops = [], []
    for r, path in found:
        for side in ("L", "R"):
            p = getattr(r, f"probability_{side.lower()}")
            if p is not None:
                png = tmp_path / f"{r.image_id}-{side}.png"
                done = export_roi(path, getattr(r, f"box_{side.lower()}"), side, png, size=64, **THRESHOLDS)
                assert done.status == "exported", done
                ours.append(p)
                crops.append(np.asarray(Image.open(png).resize((64, 64), Image.Resampling.BILINEAR), np.float32))
    assert len(ours) > 2 * classifier.batch_size
    x = ((np.stack(crops) / 255.0 - 0.449) / 0.226)[:, None].astype(np.float32)
    (logit,) = classifier.session.run(["logit"], {"image": x})
    plain = (1.0 / (1.0 + np.exp(-logit.reshape(-1).astype(np.float64)))).tolist()
    assert ours == pytest.approx(plain, abs=1e-5)
