"""Training tasks: snapshot, augmentation, one task per fold, test evaluation, registration."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from prefect import task

from osteo import snapshot as snap
from osteo import training
from osteo.settings import get_settings
from tasks import tracking
from tasks.context import ensure_schema, session_factory, transient_only

RETRY = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=transient_only)


@task(name="take-snapshot", tags=["db"], **RETRY)
def take_snapshot(test_year: int, folds: int, seed: int) -> dict:
    ensure_schema()
    s = get_settings()
    return snap.take_snapshot(session_factory(), Path(s.data_dir) / "snapshots", test_year=test_year,
                              folds=folds, seed=seed)


@task(name="augment-training-set", tags=["augment"], **RETRY)
def augment_training_set(manifest_path: str, seed: int, copies: int) -> str:
    """One seeded copy per training image (the seed's recipe), recorded for lineage; returns the copies CSV."""
    from osteo_model.augment import materialize_copies

    s = get_settings()
    manifest = snap.load_manifest(manifest_path)
    train = manifest[manifest["split"] == "train"]
    out = materialize_copies(train, Path(s.data_dir) / "augmented" / f"seed-{seed}", seed=seed, copies=copies)
    snap.record_augmented_copies(session_factory(), out)
    path = Path(manifest_path).with_name(Path(manifest_path).stem + f"-copies-seed{seed}.csv")
    out.assign(params=out["params"].map(json.dumps)).to_csv(path, index=False)
    return str(path)


@task(name="start-training-run", tags=["mlflow"], **RETRY)
def start_training_run(snapshot: dict, config: dict, run_dir: str, preset: str) -> str:
    """The parent MLflow run (reused when a killed training is started again)."""
    import mlflow

    s = get_settings()
    marker = Path(run_dir) / "parent_run.json"
    if marker.exists():
        return json.loads(marker.read_text())["run_id"]
    c = tracking.client(s)
    exp = tracking.experiment_id(c, s)
    run = c.create_run(exp, run_name=f"{config['arch']}-{preset}-{snapshot['digest'][:8]}",
                       tags={**tracking.code_tags(), "snapshot_digest": snapshot["digest"], "preset": preset})
    c.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in tracking.clean_params(
        {**config, "preset": preset, "snapshot_digest": snapshot["digest"], "n_train": snapshot["n_train"],
         "n_test": snapshot["n_test"], **{f"split_{k}": v for k, v in snapshot["params"].items()}}).items()])
    manifest = snap.load_manifest(snapshot["manifest_path"])
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
    # the dataset input: our own digest, and no patient key (schema and profile only)
    dataset = mlflow.data.from_pandas(
        manifest[["member_id", "sha256", "label", "laterality", "study_year", "split", "fold"]],
        source=snapshot["manifest_path"], targets="label", name=f"snapshot-{snapshot['digest'][:12]}",
        digest=snapshot["digest"][:36])
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.log_input(dataset, context="training")
    training.write_json(marker, {"run_id": run.info.run_id})
    return run.info.run_id


@task(name="train-fold", tags=["train"], **RETRY)
def train_fold(manifest_path: str, copies_path: str | None, fold: int, config: dict, run_dir: str,
               parent_run_id: str) -> dict:
    from osteo_model.train import TrainConfig, select_device

    s = get_settings()
    c = tracking.client(s)
    out_dir = Path(run_dir)
    child_marker = out_dir / f"fold-{fold}.run"
    if child_marker.exists():
        child_id = child_marker.read_text().strip()
    else:
        parent = c.get_run(parent_run_id)
        child_id = c.create_run(parent.info.experiment_id, run_name=f"fold-{fold}",
                                tags={"mlflow.parentRunId": parent_run_id, "fold": str(fold),
                                      **tracking.code_tags()}).info.run_id
        out_dir.mkdir(parents=True, exist_ok=True)
        child_marker.write_text(child_id)
    manifest = training.training_frame(manifest_path, copies_path)
    cfg = TrainConfig.from_dict(config)
    result = training.run_fold(manifest, fold, cfg, out_dir, device=select_device(),
                               on_epoch=lambda epoch, rec: tracking.log_epoch(c, child_id, epoch, rec))
    if not result.get("resumed"):
        c.log_batch(child_id, params=[__import__("mlflow").entities.Param(k, v) for k, v in
                                      tracking.clean_params({"fold": fold, "n_train": result["n_train"],
                                                             "n_val": result["n_val"]}).items()])
        tracking.log_metrics(c, child_id, {"best_epoch": result["best_epoch"], **result["val_metrics"]}, "best_val_")
        tracking.log_artifacts(c, child_id, out_dir / f"fold-{fold}")
        c.set_terminated(child_id, "FINISHED")
    return {k: v for k, v in result.items() if k != "history"} | {"run_id": child_id}


