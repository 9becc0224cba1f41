"""Training end to end on the demo cohort: learning, MLflow layout, registry, pyfunc, serving."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from osteo.training.params import TrainParams

# the demo run (synth, refresh, 3-fold training) is set up by the first test: give it time on 2 cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def _client():
    from mlflow.tracking import MlflowClient

    from osteo.settings import get_settings

    s = get_settings()
    return MlflowClient(s.resolved_tracking_uri(), s.resolved_tracking_uri()), s


def test_the_exposure_alone_cannot_predict_the_label(demo_run):
    assert demo_run["train"]["baseline_auc"] <= 0.65, demo_run["train"]


def test_champion_learns_from_the_bone(demo_run):
    """The issue's goal: test-year ROC AUC >= 0.90 for the registered champion on the demo cohort."""
    result = demo_run["train"]
    assert result["test_auc"] >= 0.90, result
    assert result["champion"] and result["model_version"] == "1"
    # it cleared the bar every version must: above chance with its interval, and above its baseline
    assert result["test_auc_ci"][0] > 0.5 and result["test_auc"] > result["baseline_auc"]
    assert result["decision"] == "no champion yet"


def test_mlflow_parent_with_one_child_per_fold_and_artifacts(demo_run):
    client, s = _client()
    result = demo_run["train"]
    parent = client.get_run(result["run_id"])
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(int(c.data.tags["fold"]) for c in children) == list(range(len(result["folds"])))
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert len(history) >= 2 and [m.step for m in history] == sorted(m.step for m in history)
    assert parent.data.params["arch"] == "resnet18" and "snapshot_digest" in parent.data.params
    # the snapshot says what its images are: every crop of the demo cohort is from a synthetic film
    assert parent.data.params["trained_on"] == "synthetic" and parent.data.params["synthetic"] == "True"
    assert result["synthetic_images"] == int(parent.data.params["synthetic_images"]) > 0
    assert result["trained_on"] == "synthetic"
    assert parent.data.tags["git_commit"] and parent.data.tags["code_version"]
    assert parent.data.metrics["test_roc_auc"] == pytest.approx(result["test_auc"])
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "test")}
    for want in ("confusion_matrix.png", "roc.png", "pr.png", "reliability.png", "classification_report.txt"):
        assert f"test/{want}" in names
    assert any(a.path.endswith(".png") for a in client.list_artifacts(parent.info.run_id, "test/gradcam"))
    (dataset_input,) = parent.inputs.dataset_inputs
    assert dataset_input.dataset.digest == result["snapshot_digest"][:36]


def _png_and_dicom(demo_run) -> tuple[bytes, bytes]:
    from sqlalchemy import select

    from db.models import SourceFile
    from osteo.settings import get_settings, session_factory
    from osteo.training.snapshot import load_manifest

    manifest = Path(demo_run["settings"].data_dir) / "snapshots" / f"{demo_run['train']['snapshot_digest']}.csv"
    test = load_manifest(manifest).query("split == 'test'")
    with session_factory(get_settings())() as s:
        dicom_path = s.scalar(select(SourceFile.path).where(SourceFile.kind == "dicom",
                                                            SourceFile.status == "ingested"))
    return Path(test["path"].iloc[0]).read_bytes(), Path(dicom_path).read_bytes()


def test_champion_pyfunc_predicts_png_and_dicom(demo_run):
    import mlflow
    from PIL import Image

    png, dcm = _png_and_dicom(demo_run)
    model = mlflow.pyfunc.load_model("models:/osteo-classifier@champion")
    out = model.predict(pd.DataFrame({"image": [png]}), params={"cropped": True})  # a crop, said so
    assert list(out.columns) == ["probability", "label", "label_name", "heatmap_png", "side", "box",
                                 "box_confidence", "localiser", "sides", "error", "trained_on", "synthetic_training"]
    # the demo learned from synthetic films only, and every answer says so
    assert out["trained_on"].tolist() == ["synthetic"] and out["synthetic_training"].tolist() == [True]
    assert ((out["probability"] >= 0) & (out["probability"] <= 1)).all()
    assert set(out["label"]) <= {0, 1} and list(out["error"]) == [""]
    # a whole DICOM is located and cropped first: scored with its box, or refused with a reason
    whole = model.predict(pd.DataFrame({"image": [dcm]}), params={"heatmap": False}).iloc[0]
    assert (whole["label"] in (0, 1) and json.loads(whole["box"])) or whole["error"].startswith("not_located")
    heat = Image.open(io.BytesIO(base64.b64decode(out["heatmap_png"].iloc[0])))
    assert heat.size[0] == heat.size[1] > 0
    arrays = model.unwrap_python_model().predict_images([np.asarray(Image.open(io.BytesIO(png)))])
    assert arrays[0]["probability"] == pytest.approx(out["probability"].iloc[0], abs=1e-5)
    # logged as code: MLflow imports osteo_classifier.py to build it; nothing in the model is a pickle
    meta = model.metadata.flavors["python_function"]
    assert meta["loader_module"] == "mlflow.pyfunc.loaders.code_model", meta
    local = Path(mlflow.artifacts.download_artifacts("models:/osteo-classifier@champion"))
    assert (local / "osteo_classifier.py").is_file()
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle")]


