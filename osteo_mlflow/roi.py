"""The femoral-neck localiser in MLflow: its run, its registration as `osteo-roi` (gate by test-year
mean IoU) and the loaded champion that the refresh, `osteo roi locate` and the classifier use. A
registered version's tag `trained_on` (synthetic | real | mixed) goes with the loaded localiser as its
`trained_on` attribute (None when the version has no such tag: never taken as real)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
import mlflow.entities
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from osteo.etl.synthetic import trained_on
from osteo.localiser.locate import FileLocator
from osteo.localiser.training import RoiDataset, RoiEvaluation, evaluate, train_and_evaluate
from osteo.settings import REPO_ROOT, Settings
from osteo.training.results import Registration
from osteo_common.files import sha256_file
from osteo_mlflow.client import (
    alias_version,
    clean_params,
    code_tags,
    experiment_id,
    log_epoch,
    log_metrics,
    model_version,
    set_alias,
)
from osteo_mlflow.quiet import quiet_mlflow
from osteo_mlflow.registry import MODEL_PACKAGES, requirements

MODEL_CODE = '''"""osteo-roi, logged as code: MLflow runs this file to build the model (no pickle)."""
from mlflow.models import set_model

from osteo_mlflow.roi_pyfunc import OsteoLocaliser

set_model(OsteoLocaliser())
'''


def start_roi_run(c: MlflowClient, settings: Settings, dataset: RoiDataset, config: dict[str, Any]) -> str:
    """The localiser's MLflow run in its own experiment: the config and the dataset's identity."""
    run = c.create_run(experiment_id(c, settings, settings.roi_experiment),
                       run_name=f"roi-{config['head']}-{dataset.digest[:8]}",
                       tags={**code_tags(), "dataset_digest": dataset.digest, "model": "femoral-neck localiser"})
    c.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in clean_params(
        {**config, "dataset_digest": dataset.digest, "test_year": dataset.test_year, "n_train": dataset.n_train,
         "n_val": dataset.n_val, "n_test": dataset.n_test, "n_images": dataset.n_images,
         "synthetic_images": dataset.synthetic_images}).items()])
    return run.info.run_id


def train_roi_tracked(c: MlflowClient, run_id: str, dataset: RoiDataset, config: dict[str, Any],
                      out_dir: str) -> tuple[str, RoiEvaluation]:
    """Train (every epoch logged), score the test year (test_* metrics), keep the checkpoint."""
    from osteo_model.roi import RoiConfig

    checkpoint, evaluation = train_and_evaluate(dataset, RoiConfig.from_dict(config), Path(out_dir),
                                                on_epoch=lambda epoch, rec: log_epoch(c, run_id, epoch, rec))
    log_metrics(c, run_id, evaluation.metrics, "test_")
    log_metrics(c, run_id, {"ms_per_view": evaluation.ms_per_view, "train_seconds": evaluation.seconds})
    c.log_artifact(run_id, checkpoint, "checkpoint")
    c.log_artifact(run_id, str(Path(out_dir) / "history.json"))
    return checkpoint, evaluation


def register_localiser(c: MlflowClient, settings: Settings, checkpoint: str, evaluation: RoiEvaluation,
                       dataset: RoiDataset, run_id: str) -> Registration:
    """Log the localiser as a pyfunc, register it as challenger; champion only if its test-year
    mean IoU beats the champion's on the same held-out boxes."""
    name = settings.roi_model
    code = Path(checkpoint).parent / "model-code" / "osteo_roi.py"
    code.parent.mkdir(parents=True, exist_ok=True)
    code.write_text(MODEL_CODE, encoding="utf-8")
    signature = infer_signature(pd.DataFrame({"image": [b"x"]}),
                                pd.DataFrame({"boxes": ["[]"], "laterality": ["L"]}))
    with quiet_mlflow(), mlflow.start_run(run_id=run_id):  # osteo's summary says what was registered, once
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code), artifacts={"checkpoint": checkpoint},
            code_paths=[str(REPO_ROOT / p) for p in MODEL_PACKAGES], signature=signature,
            registered_model_name=name, pip_requirements=requirements())
    version = str(info.registered_model_version)
    learned_from = trained_on(dataset.synthetic_images, dataset.n_images)
    for key, value in {"dataset_digest": dataset.digest, "test_mean_iou": evaluation.metrics.get("mean_iou"),
                       "run_id": run_id, "checkpoint_sha256": sha256_file(checkpoint), "trained_on": learned_from,
                       "synthetic_images": dataset.synthetic_images, **code_tags()}.items():
        c.set_model_version_tag(name, version, key, str(value))
    set_alias(c, name, "challenger", version)
    champion = alias_version(c, name, "champion")
    old_iou = None
    if champion is not None and champion != version:
        old = load_locator(settings, f"models:/{name}/{champion}")
        old_iou = evaluate(old.model, np.load(dataset.path), dataset.input_size).metrics.get("mean_iou")
    new_iou = evaluation.metrics.get("mean_iou", math.nan)
    promote, why = _gate(new_iou, old_iou, champion if champion != version else None)
    if promote:
        set_alias(c, name, "champion", version)
    c.set_tag(run_id, "champion_decision", why)
    c.set_terminated(run_id, "FINISHED")
    return Registration(model_name=name, model_version=version, champion=promote,
                        champion_version=version if promote else champion, decision=why, trained_on=learned_from)


def _gate(new_iou: float, old_iou: float | None, champion: str | None) -> tuple[bool, str]:
    """Whether the new version becomes champion, and why in words (the summary's, and the run's tag)."""
    if math.isnan(new_iou):
        return False, "it has no test-year boxes to be judged on"
    if champion is None:
        return True, "the first version registered"
    if old_iou is None or math.isnan(old_iou):
        return True, f"version {champion} has no test-year score on these boxes"
    if new_iou > old_iou + 1e-9:
        return True, f"its test mean IoU {new_iou:.4f} beats version {champion}'s {old_iou:.4f}"
    return False, f"its test mean IoU {new_iou:.4f} does not beat version {champion}'s {old_iou:.4f}"


def load_locator(settings: Settings, uri: str | None = None) -> FileLocator:
    """A registered localiser (default: the champion), named by its registered name and version."""
    from osteo.lineage import parse_model_ref

    ref = uri or f"models:/{settings.roi_model}@champion"
    name, alias, version = parse_model_ref(ref.removeprefix("models:/"))
    c = MlflowClient(settings.resolved_tracking_uri(), settings.resolved_tracking_uri())
    mv = model_version(c, name, alias, version)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
    locator = model.unwrap_python_model().locator
    locator.name, locator.version = name, str(mv.version)
    locator.trained_on = (mv.tags or {}).get("trained_on")
    return locator


def load_python_model(settings: Settings, uri: str):
    """A registered pyfunc's Python object (the bench scores crops with the classifier's)."""
    mlflow.set_tracking_uri(settings.resolved_tracking_uri())
    return mlflow.pyfunc.load_model(uri).unwrap_python_model()


def champion_locator(settings: Settings) -> FileLocator | None:
    """The champion localiser, or None when none is registered (the refresh then locates nothing). A
    registry that cannot be reached is an error, not "no localiser": the refresh fails and retries."""
    mlflow.set_tracking_uri(settings.resolved_tracking_uri())
    try:
        return load_locator(settings)
    except MlflowException as exc:
        if exc.error_code in NOT_REGISTERED:
            return None
        raise


NOT_REGISTERED = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # no such model; no such alias
