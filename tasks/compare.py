"""Comparison tasks: a decorator and one call each (the work is in osteo.training.compare and osteo_mlflow.compare).

The folds, the test-year evaluation and the registration are the train flow's own tasks (tasks/train.py).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from osteo.settings import get_settings, session_factory
from osteo.training.compare import ArchResult, arch_test_report, n_parameters
from osteo.training.results import Evaluation, FoldResult
from osteo.training.snapshot import SnapshotInfo
from osteo_mlflow import compare
from osteo_mlflow.client import client
from osteo_model.config import TrainConfig
from tasks.policy import RETRY


@task(name="start-compare-run", tags=["mlflow"], **RETRY)
def start_compare_run(snap: SnapshotInfo, config: TrainConfig, archs: list[str], out_dir: str, preset: str) -> str:
    s = get_settings()
    return compare.start_compare_run(client(s), s, snap, config, archs, out_dir, preset)


@task(name="start-architecture-run", tags=["mlflow"], **RETRY)
def start_arch_run(compare_run_id: str, arch: str, config: TrainConfig, run_dir: str, preset: str) -> str:
    return compare.start_arch_run(client(get_settings()), compare_run_id, arch, config, run_dir, preset)


@task(name="finish-architecture-run", tags=["mlflow"], **RETRY)
def finish_arch_run(arch: str, run_id: str, folds: list[FoldResult], best: FoldResult, evaluation: Evaluation,
                    manifest_path: str, run_dir: str) -> ArchResult:
    s = get_settings()
    out = Path(run_dir) / "test-extra"
    extras = arch_test_report(session_factory(s), manifest_path, evaluation, best, out)
    result = ArchResult(arch=arch, run_id=run_id, folds=folds, best=best, evaluation=evaluation,
                        n_parameters=n_parameters(arch), extras=extras)
    compare.finish_arch_run(client(s), result, out)
    return result


@task(name="log-comparison", tags=["mlflow"], **RETRY)
def log_comparison(compare_run_id: str, results: list[ArchResult], markdown: str, best_arch: str) -> None:
    compare.log_comparison(client(get_settings()), compare_run_id, results, markdown, best_arch)