@task(name="evaluate-test-year", tags=["mlflow"], **RETRY)
def evaluate_test_year(best: dict, manifest_path: str, run_dir: str, parent_run_id: str) -> dict:
    from osteo_model.train import select_device

    s = get_settings()
    c = tracking.client(s)
    out_dir = Path(run_dir) / "test"
    result = training.evaluate_on_test(best["checkpoint"], snap.load_manifest(manifest_path), out_dir,
                                       device=select_device())
    tracking.log_metrics(c, parent_run_id, result["metrics"], "test_")
    tracking.log_metrics(c, parent_run_id, {"baseline_mean_intensity_auc": result["baseline_auc"],
                                            "best_fold": best["fold"], "best_fold_val_loss": best["val_loss"]})
    tracking.log_artifacts(c, parent_run_id, out_dir, "test")
    return {k: v for k, v in result.items() if k != "probs"}


@task(name="register-model", tags=["mlflow", "registry"], **RETRY)
def register_model(best: dict, evaluation: dict, snapshot: dict, manifest_path: str, parent_run_id: str) -> dict:
    """Log the pyfunc + checkpoint, register it as challenger; champion only if it beats the champion."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from osteo.champion import should_promote
    from osteo.pyfunc import write_model_code
    from osteo.settings import REPO_ROOT

    s = get_settings()
    c = tracking.client(s)
    manifest = snap.load_manifest(manifest_path)
    test = manifest[manifest["split"] == "test"]
    example = pd.DataFrame({"image": [Path(test["path"].iloc[0]).read_bytes()]})
    signature = infer_signature(example, pd.DataFrame({"probability": [0.5], "label": [1], "label_name": ["x"],
                                                       "heatmap_png": ["x"]}), params={"heatmap": True})
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_artifact(best["checkpoint"], "checkpoint")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(write_model_code(Path(best["checkpoint"]).parent / "model-code")),
            artifacts={"checkpoint": best["checkpoint"]},
            code_paths=[str(REPO_ROOT / "osteo_model"), str(REPO_ROOT / "osteo")],
            signature=signature, input_example=example, registered_model_name=s.registered_model,
            pip_requirements=_requirements(),
        )
    version = str(info.registered_model_version)
    for key, value in {"snapshot_digest": snapshot["digest"], "test_auc": evaluation["metrics"].get("roc_auc"),
                       "test_recall": evaluation["metrics"].get("recall_1"), "run_id": parent_run_id,
                       **tracking.code_tags()}.items():
        c.set_model_version_tag(s.registered_model, version, key, str(value))
    tracking.set_alias(c, s.registered_model, "challenger", version)
    champion_version = tracking.alias_version(c, s.registered_model, "champion")
    champion_metrics = None
    if champion_version is not None and champion_version != version:
        champion_metrics = _score_version(s.registered_model, champion_version, test)
    promote, why = should_promote(evaluation["metrics"], champion_metrics)
    if promote:
        tracking.set_alias(c, s.registered_model, "champion", version)
    c.set_tag(parent_run_id, "champion_decision", why)
    snap.record_training_run(session_factory(), snapshot_id=snapshot["snapshot_id"], run_id=parent_run_id,
                             arch=best["arch"], preset=c.get_run(parent_run_id).data.tags.get("preset", ""),
                             model_name=s.registered_model, model_version=version,
                             test_auc=evaluation["metrics"].get("roc_auc"))
    c.set_terminated(parent_run_id, "FINISHED")
    return {"model_name": s.registered_model, "model_version": version, "champion": promote,
            "champion_version": version if promote else champion_version, "decision": why,
            "champion_test_auc": (champion_metrics or {}).get("roc_auc")}


def _score_version(name: str, version: str, test) -> dict[str, Any]:
    """The current champion scored on the challenger's test set, so both are judged on the same images."""
    import mlflow

    from osteo_model.metrics import compute_metrics

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    results = model.unwrap_python_model().predict_images(test["path"].map(lambda p: Path(p).read_bytes()).tolist(),
                                                         heatmaps=False)
    probs = [r["probability"] for r in results]
    m = compute_metrics(test["label"].astype(int).tolist(), probs)
    return {k: v for k, v in m.items() if isinstance(v, int | float)}


def _requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["torch", "torchvision", "numpy", "pandas", "pillow", "pydicom", "mlflow", "scikit-learn"]
    return [f"{p}=={version(p).split('+')[0]}" for p in pkgs]
