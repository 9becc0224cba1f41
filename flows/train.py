"""Training: snapshot -> augmentation -> k-fold ResNet -> test year -> MLflow registry."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from osteo.orchestration import SettingsTaskRunner, mlflow_links
from osteo.settings import get_settings
from osteo.training import pick_best, training_digest
from tasks.train import (
    augment_training_set,
    evaluate_test_year,
    register_model,
    start_training_run,
    take_snapshot,
    train_fold,
)


# one fold at a time here (torch uses every core); one fold per Dask worker when OSTEO_DASK_ADDRESS is set
@flow(name="train", task_runner=SettingsTaskRunner(threads=1))
def train_flow(preset: str = "demo", arch: str | None = None, folds: int | None = None, epochs: int | None = None,
               test_year: int | None = None, select_by: str | None = None, pretrained_weights: str | None = None,
               augment: str | None = None, seed: int = 0) -> dict:
    from osteo_model.train import get_preset

    settings = get_settings()
    overrides = {k: v for k, v in dict(arch=arch, folds=folds, epochs=epochs, select_by=select_by,
                                       pretrained_weights=pretrained_weights, augment=augment,
                                       seed=seed).items() if v is not None}
    config = get_preset(preset, **overrides)

    # 1. the dataset snapshot: exported, labelled, not excluded; split by patient, digest recorded
    snapshot = take_snapshot(test_year or settings.test_year, config.folds, seed)
    run_dir = str(Path(settings.data_dir) / "training" / training_digest(snapshot["digest"], config.to_dict())[:16])

    # 2. the seed's augmentation: one recorded copy per training image ('online': drawn anew each epoch instead)
    copies = augment_training_set(snapshot["manifest_path"], seed, config.copies) if config.augment == "offline" else None

    # 3. the parent MLflow run, with the snapshot as its dataset input
    parent = start_training_run(snapshot, config.to_dict(), run_dir, preset)

    # 4. one task per fold (separate workers can take them); finished folds are not retrained
    futures = [train_fold.submit(snapshot["manifest_path"], copies, k, config.to_dict(), run_dir, parent)
               for k in range(config.folds)]
    results = [f.result() for f in futures]

    # 5. the best fold on the test year, 6. registry: challenger, champion if better
    best = pick_best(results, config.select_by)
    evaluation = evaluate_test_year(best, snapshot["manifest_path"], run_dir, parent)
    registered = register_model(best, evaluation, snapshot, snapshot["manifest_path"], parent)

    summary = {
        "run_id": parent,
        "snapshot_digest": snapshot["digest"],
        "n_train": snapshot["n_train"],
        "n_test": snapshot["n_test"],
        "best_fold": best["fold"],
        "folds": [{k: r[k] for k in ("fold", "val_loss", "val_auc", "val_recall", "best_epoch", "resumed")}
                  for r in results],
        "test_auc": evaluation["metrics"].get("roc_auc"),
        "test_accuracy": evaluation["metrics"].get("accuracy"),
        "test_recall": evaluation["metrics"].get("recall_1"),
        "test_specificity": evaluation["metrics"].get("specificity"),
        "baseline_auc": evaluation["baseline_auc"],
        **registered,
    }
    create_markdown_artifact(
        key="training-summary",
        markdown="\n".join(["| metric | value |", "|---|---|"]
                           + [f"| {k} | {v} |" for k, v in summary.items() if not isinstance(v, list)]),
        description="Test-year result and registry decision",
    )
    _link_artifacts(settings, summary)
    return summary


def _link_artifacts(settings, summary: dict) -> None:
    """Links to the parent MLflow run and the registered model version."""
    from tasks import tracking

    try:
        experiment_id = tracking.client(settings).get_run(summary["run_id"]).info.experiment_id
    except Exception:  # noqa: BLE001 - a link without the experiment is still a link
        experiment_id = None
    links = mlflow_links(settings.resolved_tracking_uri(), experiment_id, summary["run_id"],
                         summary.get("model_name"), summary.get("model_version"))
    if "run" in links:
        create_link_artifact(key="mlflow-run", link=links["run"], link_text=f"MLflow run {summary['run_id']}",
                             description="The parent MLflow run of this training (folds are its children)")
    if "model_version" in links:
        create_link_artifact(key="mlflow-model-version", link=links["model_version"],
                             link_text=f"{summary['model_name']} version {summary['model_version']}",
                             description="The registered model version (alias challenger)")
