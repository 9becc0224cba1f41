"""The seed's architecture comparison: one snapshot and its folds -> every architecture -> one table in MLflow."""

from __future__ import annotations

from dataclasses import replace

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.runner import SettingsTaskRunner
from osteo.compare import CompareReport, compare_dir, parse_archs, pick_best_arch
from osteo.settings import get_settings
from osteo.training import pick_best
from osteo_model.config import get_preset
from tasks.compare import finish_arch_run, log_comparison, start_arch_run, start_compare_run
from tasks.train import augment_training_set, evaluate_test_year, register_model, take_snapshot, train_fold


# one fold at a time (torch uses every core); one fold per Dask worker when OSTEO_DASK_ADDRESS is set
@flow(name="compare", task_runner=SettingsTaskRunner(threads=1))
def compare_flow(archs: str | list[str] | None = None, preset: str = "demo", folds: int | None = None,
                 epochs: int | None = None, seed: int = 0, register: bool = False, test_year: int | None = None,
                 box_source: str = "human") -> CompareReport:
    settings = get_settings()
    names = parse_archs(archs)
    base = get_preset(preset, **{k: v for k, v in dict(folds=folds, epochs=epochs, seed=seed).items()
                                 if v is not None})
    # the same snapshot, folds and (offline) augmented copies for every architecture
    snap = take_snapshot(test_year or settings.test_year, base.folds, seed, box_source)
    copies = augment_training_set(snap.manifest_path, seed, base.copies) if base.augment == "offline" else None
    root = compare_dir(settings.data_dir, snap.digest, base.to_dict(), names)
    parent = start_compare_run(snap, base.to_dict(), list(names), str(root), preset)
    results = []
    for arch in names:
        config = base.replace(arch=arch).to_dict()
        run_dir = str(root / arch)
        arch_run = start_arch_run(parent, arch, config, run_dir, preset)
        # the train flow's own tasks: each fold a child of the architecture's run, its epochs logged there
        futures = [train_fold.submit(snap.manifest_path, copies, k, config, run_dir, arch_run)
                   for k in range(base.folds)]
        fold_results = [f.result() for f in futures]
        best = pick_best(fold_results, base.select_by)
        evaluation = evaluate_test_year(best, snap.manifest_path, run_dir, arch_run)
        results.append(finish_arch_run(arch, arch_run, fold_results, best, evaluation))
    winner = pick_best_arch(results, base.select_by)
    report = CompareReport(parent, snap, preset, results, winner.arch, None, base.to_dict())
    log_comparison(parent, results, report.markdown(), winner.arch)
    if register:  # through the champion gate, as `osteo train` registers
        report = replace(report, registration=register_model(winner.best, winner.evaluation, snap, winner.run_id))
    create_markdown_artifact(key="architecture-comparison", markdown=report.markdown(),
                             description="The seed's table: every architecture on one snapshot and its folds")
    return report
