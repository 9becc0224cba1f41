"""The champion gate, both ways; and the bar every version must clear before it can be champion."""

from __future__ import annotations

import math

from osteo_mlflow.champion import should_promote


def test_with_no_champion_a_model_that_cleared_the_bar_becomes_champion():
    assert should_promote({"roc_auc": 0.6, "recall_1": 0.5}, None)[0]


def test_higher_auc_wins_lower_loses():
    champ = {"roc_auc": 0.90, "recall_1": 0.95}
    assert should_promote({"roc_auc": 0.93, "recall_1": 0.80}, champ)[0]
    promote, why = should_promote({"roc_auc": 0.88, "recall_1": 1.0}, champ)
    assert not promote and "does not beat" in why


def test_equal_auc_is_decided_by_osteoporosis_recall():
    champ = {"roc_auc": 0.90, "recall_1": 0.90}
    assert should_promote({"roc_auc": 0.90, "recall_1": 0.96}, champ)[0]
    assert not should_promote({"roc_auc": 0.90, "recall_1": 0.90}, champ)[0]
    assert not should_promote({"roc_auc": 0.90, "recall_1": 0.85}, champ)[0]


def test_undefined_auc_never_promotes_over_a_champion():
    assert not should_promote({"roc_auc": math.nan, "recall_1": 1.0}, {"roc_auc": 0.7, "recall_1": 0.5})[0]
    assert should_promote({"roc_auc": 0.7, "recall_1": 0.5}, {"roc_auc": math.nan, "recall_1": 0.5})[0]


def test_a_small_test_set_never_replaces_a_champion():
    champ = {"roc_auc": 0.0, "recall_1": 0.0}
    promote, why = should_promote({"roc_auc": 0.5, "recall_1": 1.0, "n": 6}, champ, min_test_images=20)
    assert not promote and "6 images is under the 20" in why
    assert should_promote({"roc_auc": 0.5, "recall_1": 1.0, "n": 20}, champ, min_test_images=20)[0]
    # the first version is served, and the decision says its test set was small
    promote, why = should_promote({"roc_auc": 0.5, "recall_1": 1.0, "n": 6}, None, min_test_images=20)
    assert promote and "no champion yet" in why and "under the 20" in why


def test_a_champion_that_could_not_be_scored_is_not_replaced_on_that_evidence():
    promote, why = should_promote({"roc_auc": 0.9, "recall_1": 1.0, "n": 40}, {"error": "trained on all 40"},
                                  min_test_images=20)
    assert not promote and "could not be scored" in why


def test_a_worse_than_chance_model_is_not_promoted_and_the_line_says_why():
    """Issue 23: test AUC 0.250 below its baseline 0.350 became champion because the first version always did."""
    from osteo_mlflow.champion import clears_the_bar

    why = clears_the_bar(0.25, (0.10, 0.41), 0.35)
    assert why == "not promoted: test-year AUC 0.250 (95% CI 0.10-0.41) does not clear 0.5"
    # above 0.5, but its interval reaches down to chance
    assert clears_the_bar(0.62, (0.48, 0.77), 0.40).endswith("(95% CI 0.48-0.77) does not clear 0.5")
    # clear of chance, but no better than a model that sees only the exposure
    why = clears_the_bar(0.70, (0.58, 0.81), 0.72)
    assert why == ("not promoted: test-year AUC 0.700 (95% CI 0.58-0.81) is not above its mean-intensity "
                   "baseline 0.720")
    assert "no test-year AUC" in clears_the_bar(math.nan, (math.nan, math.nan), 0.5)
    assert "does not clear" in clears_the_bar(0.9, (math.nan, math.nan), 0.5)  # no interval, no promotion
    assert "baseline could not be measured" in clears_the_bar(0.9, (0.8, 0.97), math.nan)
    assert all("\n" not in clears_the_bar(*a) for a in [(0.25, (0.1, 0.41), 0.35), (0.7, (0.58, 0.81), 0.72)])


def test_a_good_model_clears_the_bar():
    from osteo_mlflow.champion import clears_the_bar

    assert clears_the_bar(0.93, (0.88, 0.97), 0.51) is None
    assert clears_the_bar(0.62, (0.51, 0.73), 0.35) is None  # a baseline below chance is no bar above 0.5
