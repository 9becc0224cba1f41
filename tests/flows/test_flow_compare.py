"""`osteo compare`: every architecture on one snapshot and its folds, one MLflow parent with the table.

A small cohort (40 patients) goes through the plain refresh into an isolated home (its own database,
MLflow store and registry), then `osteo compare --archs resnet18,resnet34 --folds 2 --epochs 2` runs
through the command line; the table and the child runs are read back from MLflow.
"""

from __future__ import annotations

import json
import math
import os
from unittest import mock

import pandas as pd
import pytest

PATIENTS, SEED = 40, 3


def test_archs_are_checked_before_anything_runs(capsys):
    from osteo.errors import UserError
    from osteo.training.compare import DEFAULT_ARCHS, parse_archs
    from osteo_cli.main import main

    assert parse_archs(None) == DEFAULT_ARCHS
    assert parse_archs(" ResNet34,resnet18,resnet34 ") == ("resnet34", "resnet18")
    with pytest.raises(UserError):
        parse_archs("resnet18,alexnet")
    assert main(["compare", "--archs", "alexnet", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["reason"] == "bad_option"


def test_table_markdown_says_undefined_not_nan():
    import pandas as pd

    from osteo.training.compare import table_markdown

    md = table_markdown(pd.DataFrame({"arch": ["resnet18"], "roc_auc": [float("nan")], "recall_1": [0.5]}))
    assert md.splitlines()[2] == "| resnet18 | n/a | 0.500 |"


@pytest.fixture(scope="module")
def compared(tmp_path_factory, prefect_harness):
    from osteo.synth import generate_cohort
    from tests.helpers import isolated_settings, plain_refresh

    root = tmp_path_factory.mktemp("compare")
    generate_cohort(root / "cohort", patients=PATIENTS, seed=SEED, workers=1)
    with isolated_settings(root / "home", OSTEO_WORKERS="1") as settings:
        from osteo.settings import session_factory
        from osteo_cli.main import main

        plain_refresh(session_factory(settings, create=True), root / "cohort", settings)
        # configure_environment sets process-wide variables: the test's copy of the environment is restored
        with mock.patch.dict(os.environ, {"OSTEO_PREFECT_REUSE_LOCAL": "false"}):
            out_file = root / "out.json"
            with mock.patch("sys.stdout", new=out_file.open("w")) as out:
                code = main(["compare", "--archs", "resnet18,resnet34", "--folds", "2", "--epochs", "2", "--json"])
                out.close()
        yield {"code": code, "result": json.loads(out_file.read_text().strip().splitlines()[-1]), "settings": settings}


@pytest.mark.slow
def test_compare_leaves_one_parent_with_the_table(compared):
    from mlflow.tracking import MlflowClient

    from osteo_mlflow.compare import experiment_name, read_table

    assert compared["code"] == 0, compared
    result, s = compared["result"], compared["settings"]
    c = MlflowClient(s.resolved_tracking_uri(), s.resolved_tracking_uri())
    parent = c.get_run(result["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["archs"] == "resnet18,resnet34"
    assert c.get_experiment(parent.info.experiment_id).name == experiment_name(s)
    assert parent.data.tags["best_arch"] == result["best_arch"] in ("resnet18", "resnet34")
    table = read_table(c, parent.info.run_id)
    assert list(table["arch"]) == ["resnet18", "resnet34"]
    for col in ("precision_0", "recall_0", "f1_0", "precision_1", "recall_1", "f1_1", "roc_auc",
                "threshold", "train_seconds", "n_parameters"):
        assert col in table.columns, col
    assert table.set_index("arch")["n_parameters"]["resnet34"] > table.set_index("arch")["n_parameters"]["resnet18"]
    md = {a.path for a in c.list_artifacts(parent.info.run_id, "comparison")}
    assert md == {"comparison/comparison.md", "comparison/comparison_table.json"}
    # one child per architecture, each with the same metric names, each with its folds nested below
    exp = parent.info.experiment_id
    children = c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(ch.data.tags["arch"] for ch in children) == ["resnet18", "resnet34"]
    names = [set(ch.data.metrics) for ch in children]
    assert names[0] == names[1]
    assert {"test_roc_auc", "test_recall_1", "test_precision_1", "test_f1_1", "test_recall_0", "train_seconds",
            "n_parameters", "test_ece_before", "test_ece_after", "test_temperature"} <= names[0]
    for ch in children:
        row = table.set_index("arch").loc[ch.data.tags["arch"]]
        assert ch.data.metrics["n_parameters"] == row["n_parameters"]
        assert ch.data.metrics["train_seconds"] > 0
        # each architecture at its own operating threshold, chosen on its out-of-fold validation
        assert ch.data.metrics["threshold"] == pytest.approx(row["threshold"], abs=1e-4)
        for col in ("recall_1", "precision_1", "f1_1", "recall_0", "roc_auc"):
            logged = ch.data.metrics[f"test_{col}"]  # undefined (e.g. no osteoporosis predicted): NaN in both
            assert (math.isnan(logged) and pd.isna(row[col])) or logged == pytest.approx(row[col], abs=1e-4), col
        extra = {a.path for a in c.list_artifacts(ch.info.run_id, "test/extra")}
        assert extra == {f"test/extra/{n}" for n in ("subgroups.csv", "subgroups.md", "calibration.json")}
        assert ch.data.metrics["test_ece_before"] == pytest.approx(row["ece"], abs=1e-4)
        folds = c.search_runs([exp], f"tags.mlflow.parentRunId = '{ch.info.run_id}'")
        assert sorted(int(f.data.tags["fold"]) for f in folds) == [0, 1]
        assert ch.info.status == "FINISHED"


@pytest.mark.slow
def test_compare_registers_nothing_unless_asked(compared):
    from mlflow.tracking import MlflowClient

    s = compared["settings"]
    c = MlflowClient(s.resolved_tracking_uri(), s.resolved_tracking_uri())
    assert compared["result"]["registered"] is None
    assert not c.search_model_versions(f"name = '{s.registered_model}'")


@pytest.mark.slow
def test_a_rerun_resumes_and_register_goes_through_the_gate(compared):
    from mlflow.tracking import MlflowClient

    from flows.compare import compare_flow
    from osteo_mlflow.compare import read_table

    first, s = compared["result"], compared["settings"]
    again = compare_flow(archs="resnet18,resnet34", folds=2, epochs=2, register_best=True)
    assert again.run_id == first["run_id"]  # the same parent, its folds not trained again
    assert all(f.resumed for r in again.results for f in r.folds)
    c = MlflowClient(s.resolved_tracking_uri(), s.resolved_tracking_uri())
    assert len(read_table(c, again.run_id)) == 2  # the table is not logged twice
    reg = again.registration
    winner = next(r for r in again.results if r.arch == again.best_arch)
    # no champion yet: champion when it clears the bar (above chance with its interval, and above its baseline)
    ev = winner.evaluation
    clears = ev.auc_ci[0] > 0.5 and ev.metrics["roc_auc"] > ev.baseline_auc
    assert reg is not None and reg.model_version == "1" and reg.champion == clears
    assert reg.decision == "no champion yet" if clears else reg.decision.startswith("not promoted: test-year AUC")
    assert c.get_model_version(s.registered_model, "1").run_id == winner.run_id