def test_a_worse_challenger_does_not_take_the_champion(demo_run):
    from flows.train import train_flow

    client, s = _client()
    weak = train_flow(params=TrainParams(preset="demo", epochs=1, folds=2)).to_dict()
    assert weak["model_version"] == "2"
    assert str(client.get_model_version_by_alias(s.registered_model, "challenger").version) == "2"
    champion = str(client.get_model_version_by_alias(s.registered_model, "champion").version)
    # the gate: above chance and the baseline on its own test year, then compared on the same test images
    assert (champion == "2") == weak["champion"]
    if not weak["champion"]:
        assert champion == "1"
        if weak["decision"].startswith("not promoted"):  # under the bar: never compared with the champion
            assert weak["champion_test_auc"] is None and "\n" not in weak["decision"]
            lo = weak["test_auc_ci"][0]
            assert not lo > 0.5 or not weak["test_auc"] > weak["baseline_auc"]
        else:
            assert weak["champion_test_auc"] >= weak["test_auc"]


def _run_dir(demo_run, version: str) -> Path:
    client, s = _client()
    digest = client.get_model_version(s.registered_model, version).tags["training_digest"]
    return Path(s.data_dir) / "training" / digest[:16]


def test_operating_threshold_reaches_the_target_recall_on_validation_and_labels_the_pyfunc(demo_run):
    import mlflow

    from osteo_model.metrics import compute_metrics

    result, s = demo_run["train"], demo_run["settings"]
    thr, target = result["threshold"], result["target_recall"]
    assert target == s.target_recall == 0.9 and 0 < thr < 1
    folds = [json.loads((_run_dir(demo_run, "1") / f"fold-{k}.json").read_text()) for k in range(len(result["folds"]))]
    labels = [y for f in folds for y in f["val_labels"]]
    probs = [p for f in folds for p in f["val_probs"]]
    assert len(labels) == sum(f["n_val"] for f in folds)
    assert compute_metrics(labels, probs, thr)["recall_1"] >= target
    # the highest such threshold: the next probability above it misses the target
    above = [p for p in probs if p > thr]
    if above:
        assert compute_metrics(labels, probs, min(above))["recall_1"] < target
    model = mlflow.pyfunc.load_model("models:/osteo-classifier/1")
    assert model.metadata.metadata["threshold"] == pytest.approx(thr)
    png, _ = _png_and_dicom(demo_run)
    out = model.predict(pd.DataFrame({"image": [png]}), params={"cropped": True, "heatmap": False})
    assert out["label"].iloc[0] == int(out["probability"].iloc[0] >= thr)
    client, _ = _client()
    mv = client.get_model_version(s.registered_model, "1")
    assert float(mv.tags["threshold"]) == pytest.approx(thr) and "screening aid" in mv.description
    from osteo.etl.synthetic import DEMO_NOTICE

    # the model card says first and plainly that the version learned from synthetic films
    assert mv.tags["trained_on"] == "synthetic" and mv.description.startswith(f"**{DEMO_NOTICE}**")
    parent = client.get_run(result["run_id"])
    for name in ("test_recall_1", "test_at_0.5_recall_1", "test_specificity", "test_at_0.5_specificity"):
        assert name in parent.data.metrics, name
    names = {a.path for a in client.list_artifacts(result["run_id"], "test")}
    assert {"test/confusion_matrix.png", "test/confusion_matrix_at_0.5.png"} <= names


