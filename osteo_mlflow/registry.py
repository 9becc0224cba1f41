"""The model registry: register the best fold as a pyfunc, the champion gate, look-ups for lineage."""

from __future__ import annotations

import datetime as dt
import json
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sqlalchemy.orm import Session, sessionmaker

from osteo import snapshot as snap
from osteo.lineage import LineageError, parse_model_ref
from osteo.settings import REPO_ROOT, Settings
from osteo.snapshot import SnapshotInfo
from osteo.training import Evaluation, FoldResult, Registration
from osteo_common.files import sha256_file, write_json
from osteo_mlflow.champion import should_promote
from osteo_mlflow.client import alias_version, code_tags, set_alias
from osteo_mlflow.pyfunc import write_model_code

# the packages the registered model imports (its code_paths)
MODEL_PACKAGES = ("osteo_model", "osteo", "osteo_mlflow", "osteo_common")
MODEL_REQUIREMENTS = ("torch", "torchvision", "numpy", "pandas", "pillow", "pydicom", "mlflow", "scikit-learn",
                      "onnxruntime", "onnx")
# the model serves through ONNX Runtime when it can and falls back to PyTorch: pinned only where installed
OPTIONAL_REQUIREMENTS = ("onnxruntime", "onnx")


def requirements() -> list[str]:
    out = []
    for p in MODEL_REQUIREMENTS:
        try:
            out.append(f"{p}=={installed_version(p).split('+')[0]}")
        except PackageNotFoundError:
            if p not in OPTIONAL_REQUIREMENTS:
                raise
    return out


def onnx_artifacts(best: FoldResult) -> dict[str, str]:
    """The best fold exported to ONNX beside its checkpoint ({"onnx": path}), for the pyfunc to
    serve through ONNX Runtime; {} when its arch has no avgpool -> linear head or onnxruntime is
    missing (the pyfunc then serves the PyTorch checkpoint)."""
    from osteo_model.onnx import export_onnx, onnxruntime_available, supports_onnx
    from osteo_model.predict import load_checkpoint

    if not (supports_onnx(best.arch) and onnxruntime_available()):
        return {}
    model, config, _extra = load_checkpoint(best.checkpoint)
    return {"onnx": str(export_onnx(model, config.image_size, Path(best.checkpoint).parent / "model.onnx"))}


def register_best(c: MlflowClient, settings: Settings, factory: sessionmaker[Session], best: FoldResult,
                  evaluation: Evaluation, snapshot: SnapshotInfo, parent_run_id: str) -> Registration:
    """Log the pyfunc + checkpoint, register it as challenger; champion only if it beats the champion."""
    name = settings.registered_model
    test = snap.load_manifest(snapshot.manifest_path).query("split == 'test'")
    example = pd.DataFrame({"image": [Path(test["path"].iloc[0]).read_bytes()]})
    signature = infer_signature(example, pd.DataFrame({
        "probability": [0.5], "label": [1], "label_name": ["x"], "heatmap_png": ["x"], "side": ["L"], "box": ["[]"],
        "box_confidence": [0.9], "localiser": ["x"], "sides": ["[]"], "error": [""]}),
        params={"heatmap": True, "cropped": False})
    # the localiser the classifier crops whole radiographs with: the champion's weights, in the model
    localiser = localiser_artifacts(c, settings, Path(best.checkpoint).parent / "localiser")
    onnx = onnx_artifacts(best)
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_artifact(best.checkpoint, "checkpoint")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(write_model_code(Path(best.checkpoint).parent / "model-code")),
            artifacts={"checkpoint": best.checkpoint, **onnx, **localiser},
            code_paths=[str(REPO_ROOT / p) for p in MODEL_PACKAGES],
            signature=signature, input_example=example, registered_model_name=name,
            pip_requirements=requirements(),
        )
    version = str(info.registered_model_version)
    checkpoint_sha = sha256_file(best.checkpoint)
    for key, value in {"snapshot_digest": snapshot.digest, "test_auc": evaluation.metrics.get("roc_auc"),
                       "test_recall": evaluation.metrics.get("recall_1"), "run_id": parent_run_id,
                       "checkpoint_sha256": checkpoint_sha, "onnx": str(bool(onnx)).lower(),
                       **code_tags()}.items():
        c.set_model_version_tag(name, version, key, str(value))
    if localiser:
        info_json = json.loads(Path(localiser["localiser_info"]).read_text())
        c.set_model_version_tag(name, version, "localiser", f"{info_json['name']}/{info_json['version']}")
    set_alias(c, name, "challenger", version)
    champion_version = alias_version(c, name, "champion")
    champion_metrics = None
    if champion_version is not None and champion_version != version:
        champion_metrics = score_version(name, champion_version, test)
    promote, why = should_promote(evaluation.metrics, champion_metrics)
    if promote:
        set_alias(c, name, "champion", version)
    c.set_tag(parent_run_id, "champion_decision", why)
    snap.record_training_run(factory, snapshot_id=snapshot.snapshot_id, run_id=parent_run_id, arch=best.arch,
                             preset=c.get_run(parent_run_id).data.tags.get("preset", ""), model_name=name,
                             model_version=version, test_auc=evaluation.metrics.get("roc_auc"),
                             checkpoint_sha256=checkpoint_sha)
    c.set_terminated(parent_run_id, "FINISHED")
    return Registration(model_name=name, model_version=version, champion=promote,
                        champion_version=version if promote else champion_version, decision=why,
                        champion_test_auc=(champion_metrics or {}).get("roc_auc"))


