"""The seed's architecture comparison: one snapshot and its folds -> every architecture -> one table in MLflow."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.runner import SettingsTaskRunner
from osteo.settings import get_settings
from osteo.training.compare import ArchResult, CompareReport, compare_dir, parse_archs, pick_best_arch
from osteo.training.folds import pick_best, training_digest
from osteo.training.snapshot import SnapshotInfo
from osteo_mlflow import runs
from osteo_mlflow.client import client
from osteo_model.config import TrainConfig, get_preset
from tasks.compare import finish_arch_run, log_comparison, start_arch_run, start_compare_run
from tasks.train import (
    augment_training_set,
    check_training_inputs,
    choose_operating_point,
    evaluate_test_year,
    register_model,
    take_snapshot,
    train_fold,
)


# one fold at a time (torch uses every core); one fold per Dask worker when OSTEO_DASK_ADDRESS is set
@flow(name="compare", task_runner=SettingsTaskRunner(threads=1))
def compare_flow(archs: str | list[str] | None = None, preset: str = "demo", folds: int | None = None,
                 epochs: int | None = None, seed: int = 0, register_best: bool = False, test_year: int | None = None,
                 box_source: str = "human", target_recall: float | None = None) -> CompareReport:
    settings = get_settings()
    names = parse_archs(archs)
    base = get_preset(preset, **{k: v for k, v in dict(folds=folds, epochs=epochs, seed=seed).items()
                                 if v is not None})
    year = test_year or settings.test_year
    target = settings.target_recall if target_recall is None else target_recall
    check_training_inputs(base, year, box_source)  # refused in one line before anything trains
    # the same snapshot, folds and (offline) augmented copies for every architecture
    snap = take_snapshot(year, base.folds, seed, box_source)
    copies = augment_training_set(snap.manifest_path, seed, base.copies) if base.augment == "offline" else None
    root = compare_dir(settings.data_dir, snap.digest, base.to_dict(), names)
    parent = start_compare_run(snap, base, list(names), str(root), preset)
    with runs.failing_marks_runs(client(settings), parent, root):  # an error marks the open runs FAILED
        results = [compare_one(arch, base, snap, copies, root / arch, parent, preset, target) for arch in names]
        winner = pick_best_arch(results, base.select_by)  # on validation, never on the test year
        report = CompareReport(parent, snap, preset, results, winner.arch, None, base.to_dict())
        log_comparison(parent, results, report.markdown(), winner.arch)
    if register_best:  # through the champion gate, as `osteo train` registers
        digest = training_digest(snap.digest, base.replace(arch=winner.arch).to_dict())
        report = replace(report, registration=register_model(winner.best, winner.evaluation, snap, winner.run_id,
                                                              digest, target, base.folds))
    create_markdown_artifact(key="architecture-comparison", markdown=report.markdown(),
                             description="The seed's table: every architecture on one snapshot and its folds")
    return report


def compare_one(arch: str, base: TrainConfig, snap: SnapshotInfo, copies: str | None, run_dir: Path, parent: str,
                preset: str, target: float) -> ArchResult:
    """One architecture, with the train flow's own tasks: its folds nested under its run, the operating
    threshold chosen on its out-of-fold validation, the test year at that threshold."""
    config = base.replace(arch=arch)
    arch_run = start_arch_run(parent, arch, config, str(run_dir), preset)
    with runs.failing_marks_runs(client(get_settings()), arch_run, run_dir):
        futures = [train_fold.submit(snap.manifest_path, copies, k, config, str(run_dir), arch_run)
                   for k in range(base.folds)]
        fold_results = [f.result() for f in futures]
        best = pick_best(fold_results, base.select_by)
        point = choose_operating_point(fold_results, target, arch_run)
        evaluation = evaluate_test_year(best, snap.manifest_path, str(run_dir), arch_run, point.threshold)
        return finish_arch_run(arch, arch_run, fold_results, best, evaluation, snap.manifest_path, str(run_dir))
