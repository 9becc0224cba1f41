"""Calibration: ECE on equal-width bins, temperature scaling fitted on validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from osteo_model.calibration import (
    apply_temperature,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    nll,
    sigmoid,
    to_logits,
)


def _cohort(n: int, seed: int, sharpen: float):
    """Labels drawn from true probabilities; the 'model' reports sigmoid(sharpen * true logit)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < sigmoid(z)).astype(int)
    return y, sigmoid(sharpen * z)


def test_ece_by_hand():
    # bins [0, .1), [.1, .2), ..., [.9, 1]: three images in three bins, gaps .05, .85, .05
    assert expected_calibration_error([0, 1, 1], [0.05, 0.15, 0.95]) == pytest.approx(0.95 / 3)
    # 1.0 falls in the last bin, 0.1 in the second; one bin of all: |mean p - mean y|
    assert expected_calibration_error([1, 0], [1.0, 0.9], n_bins=10) == pytest.approx(abs(0.95 - 0.5))
    assert expected_calibration_error([1, 0], [0.1, 0.1], n_bins=1) == pytest.approx(0.4)
    assert math.isnan(expected_calibration_error([], []))


def test_ece_of_a_calibrated_set_is_small_and_of_an_overconfident_one_large():
    y, p = _cohort(20000, 0, sharpen=1.0)
    assert expected_calibration_error(y, p) < 0.02
    y, p = _cohort(20000, 0, sharpen=4.0)
    assert expected_calibration_error(y, p) > 0.10


def test_temperature_above_one_fixes_overconfident_probabilities():
    yv, pv = _cohort(5000, 1, sharpen=3.0)  # validation
    yt, pt = _cohort(5000, 2, sharpen=3.0)  # test
    t = fit_temperature(yv, probs=pv)
    assert 2.5 < t < 3.5  # the true answer is 3
    assert expected_calibration_error(yt, apply_temperature(pt, t)) < expected_calibration_error(yt, pt) / 3
    assert nll(yt, to_logits(pt), t) < nll(yt, to_logits(pt))
    # the same from logits
    assert fit_temperature(yv, logits=to_logits(pv)) == pytest.approx(t, rel=1e-3)


def test_temperature_below_one_sharpens_underconfident_probabilities():
    y, p = _cohort(5000, 3, sharpen=0.5)
    assert fit_temperature(y, probs=p) < 0.7


def test_temperature_keeps_the_ranking_and_degenerate_sets_keep_t_one():
    from sklearn.metrics import roc_auc_score

    y, p = _cohort(500, 4, sharpen=2.0)
    assert roc_auc_score(y, apply_temperature(p, 2.0)) == pytest.approx(roc_auc_score(y, p))
    assert fit_temperature([1, 1, 1], probs=[0.9, 0.8, 0.99]) == 1.0
    with pytest.raises(ValueError):
        apply_temperature([0.5], 0.0)
    with pytest.raises(ValueError):
        expected_calibration_error([0, 1], [0.2, 1.3])
    with pytest.raises(ValueError):
        fit_temperature([0, 1])


def test_report_before_and_after():
    yv, pv = _cohort(2000, 5, sharpen=3.0)
    yt, pt = _cohort(2000, 6, sharpen=3.0)
    r = calibration_report(yt, pt, yv, pv)
    assert r.fitted_on == "validation" and r.temperature > 1
    assert r.ece_after < r.ece_before and r.nll_after < r.nll_before
    plain = calibration_report(yt, pt)
    assert plain.fitted_on == "none" and plain.temperature == 1.0 and plain.ece_after == plain.ece_before
    assert set(r.to_dict()) == {"n_bins", "temperature", "ece_before", "ece_after", "nll_before", "nll_after",
                                "fitted_on"}
