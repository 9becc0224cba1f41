"""Subgroup results: counts, bootstrap AUC intervals, Wilson intervals, one-class groups reported, not crashing."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from osteo_model.subgroups import (
    age_band,
    bootstrap_auc_ci,
    roc_auc,
    subgroup_markdown,
    subgroup_table,
    wilson_interval,
)


def test_age_bands():
    assert [age_band(a) for a in (45, 59, 60, 69, 70, 79, 80, 97)] == [
        "<60", "<60", "60-69", "60-69", "70-79", "70-79", "80+", "80+"]
    assert age_band(None) == age_band(float("nan")) == "unknown"


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200) * 0.5 + 0.3 * y, 1)  # many ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_bootstrap_interval_is_seeded_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    small = bootstrap_auc_ci(y[:60], p[:60], seed=0)
    assert small == bootstrap_auc_ci(y[:60], p[:60], seed=0)
    big = bootstrap_auc_ci(y, p, seed=0)
    assert small[0] <= roc_auc(y[:60], p[:60]) <= small[1]
    assert big[0] <= roc_auc(y, p) <= big[1]
    assert big[1] - big[0] < (small[1] - small[0]) / 2
    assert all(math.isnan(v) for v in bootstrap_auc_ci([0, 0, 0], [0.1, 0.2, 0.3]))


def _frame():
    # 8 CR images with both classes; 3 DX images, all osteoporosis (one class: no AUC)
    frame = pd.DataFrame({"modality": ["CR"] * 8 + ["DX"] * 3,
                          "sex": ["F", "M"] * 5 + [None],
                          "age_band": ["<60", "80+", "60-69", "70-79"] * 2 + ["80+"] * 3})
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    probs = [0.1, 0.2, 0.6, 0.3, 0.7, 0.8, 0.4, 0.9, 0.7, 0.2, 0.9]
    return frame, labels, probs


def test_table_counts_metrics_and_one_class_groups():
    frame, labels, probs = _frame()
    t = subgroup_table(frame, labels, probs, 0.5, n_boot=300)
    assert list(t["attribute"])[0] == "overall" and t.loc[0, "n"] == 11 and t.loc[0, "positives"] == 7
    rows = t.set_index(["attribute", "value"])
    cr, dx = rows.loc[("modality", "CR")], rows.loc[("modality", "DX")]
    assert (cr["n"], cr["positives"], cr["negatives"]) == (8, 4, 4)
    assert cr["recall"] == pytest.approx(3 / 4) and cr["specificity"] == pytest.approx(3 / 4)
    assert cr["auc"] == pytest.approx(15 / 16)  # one discordant pair (0.6 vs 0.4) of 16
    assert cr["auc_lo"] <= cr["auc"] <= cr["auc_hi"] and cr["auc_within_0_05"] in (True, False)
    assert math.isnan(dx["auc"]) and dx["auc_within_0_05"] is None and "one class" in dx["note"]
    assert dx["recall"] == pytest.approx(2 / 3) and math.isnan(dx["specificity"])
    assert ("sex", "unknown") in rows.index  # a missing value is its own group
    assert [v for a, v in rows.index if a == "age_band"] == ["<60", "60-69", "70-79", "80+"]
    # the flag compares with the overall AUC
    overall = t.loc[0, "auc"]
    for (attr, _), r in rows.iterrows():
        if attr != "overall" and not math.isnan(r["auc"]):
            assert r["auc_within_0_05"] == (abs(r["auc"] - overall) <= 0.05)


def test_markdown_and_length_check():
    frame, labels, probs = _frame()
    md = subgroup_markdown(subgroup_table(frame, labels, probs, 0.5, n_boot=100))
    dx = next(line for line in md.splitlines() if line.startswith("| modality DX"))
    assert "| 3 | 3 | n/a |" in dx and dx.endswith("| n/a |")
    with pytest.raises(ValueError):
        subgroup_table(frame, labels[:-1], probs, 0.5)
