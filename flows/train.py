"""Training: snapshot -> augmentation -> k-fold ResNet -> test year -> MLflow registry."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.futures import wait

from flows.runner import SettingsTaskRunner
from osteo.settings import get_settings
from osteo.training.folds import pick_best, training_digest
from osteo.training.params import TrainParams
from osteo.training.results import Registration, TrainingReport
from osteo_mlflow import registry, runs
from osteo_mlflow.client import client
from tasks.train import (
    augment_training_set,
    check_training_inputs,
    choose_operating_point,
    evaluate_test_year,
    finish_training_run,
    register_model,
    report_test_year_extras,
    start_training_run,
    take_snapshot,
    train_fold,
)

DEFAULTS = TrainParams()  # the demo preset as it is (frozen: one shared default)


# one fold at a time here (torch uses every core); one fold per Dask worker when OSTEO_DASK_ADDRESS is set
@flow(name="train", task_runner=SettingsTaskRunner(threads=1))
def train_flow(params: TrainParams = DEFAULTS) -> TrainingReport:
    """What to train, one typed object (Prefect validates it: an unknown or wrongly typed field is refused
    before the run starts)."""
    settings = get_settings()
    config = params.config()
    year = params.test_year or settings.test_year
    target = settings.target_recall if params.target_recall is None else params.target_recall
    # a training that cannot finish is refused in one line before anything trains
    check_training_inputs(config, year, params.box_source)
    # the dataset snapshot: exported, labelled, not excluded, from whose boxes; split by patient, digest recorded
    snap = take_snapshot(year, config.folds, params.seed, params.box_source)
    digest = training_digest(snap.digest, config.to_dict())
    run_dir = str(Path(settings.data_dir) / "training" / digest[:16])
    # the seed's augmentation: one recorded copy per training image ('online': new draws each epoch instead)
    copies = (augment_training_set(snap.manifest_path, config.seed, config.copies) if config.augment == "offline"
              else None)
    parent = start_training_run(snap, config, run_dir, params.preset)
    # any error from here on marks the parent run and its open fold runs FAILED
    with runs.failing_marks_runs(client(settings), parent, run_dir):
        # one task per fold (separate workers can take them); finished folds are not retrained
        futures = [train_fold.submit(snap.manifest_path, copies, k, config, run_dir, parent)
                   for k in range(config.folds)]
        wait(futures)  # every fold settled before an error goes up, so no fold run opens after the marking
        results = [f.result() for f in futures]
        best = pick_best(results, config.select_by)
        point = choose_operating_point(results, target, parent)
        evaluation = evaluate_test_year(best, snap.manifest_path, run_dir, parent, point.threshold)
        # subgroups and calibration; the BMD, 3-class and clinical-fusion heads when asked
        extras = report_test_year_extras(best, evaluation, snap.manifest_path, run_dir, parent, params.heads,
                                         params.clinical)
        registration = (register_model(best, evaluation, snap, parent, digest, target, config.folds)
                        if params.register_version else Registration.not_registered(settings.registered_model))
        finish_training_run(parent)
    report = TrainingReport(parent, snap, results, best.fold, evaluation, registration, point, extras)
    _publish(report, settings)
    return report


def _publish(report: TrainingReport, settings) -> None:
    """The summary and links to the MLflow run and the registered version, as Prefect artifacts."""
    create_markdown_artifact(key="training-summary", markdown=report.markdown(),
                             description="Test-year result and registry decision")
    reg = report.registration
    links = registry.links(settings.resolved_tracking_uri(), registry.experiment_of(client(settings), report.run_id),
                           report.run_id, reg.model_name, reg.model_version)
    if "runs" in links:  # a tracking server's page: the experiment's runs table, not MLflow's GenAI overview
        create_link_artifact(key="mlflow-runs", link=links["runs"], link_text="MLflow runs table",
                             description="The experiment's runs: this training and the ones to compare it with")
    create_link_artifact(key="mlflow-run", link=links["run"], link_text=f"MLflow run {report.run_id}",
                         description="The parent MLflow run of this training (folds are its children)")
    if "model_version" not in links:  # --no-register
        return
    create_link_artifact(key="mlflow-model-version", link=links["model_version"],
                         link_text=f"{reg.model_name} version {reg.model_version}",
                         description="The registered model version (alias challenger)")
