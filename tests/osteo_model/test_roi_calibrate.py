"""The localiser's calibrated confidence (osteo_model/roi_calibrate.py): a monotone mapping fitted to
"the box is right", measured by ECE, carried in the checkpoint (weights_only), and old checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osteo_model.roi import RoiConfig, build_localiser
from osteo_model.roi_calibrate import apply, feature_matrix, fit_platt, needs_agreement, reliability
from osteo_model.roi_train import calibration_of, load_localiser, predict_boxes, predict_scores, save_localiser

SIZE = 32


def _scores(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Raw scores where only presence says anything: P(right) = sigmoid(1.5 logit(p) - 0.5)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.001, 0.999, n)
    truth = 1 / (1 + np.exp(-(1.5 * np.log(p / (1 - p)) - 0.5)))
    scores = {"presence": p, "agreement": rng.uniform(0, 1, n), "peak": 1 - rng.uniform(0, 1, n) * truth}
    return scores, (rng.uniform(0, 1, n) < truth).astype(float)


def test_platt_recovers_the_mapping_with_weights_never_negative():
    scores, right = _scores(4000, 0)
    cal = fit_platt(feature_matrix(scores), right)
    assert cal[0] == 1.0 and all(w >= 0 for w in cal[2:])
    assert cal[2] == pytest.approx(1.5, abs=0.15) and cal[1] == pytest.approx(-0.5, abs=0.3)
    assert cal[4] < 0.05  # peak falls as P(right) rises here: a monotone mapping gives it no weight
    held, right_held = _scores(4000, 1)
    ece, table = reliability(apply(cal, held), right_held)
    assert ece < 0.03 and sum(r["n"] for r in table) == 4000
    # monotone: a higher raw score never lowers the confidence
    base = {"presence": np.full(50, 0.6), "agreement": np.linspace(0, 1, 50), "peak": np.full(50, 0.5)}
    assert np.all(np.diff(apply(cal, base)) >= 0)
    base = {"presence": np.linspace(0.01, 0.99, 50), "agreement": np.full(50, 0.5), "peak": np.full(50, 0.5)}
    assert np.all(np.diff(apply(cal, base)) > 0)
    only = fit_platt(feature_matrix(scores), right, use=(True, False, False))
    assert only[3] == only[4] == 0.0 and not needs_agreement(only)


def test_uncalibrated_confidence_is_the_product_of_the_raw_scores():
    scores = {"presence": np.array([0.5, 1.0]), "agreement": np.array([0.8, 0.5]), "peak": np.array([1.0, 0.4])}
    np.testing.assert_allclose(apply(np.zeros(5), scores), [0.4, 0.2])
    assert needs_agreement(np.zeros(5))


def test_reliability_known_values():
    ece, table = reliability(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1]))
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    assert [(r["n"], r["right"]) for r in table] == [(2, 0.5), (2, 1.0)]
    assert np.isnan(reliability(np.array([]), np.array([]))[0])


def test_the_calibration_travels_in_the_checkpoint(tmp_path):
    cfg = RoiConfig(input_size=SIZE, width=4)
    model = build_localiser(cfg).eval()
    cal = [1.0, -2.0, 0.7, 0.0, 1.3]
    model.calibration.copy_(torch.tensor(cal))
    views = np.random.default_rng(0).uniform(0, 1, (3, SIZE, SIZE)).astype(np.float32)
    _, conf = predict_boxes(model, views)
    path = save_localiser(model, cfg, tmp_path / "roi.pth")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "osteo-roi/2"
    assert payload["state_dict"]["calibration"].tolist() == pytest.approx(cal)
    loaded, _, _ = load_localiser(path)
    np.testing.assert_allclose(calibration_of(loaded), cal)
    np.testing.assert_array_equal(predict_boxes(loaded, views)[1], conf)
    scores = predict_scores(model, views, tta=False)  # agreement unused: no test-time copies needed
    np.testing.assert_allclose(apply(cal, scores), conf, rtol=1e-5)


def test_a_checkpoint_from_before_the_presence_head_still_loads(tmp_path):
    cfg = RoiConfig(input_size=SIZE, width=4)
    old = build_localiser(cfg, presence=False).eval()
    torch.save({"format": "osteo-roi/1", "config": cfg.to_dict(), "extra": {},
                "state_dict": {k: v for k, v in old.state_dict().items()}}, tmp_path / "old.pth")
    loaded, _, _ = load_localiser(tmp_path / "old.pth")
    views = np.random.default_rng(1).uniform(0, 1, (2, SIZE, SIZE)).astype(np.float32)
    scores = predict_scores(loaded, views)
    np.testing.assert_array_equal(scores["presence"], [1.0, 1.0])
    np.testing.assert_allclose(predict_boxes(loaded, views)[1], scores["agreement"] * scores["peak"], rtol=1e-5)
