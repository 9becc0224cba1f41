"""The MLflow client and small logging helpers: experiment, tags, metrics, artifacts, aliases."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import mlflow
import mlflow.exceptions
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from osteo import __version__
from osteo.settings import Settings
from osteo.version import git_commit


def client(settings: Settings) -> MlflowClient:
    mlflow.set_tracking_uri(settings.resolved_tracking_uri())
    mlflow.set_registry_uri(settings.resolved_tracking_uri())
    return MlflowClient(settings.resolved_tracking_uri(), settings.resolved_tracking_uri())


# MLflow's UI opens a model-training experiment on its runs table (not the GenAI traces view)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(c: MlflowClient, settings: Settings, name: str | None = None) -> str:
    """The experiment (the classifier's, or `name`), created with its artifacts beside a local store and
    tagged as a model-training experiment (an existing one without the tag gets it)."""
    name = name or settings.mlflow_experiment
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        for key, value in EXPERIMENT_KIND.items():
            if key not in (exp.tags or {}):
                c.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    location = None
    if not settings.resolved_tracking_uri().startswith(("http://", "https://", "databricks")):
        # a local store keeps its artifacts beside it (mlruns/ by default), never in the working directory
        settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
        location = settings.mlflow_artifact_root.resolve().as_uri()
    return c.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


def code_tags() -> dict[str, str]:
    return {"git_commit": git_commit(), "code_version": __version__, "mlflow.source.git.commit": git_commit()}


def clean_params(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:6000] for k, v in params.items() if v is not None}


def log_epoch(c: MlflowClient, run_id: str, epoch: int, record: dict[str, Any]) -> None:
    """The training callback: one batch of finite metrics per epoch."""
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, epoch) for k, v in record.items()
               if k != "epoch" and isinstance(v, int | float) and math.isfinite(float(v))]
    if metrics:
        c.log_batch(run_id, metrics=metrics)


def log_metrics(c: MlflowClient, run_id: str, metrics: dict[str, Any], prefix: str = "") -> None:
    now = int(time.time() * 1000)
    batch = [Metric(prefix + k, float(v), now, 0) for k, v in metrics.items()
             if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))]
    if batch:
        c.log_batch(run_id, metrics=batch)


def log_artifacts(c: MlflowClient, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
    if folder.exists() and any(folder.iterdir()):
        c.log_artifacts(run_id, str(folder), artifact_path)


def set_alias(c: MlflowClient, name: str, alias: str, version: str) -> None:
    c.set_registered_model_alias(name, alias, version)


def alias_version(c: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None
