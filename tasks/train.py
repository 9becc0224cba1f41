"""Training tasks: a decorator and one call each (the work is in osteo/training/ and osteo_mlflow.runs)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from osteo.settings import get_settings, session_factory
from osteo.training import folds as training_folds
from osteo.training import snapshot
from osteo.training.evaluation_report import TestYearExtras
from osteo.training.results import Evaluation, FoldResult, OperatingPoint, Registration
from osteo.training.snapshot import SnapshotInfo
from osteo_mlflow import registry, runs
from osteo_mlflow.client import client
from osteo_model.config import TrainConfig
from osteo_model.train import select_device
from tasks.policy import RETRY


@task(name="take-snapshot", tags=["db"], **RETRY)
def take_snapshot(test_year: int, folds: int, seed: int, box_source: str = "human") -> SnapshotInfo:
    s = get_settings()
    return snapshot.take_snapshot(session_factory(s, create=True), Path(s.data_dir) / "snapshots",
                                  test_year=test_year, folds=folds, seed=seed, box_source=box_source)


@task(name="check-training-inputs", tags=["db"], **RETRY)
def check_training_inputs(config: TrainConfig, test_year: int, box_source: str = "human") -> None:
    """Refuse (UserError, one line) a training that cannot finish, before any fold trains."""
    with session_factory(get_settings(), create=True)() as session:
        exports = snapshot.current_exports(session, box_source)
    training_folds.check_training_inputs(exports, config, test_year)


@task(name="augment-training-set", tags=["augment"], **RETRY)
def augment_training_set(manifest_path: str, seed: int, copies: int) -> str:
    s = get_settings()
    return training_folds.augment_training_set(session_factory(s), manifest_path, Path(s.data_dir) / "augmented",
                                               seed, copies)


@task(name="start-training-run", tags=["mlflow"], **RETRY)
def start_training_run(snap: SnapshotInfo, config: TrainConfig, run_dir: str, preset: str) -> str:
    s = get_settings()
    return runs.start_parent_run(client(s), s, snap, config, run_dir, preset)


@task(name="train-fold", tags=["train"], **RETRY)
def train_fold(manifest_path: str, copies_path: str | None, fold: int, config: TrainConfig, run_dir: str,
               parent_run_id: str) -> FoldResult:
    return runs.train_fold_tracked(client(get_settings()), manifest_path, copies_path, fold, config, run_dir,
                                   parent_run_id, device=select_device(config.device))


@task(name="choose-operating-point", tags=["mlflow"], **RETRY)
def choose_operating_point(results: list[FoldResult], target_recall: float, parent_run_id: str) -> OperatingPoint:
    point = training_folds.operating_point(results, target_recall)
    runs.log_operating_point(client(get_settings()), parent_run_id, point)
    return point


@task(name="evaluate-test-year", tags=["mlflow"], **RETRY)
def evaluate_test_year(best: FoldResult, manifest_path: str, run_dir: str, parent_run_id: str,
                       threshold: float | None = None) -> Evaluation:
    return runs.evaluate_tracked(client(get_settings()), best, manifest_path, run_dir, parent_run_id,
                                 device=select_device(), threshold=threshold)


@task(name="report-test-year-extras", tags=["mlflow"], **RETRY)
def report_test_year_extras(best: FoldResult, evaluation: Evaluation, manifest_path: str, run_dir: str,
                            parent_run_id: str, heads: bool = False, clinical: tuple[str, ...] = ()) -> TestYearExtras:
    s = get_settings()
    return runs.report_extras_tracked(client(s), session_factory(s), best, evaluation, manifest_path, run_dir,
                                      parent_run_id, heads=heads, clinical=clinical, device=select_device())


@task(name="register-model", tags=["mlflow", "registry"], **RETRY)
def register_model(best: FoldResult, evaluation: Evaluation, snap: SnapshotInfo, parent_run_id: str,
                   digest: str = "", target_recall: float | None = None, folds: int | None = None) -> Registration:
    s = get_settings()
    return registry.register_best(client(s), s, session_factory(s), best, evaluation, snap, parent_run_id,
                                  digest=digest, target_recall=target_recall, folds=folds)


@task(name="finish-training-run", tags=["mlflow"], **RETRY)
def finish_training_run(parent_run_id: str) -> None:
    runs.finish_parent_run(client(get_settings()), parent_run_id)