def localiser_artifacts(c: MlflowClient, settings: Settings, folder: Path) -> dict[str, str]:
    """The champion localiser's checkpoint and how the export crops (size, margin, confidence), as
    artifacts for the classifier; {} when no localiser is registered yet."""
    version = alias_version(c, settings.roi_model, "champion")
    if version is None:
        return {}
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{settings.roi_model}/{version}/artifacts",
                                                     dst_path=str(folder)))
    checkpoint = next(iter(sorted(local.rglob("*.pth"))))
    info = folder / "localiser.json"
    write_json(info, {"name": settings.roi_model, "version": version, "size": settings.export_size,
                      "margin": settings.roi_margin, "min_confidence": settings.roi_min_confidence})
    return {"localiser": str(checkpoint), "localiser_info": str(info)}


def score_version(name: str, version: str, test: pd.DataFrame) -> dict[str, Any]:
    """A registered version scored on the challenger's test set, so both are judged on the same images."""
    from osteo_model.metrics import compute_metrics

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    results = model.unwrap_python_model().predict_images(test["path"].map(lambda p: Path(p).read_bytes()).tolist(),
                                                         heatmaps=False)
    m = compute_metrics(test["label"].astype(int).tolist(), [r["probability"] for r in results])
    return {k: v for k, v in m.items() if isinstance(v, int | float)}


def experiment_of(c: MlflowClient, run_id: str) -> str:
    return c.get_run(run_id).info.experiment_id


def links(tracking_uri: str, experiment_id: str | None, run_id: str, model_name: str | None,
          model_version: str | None) -> dict[str, str]:
    """Links to the MLflow run and the registered version: UI pages on a tracking server, URIs otherwise."""
    out: dict[str, str] = {}
    base = tracking_uri.rstrip("/")
    if base.startswith(("http://", "https://")):
        if experiment_id:
            out["run"] = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
        if model_name and model_version:
            out["model_version"] = f"{base}/#/models/{model_name}/versions/{model_version}"
    else:
        out["run"] = f"runs:/{run_id}"
        if model_name and model_version:
            out["model_version"] = f"models:/{model_name}/{model_version}"
    return out


def resolve_model_version(client: Any, ref: str) -> dict[str, Any]:
    """The registry's view of a model version (the one place that talks to MLflow)."""
    name, alias, version = parse_model_ref(ref)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:  # unknown model, alias or version
        raise LineageError(f"no registered model version {ref!r}: {str(exc).splitlines()[0][:200]}") from exc
    return {
        "ref": ref,
        "name": name,
        "alias": alias,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "aliases": sorted(getattr(mv, "aliases", None) or []),
        "tags": dict(mv.tags or {}),
        "source": mv.source,
        "created": _ms(getattr(mv, "creation_timestamp", None)),
    }


def _ms(stamp: int | None) -> str | None:
    if not stamp:
        return None
    return dt.datetime.fromtimestamp(stamp / 1000, dt.UTC).isoformat(timespec="seconds")


def checkpoint_file(c: MlflowClient, version: dict[str, Any], dst: Path) -> Path | None:
    """The registered version's checkpoint, fetched into `dst` (for `osteo lineage verify`)."""
    uri = f"models:/{version['name']}/{version['version']}"
    try:
        local = Path(mlflow.artifacts.download_artifacts(f"{uri}/artifacts", dst_path=str(dst)))
    except MlflowException:
        return None
    found = sorted(p for p in local.rglob("*.pth") if p.name != "localiser.pth")  # the classifier's own
    return found[0] if found else None
