"""A training's MLflow runs: the parent run with its dataset input, one child run per fold, the test year.

Plain functions with the client, settings and paths passed in; tasks/train.py wraps each in a task.
A killed training resumes: the run ids sit in marker files in the training's folder.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import mlflow.exceptions
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from osteo.settings import Settings
from osteo.training import folds
from osteo.training import snapshot as snap
from osteo.training.evaluation import evaluate_on_test
from osteo.training.evaluation_report import TestYearExtras
from osteo.training.results import Evaluation, FoldResult, OperatingPoint
from osteo.training.snapshot import SnapshotInfo
from osteo_common.files import write_json
from osteo_mlflow.client import clean_params, code_tags, experiment_id, log_artifacts, log_epoch, log_metrics
from osteo_model.config import TrainConfig


def _params(values: dict[str, Any]) -> list[Param]:
    return [Param(k, v) for k, v in clean_params(values).items()]


def start_parent_run(c: MlflowClient, settings: Settings, snapshot: SnapshotInfo, config: TrainConfig,
                     run_dir: str, preset: str) -> str:
    """The parent MLflow run (reused when a killed training is started again), the snapshot its input; the
    config is flattened here, into the run's params."""
    marker = Path(run_dir) / "parent_run.json"
    if marker.exists():  # a resume: the run (FAILED when it stopped on an error) is running again
        run_id = json.loads(marker.read_text())["run_id"]
        c.update_run(run_id, "RUNNING")
        return run_id
    run = c.create_run(experiment_id(c, settings), run_name=f"{config.arch}-{preset}-{snapshot.digest[:8]}",
                       tags={**code_tags(), "snapshot_digest": snapshot.digest, "preset": preset})
    c.log_batch(run.info.run_id, params=_params({**config.to_dict(), "preset": preset, **snapshot_params(snapshot)}))
    log_snapshot_input(run.info.run_id, snapshot)
    write_json(marker, {"run_id": run.info.run_id})
    return run.info.run_id


def snapshot_params(snapshot: SnapshotInfo) -> dict[str, Any]:
    """The snapshot as run params: its digest, sizes, split settings and what its images are (synthetic)."""
    return {"snapshot_digest": snapshot.digest, "n_train": snapshot.n_train, "n_test": snapshot.n_test,
            "synthetic_images": snapshot.synthetic_images, "synthetic": snapshot.synthetic,
            "trained_on": snapshot.trained_on, **{f"split_{k}": v for k, v in snapshot.params.items()}}


def log_snapshot_input(run_id: str, snapshot: SnapshotInfo) -> None:
    """The snapshot as the run's dataset input: our own digest, and no patient key (schema and profile only)."""
    manifest = snap.load_manifest(snapshot.manifest_path)
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
    dataset = from_pandas(
        manifest[["member_id", "sha256", "label", "laterality", "study_year", "split", "fold", "box_source"]],
        source=snapshot.manifest_path, targets="label", name=f"snapshot-{snapshot.digest[:12]}",
        digest=snapshot.digest[:36])
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(dataset, context="training")


def fold_run(c: MlflowClient, parent_run_id: str, fold: int, run_dir: Path) -> str:
    """The fold's child run: created once, found again through its marker file on a resume."""
    marker = run_dir / f"fold-{fold}.run"
    if marker.exists():
        return marker.read_text().strip()
    parent = c.get_run(parent_run_id)
    child_id = c.create_run(parent.info.experiment_id, run_name=f"fold-{fold}",
                            tags={"mlflow.parentRunId": parent_run_id, "fold": str(fold), **code_tags()}).info.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(child_id)
    return child_id


def train_fold_tracked(c: MlflowClient, manifest_path: str, copies_path: str | None, fold: int,
                       config: TrainConfig, run_dir: str, parent_run_id: str, device=None) -> FoldResult:
    """Train one fold (or take its finished result), every epoch logged to the fold's child run."""
    out_dir = Path(run_dir)
    child_id = fold_run(c, parent_run_id, fold, out_dir)
    manifest = folds.training_frame(manifest_path, copies_path)
    result = folds.run_fold(manifest, fold, config, out_dir, device=device,
                            on_epoch=lambda epoch, rec: log_epoch(c, child_id, epoch, rec.to_dict()))
    if not result.resumed:
        c.log_batch(child_id, params=_params({"fold": fold, "n_train": result.n_train, "n_val": result.n_val}))
        log_metrics(c, child_id, {"best_epoch": result.best_epoch, **result.val_metrics}, "best_val_")
        log_artifacts(c, child_id, out_dir / f"fold-{fold}")
        c.set_terminated(child_id, "FINISHED")
    return replace(result, run_id=child_id)


