"""The MLflow client and small logging helpers: experiment, tags, metrics, artifacts, aliases."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import mlflow
import mlflow.exceptions
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from osteo import __version__
from osteo.errors import UserError
from osteo.settings import Settings
from osteo.version import git_commit


def client(settings: Settings) -> MlflowClient:
    use_credentials(settings)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri())
    mlflow.set_registry_uri(settings.resolved_tracking_uri())
    return MlflowClient(settings.resolved_tracking_uri(), settings.resolved_tracking_uri())


def use_credentials(settings: Settings) -> None:
    """The settings' MLflow user and password, where MLflow reads them (its client takes them from the
    environment only, at each request); nothing is set when the settings name no user."""
    if settings.mlflow_tracking_username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow_tracking_username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow_tracking_password.get_secret_value()


REFUSED = ("PERMISSION_DENIED", "UNAUTHENTICATED")  # a basic-auth server's 403 and 401


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
    """Point `alias` at `version`; a tracking server that refuses this user (basic-auth: EDIT or MANAGE on the
    registered model is needed) is a UserError naming the user, never the password."""
    try:
        c.set_registered_model_alias(name, alias, version)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code not in REFUSED:
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "no user (anonymous)"
        raise UserError("registry_refused", (
            f"the MLflow tracking server refused to set alias {alias!r} of {name} to version {version} for "
            f"{user} ({exc.error_code}): only the promoter user, with MANAGE on {name}, may move it "
            "(MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD; docs/production.md)")) from None


def alias_version(c: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def model_version(c: MlflowClient, name: str, alias: str | None, version: str | None) -> ModelVersion:
    """The version a parsed reference names (osteo.lineage.parse_model_ref: NAME@ALIAS or NAME/VERSION)."""
    if alias:
        return c.get_model_version_by_alias(name, alias)
    if not version:
        raise ValueError(f"{name}: a model reference names an alias or a version")
    return c.get_model_version(name, version)
