"""The champion gate in the registry (issue 23 item 5): a worse-than-chance version is registered but never
champion, even with no champion yet, and the decision says why in one line; a good version then is."""

from __future__ import annotations

import pytest

from tests.osteo_mlflow.test_registration import _toy_store


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A fresh store (no champion): the toy weights against labels the other way round (test AUC 0: worse than
    chance) registered first, then against the declared labels."""
    from osteo_mlflow.client import alias_version

    with _toy_store(tmp_path_factory.mktemp("gate")) as toy:
        test_first = ["test"] * 4 + ["train"] * 4
        worse = toy["crops"].assign(label=1 - toy["crops"]["label"], split=test_first, fold=[-1] * 4 + [0, 1, 0, 1])
        bad, _ = toy["register"](worse, "w", "digest-worse")
        bad_alias = alias_version(toy["client"], toy["settings"].registered_model, "champion")
        good, parent = toy["register"](toy["crops"].assign(split=test_first, fold=[-1] * 4 + [0, 1, 0, 1]), "g",
                                       "digest-good")
        yield toy | {"bad": bad, "bad_alias": bad_alias, "good": good, "good_run": parent}


def test_a_worse_than_chance_first_version_is_registered_but_not_champion(gated):
    """Issue 23: a test AUC of 0.250 below its baseline became champion because the first version always did."""
    bad = gated["bad"]
    assert bad.model_version == "1" and bad.registered and not bad.champion and bad.champion_version is None
    assert gated["bad_alias"] is None  # no champion: the service says so
    assert bad.decision == "not promoted: test-year AUC 0.000 (95% CI 0.00-0.00) does not clear 0.5"
    c, name = gated["client"], gated["settings"].registered_model
    tags = c.get_model_version(name, "1").tags
    assert (tags["test_auc"], tags["baseline_auc"], tags["test_positives"], tags["test_negatives"]) == (
        "0.0", "0.5", "2", "2")
    assert c.get_run(c.get_model_version(name, "1").run_id).data.tags["champion_decision"] == bad.decision


def test_a_good_version_then_becomes_champion(gated):
    good = gated["good"]
    assert good.model_version == "2" and good.champion and good.decision == "no champion yet"
    c, name = gated["client"], gated["settings"].registered_model
    assert str(c.get_model_version_by_alias(name, "champion").version) == "2"
    tags = c.get_model_version(name, "2").tags
    assert float(tags["test_auc"]) == 1.0 and float(tags["test_auc_ci_lo"]) > 0.5


def test_the_service_reads_a_versions_test_year_from_its_run(gated, tmp_path):
    """The figures the page and the API show (osteo_mlflow.serving.read_test_year): those the training's test-year
    evaluation logged on its run (osteo_mlflow.runs.evaluate_tracked), with their n."""
    from pathlib import Path

    from osteo_mlflow.runs import evaluate_tracked
    from osteo_mlflow.serving import read_test_year

    c, s = gated["client"], gated["settings"]
    manifest = Path(s.data_dir) / "snapshots" / f"{'g' * 64}.csv"
    ev = evaluate_tracked(c, gated["best"], str(manifest), str(tmp_path), gated["good_run"],
                          threshold=gated["threshold"])
    got = read_test_year(c, s.registered_model, "2")
    assert got == {"year": 2022, "n": 4, "auc": ev.metrics["roc_auc"], "auc_ci_low": ev.auc_ci[0],
                   "auc_ci_high": ev.auc_ci[1], "recall": ev.metrics["recall_1"], "positives": 2,
                   "specificity": ev.metrics["specificity"], "negatives": 2}
    assert read_test_year(c, s.registered_model, "1") is None  # its run logged no test year


def test_the_training_summary_says_there_is_no_champion(gated):
    from osteo.training.results import _registered_line

    name = gated["settings"].registered_model
    assert _registered_line(gated["bad"]) == f"{name} version 1 (challenger); no champion"  # never "stays None"
    assert _registered_line(gated["good"]) == f"{name} version 2 (challenger) -> champion"