def test_the_test_year_extras_are_on_the_parent_run(demo_run):
    """Subgroups with intervals, calibration before/after temperature, the BMD / 3-class heads and the
    clinical fusion: in the report and on the parent run (metrics and files)."""
    client, _s = _client()
    extras, run_id = demo_run["train"]["test_extras"], demo_run["train"]["run_id"]
    assert {"test_ece_before", "test_ece_after", "test_temperature", "test_n_subgroups", "bmd_pearson_r",
            "tscore_pearson_r", "class3_accuracy", "fusion_auc_image", "fusion_auc_with_clinical"} <= set(extras)
    assert extras["test_n_subgroups"] >= 6 and 0 <= extras["test_ece_before"] <= 1 and extras["test_temperature"] > 0
    # the heads learn BMD from the same features that flag osteoporosis: a clear correlation on the test year
    assert extras["bmd_pearson_r"] > 0.5, extras
    logged = client.get_run(run_id).data.metrics
    assert {k: logged[k] for k in ("test_ece_after", "bmd_pearson_r")} == pytest.approx(
        {k: extras[k] for k in ("test_ece_after", "bmd_pearson_r")})
    names = {a.path for folder in ("test/extra", "test/heads") for a in client.list_artifacts(run_id, folder)}
    assert {"test/extra/subgroups.md", "test/extra/calibration.json", "test/heads/heads_metrics.json",
            "test/heads/heads_bmd_scatter.png"} <= names, names


def test_the_same_training_again_registers_nothing_new(demo_run):
    from flows.train import train_flow

    client, s = _client()
    before = len(client.search_model_versions(f"name = '{s.registered_model}'"))
    again = train_flow(params=TrainParams(preset="demo")).to_dict()  # every fold resumes from its files
    assert again["already_registered"] and again["model_version"] == "1", again
    assert "already registered as version 1" in again["decision"]
    assert len(client.search_model_versions(f"name = '{s.registered_model}'")) == before
    assert client.get_run(again["run_id"]).info.status == "FINISHED"


def test_an_unusable_test_year_is_refused_before_any_run(demo_run):
    from flows.train import train_flow
    from osteo.errors import UserError

    client, s = _client()
    exp = client.get_experiment_by_name(s.mlflow_experiment).experiment_id
    runs_before = len(client.search_runs([exp]))
    with pytest.raises(UserError, match="test year 2030 has 0 left-femur images"):
        train_flow(params=TrainParams(preset="demo", epochs=1, folds=2, test_year=2030))
    with pytest.raises(UserError, match="nosuch.pth: no such file"):
        train_flow(params=TrainParams(preset="demo", epochs=1, folds=2, pretrained_weights="nosuch.pth"))
    assert len(client.search_runs([exp])) == runs_before


def test_a_training_that_fails_marks_its_runs_failed(demo_run, monkeypatch):
    import osteo.training.folds
    from flows.train import train_flow

    def broken(manifest, fold, config, out_dir, **kw):
        raise RuntimeError(f"injected fault in fold {fold}")

    monkeypatch.setattr(osteo.training.folds, "run_fold", broken)
    client, s = _client()
    exp = client.get_experiment_by_name(s.mlflow_experiment).experiment_id
    with pytest.raises(RuntimeError, match="injected fault"):
        train_flow(params=TrainParams(preset="demo", epochs=1, folds=2, seed=17, register_version=False))
    (parent,) = client.search_runs([exp], "params.seed = '17' and attributes.status = 'FAILED'")
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert children and {c.info.status for c in children} == {"FAILED"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_models_serve(demo_run, tmp_path):
    png, _ = _png_and_dicom(demo_run)
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # the scoring server execs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": demo_run["settings"].resolved_tracking_uri(),
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen([mlflow_bin, "models", "serve", "-m", "models:/osteo-classifier@champion",
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server did not start: {proc.stdout.read().decode()[-2000:]}")
                time.sleep(0.5)
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(png).decode()]]},
                           "params": {"cropped": True}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        (pred,) = answer["predictions"]
        assert 0 <= pred["probability"] <= 1 and pred["label"] in (0, 1) and pred["heatmap_png"]
        assert pred["trained_on"] == "synthetic" and pred["synthetic_training"] is True
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
