"""The champion gate, both ways."""

from __future__ import annotations

import math

from osteo_mlflow.champion import should_promote


def test_first_model_becomes_champion():
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
