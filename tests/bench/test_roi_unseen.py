"""bench/roi_unseen.py's parts on a tiny cohort: the demo's boxes, every hip scored, the non-hip films."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench.roi_unseen import NONHIP_KINDS, cohort_images, nonhip_films, score_views


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from osteo.synth import generate_cohort

    out = tmp_path_factory.mktemp("unseen") / "cohort"
    generate_cohort(out, patients=6, seed=11, workers=1)
    return out


def test_cohort_images_are_the_boxed_films_and_the_demo_takes_the_annotated(cohort):
    truth = pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str})
    every, annotated = cohort_images(cohort, annotated_only=False), cohort_images(cohort, annotated_only=True)
    boxed = truth[(truth["expected_scope"] == "in_scope") & truth["boxes"].notna()]
    assert len(every) == len(boxed)
    assert len(annotated) == int((boxed["annotated"] == 1).sum())
    first = boxed.iloc[0]
    assert every[0]["boxes"] == {k: tuple(float(v) for v in b) for k, b in json.loads(first["boxes"]).items()}
    assert every[0]["laterality"] == str(first["laterality"]).upper() and len(every[0]["sha256"]) == 64


def test_score_views_scores_every_hip_worst_first(cohort):
    from osteo_model.roi import RoiConfig, build_localiser

    images = cohort_images(cohort, annotated_only=False)
    model = build_localiser(RoiConfig(input_size=32, width=4)).eval()
    out = score_views(model, 32, images, workers=1, min_confidence=0.8)
    hips = sum(len(im["boxes"]) for im in images)
    assert out["all"]["n"] == len(out["views"]) == hips
    assert out["all"]["n"] == sum(out[k]["n"] for k in ("pelvis", "hip") if k in out)
    ious = [v["iou"] for v in out["views"]]
    assert ious == sorted(ious) and 0 <= out["all"]["mean_iou"] <= 1
    assert out["film_negatives"] and out["film_negatives"][0].shape == (32, 32)


def test_nonhip_films_are_uint8_films_of_every_kind():
    films = nonhip_films(5, seed=1)
    assert [k for k, _ in films] == [NONHIP_KINDS[i % len(NONHIP_KINDS)] for i in range(5)]
    for _, img in films:
        assert img.dtype == np.uint8 and img.ndim == 2 and min(img.shape) >= 225 and img.std() > 0