def log_operating_point(c: MlflowClient, parent_run_id: str, point: OperatingPoint) -> None:
    """The threshold chosen on validation, as parameters and metrics of the parent run."""
    c.log_batch(parent_run_id, params=_params({"target_recall": point.target_recall}))
    log_metrics(c, parent_run_id, {"threshold": point.threshold, "val_oof_recall_1": point.val_recall,
                                   "val_oof_specificity": point.val_specificity})


def evaluate_tracked(c: MlflowClient, best: FoldResult, manifest_path: str, run_dir: str, parent_run_id: str,
                     device=None, threshold: float | None = None) -> Evaluation:
    """The best fold on the test year at the operating threshold (metrics test_*, the AUC's 95 % interval
    test_roc_auc_ci_lo/hi) and at 0.5 (test_at_0.5_*); metrics and plots on the parent run."""
    out_dir = Path(run_dir) / "test"
    result = evaluate_on_test(best.checkpoint, snap.load_manifest(manifest_path), out_dir, device=device,
                              threshold=threshold)
    log_metrics(c, parent_run_id, result.metrics, "test_")
    log_metrics(c, parent_run_id, result.metrics_at_half, "test_at_0.5_")
    log_metrics(c, parent_run_id, {"baseline_mean_intensity_auc": result.baseline_auc, "best_fold": best.fold,
                                   "best_fold_val_loss": best.val_loss, "test_roc_auc_ci_lo": result.auc_ci[0],
                                   "test_roc_auc_ci_hi": result.auc_ci[1]})
    log_artifacts(c, parent_run_id, out_dir, "test")
    return result


def report_extras_tracked(c: MlflowClient, factory, best: FoldResult, evaluation: Evaluation, manifest_path: str,
                          run_dir: str, parent_run_id: str, *, heads: bool = False, clinical: tuple[str, ...] = (),
                          device=None) -> TestYearExtras:
    """What the test year says beyond its headline: subgroups (with intervals) and calibration (ECE before
    and after temperature scaling) always; the BMD / T-score / 3-class heads and the clinical fusion on
    the best fold's frozen features when asked. Metrics and files on the parent run."""
    from osteo.training.compare import arch_test_report
    from osteo.training.heads import heads_report

    out = Path(run_dir) / "test"
    report = arch_test_report(factory, manifest_path, evaluation, best, out / "extra")
    if report is not None:
        log_artifacts(c, parent_run_id, out / "extra", "test/extra")
    head_metrics: dict[str, float] = {}
    if heads or clinical:
        rep = heads_report(factory, manifest_path, best.checkpoint, out / "heads", clinical, device=device)
        head_metrics = {k: v for k, v in rep.metrics.items() if v == v}  # NaN (undefined) left out
        log_artifacts(c, parent_run_id, out / "heads", "test/heads")
    extras = TestYearExtras(report, head_metrics)
    log_metrics(c, parent_run_id, extras.metrics())
    return extras


def finish_parent_run(c: MlflowClient, parent_run_id: str) -> None:
    c.set_terminated(parent_run_id, "FINISHED")


def fail_training(c: MlflowClient, parent_run_id: str, run_dir: str | Path) -> list[str]:
    """Mark the parent run and its fold runs that are still open FAILED (a training stopped on an error);
    returns the run ids marked."""
    marked = []
    children = [p.read_text().strip() for p in sorted(Path(run_dir).glob("fold-*.run"))]
    for run_id in [*children, parent_run_id]:
        try:
            status = c.get_run(run_id).info.status
        except mlflow.exceptions.MlflowException:
            continue
        if status in ("RUNNING", "SCHEDULED") or run_id == parent_run_id:
            c.set_terminated(run_id, "FAILED")
            marked.append(run_id)
    return marked


@contextmanager
def failing_marks_runs(c: MlflowClient, parent_run_id: str, run_dir: str | Path) -> Iterator[None]:
    """Any error in the block marks the training's open MLflow runs FAILED, then goes on up."""
    try:
        yield
    except BaseException:
        fail_training(c, parent_run_id, run_dir)
        raise
