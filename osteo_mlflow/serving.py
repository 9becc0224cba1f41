"""What the screening service needs from the registry: which version an alias points at now, and
that version's files (the classifier's checkpoint, its ONNX export, the localiser's checkpoint).

The service reads files, not pyfuncs: it builds its own predictors from them (osteo_service.models),
so a registered version is served exactly as registered, through ONNX Runtime where it can.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.artifacts
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from osteo.lineage import parse_model_ref
from osteo.settings import Settings
from osteo_mlflow.client import model_version, use_credentials
from osteo_mlflow.roi import NOT_REGISTERED


@dataclass(frozen=True)
class VersionFiles:
    """One registered version's files, fetched into a local folder."""

    name: str
    version: str
    checkpoint: Path
    onnx: Path | None  # the classifier's ONNX export (two outputs), when registered with one
    threshold: float | None  # the operating threshold stored with the version (tag), when it has one
    crop: dict  # how the export crops for it: size, margin, min_confidence (localiser_info)
    trained_on: str | None = None  # its tag: synthetic | real | mixed (osteo/etl/synthetic.py); None: no tag


def registry_client(settings: Settings) -> MlflowClient:
    use_credentials(settings)  # a read-only user is enough for the service
    uri = settings.resolved_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, uri)


def resolve_version(c: MlflowClient, uri: str) -> tuple[str, str] | None:
    """(name, version) that `models:/NAME@ALIAS` (or `models:/NAME/VERSION`) names now; None when
    nothing is registered under it. An unreachable registry raises (the service keeps what it has)."""
    name, alias, version = parse_model_ref(uri.removeprefix("models:/"))
    try:
        mv = model_version(c, name, alias, version)
    except MlflowException as exc:
        if exc.error_code in NOT_REGISTERED:
            return None
        raise
    return name, str(mv.version)


def fetch_version(c: MlflowClient, settings: Settings, name: str, version: str, dst: Path) -> VersionFiles:
    """Download one version's artifacts into `dst` and name its files."""
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/artifacts", dst_path=str(dst)))
    checkpoints = sorted(p for p in local.rglob("*.pth") if not _is_localiser(p, local))
    if not checkpoints:
        raise FileNotFoundError(f"models:/{name}/{version} has no checkpoint among its artifacts")
    onnx = sorted(local.rglob("*.onnx"))
    info = sorted(local.rglob("localiser.json"))
    crop = {"size": settings.export_size, "margin": settings.roi_margin,
            "min_confidence": settings.roi_min_confidence}
    if info:
        saved = json.loads(info[0].read_text())
        crop.update({k: saved[k] for k in crop if k in saved})
    tags = c.get_model_version(name, version).tags or {}
    threshold = float(tags["threshold"]) if tags.get("threshold") else None
    return VersionFiles(name=name, version=version, checkpoint=checkpoints[0], onnx=onnx[0] if onnx else None,
                        threshold=threshold, crop=crop, trained_on=tags.get("trained_on"))


def _is_localiser(path: Path, root: Path) -> bool:
    """The classifier's artifacts may carry the localiser it was registered with: not its own weights."""
    rel = path.relative_to(root).parts
    return path.name == "localiser.pth" or rel[0] == "localiser"


def trained_on(c: MlflowClient, name: str, version: str) -> str | None:
    """What a registered version learned from (its `trained_on` tag); None when it has no such tag."""
    return (c.get_model_version(name, version).tags or {}).get("trained_on")


# a version's test-year figures as its training run logged them (osteo_mlflow.runs.evaluate_tracked)
TEST_METRICS = {"auc": "test_roc_auc", "auc_ci_low": "test_roc_auc_ci_lo", "auc_ci_high": "test_roc_auc_ci_hi",
                "recall": "test_recall_1", "specificity": "test_specificity", "n": "test_n",
                "positives": "test_n_pos", "negatives": "test_n_neg"}
COUNTS = ("n", "positives", "negatives")


def read_test_year(c: MlflowClient, name: str, version: str) -> dict | None:
    """The test-year AUC (with its 95 % interval), osteoporosis recall and specificity at the operating threshold,
    and their n, from the version's training run; a figure the run does not hold (undefined, or a run logged
    before it was kept) is None. None when the version has no run to read."""
    mv = c.get_model_version(name, version)
    run_id = mv.run_id
    try:
        run = c.get_run(run_id) if run_id else None
    except MlflowException:  # the run was deleted: the version still serves, without its figures
        return None
    if run is None or "test_roc_auc" not in run.data.metrics:
        return None
    got = {k: run.data.metrics.get(m) for k, m in TEST_METRICS.items()}
    year = (mv.tags or {}).get("test_year") or run.data.params.get("split_test_year")
    return {"year": int(year) if year and year.isdigit() else None,
            **{k: (int(v) if k in COUNTS and v is not None else v) for k, v in got.items()}}


def fetch_localiser(c: MlflowClient, name: str, version: str, dst: Path) -> Path:
    """A registered localiser's checkpoint, downloaded into `dst`."""
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/artifacts", dst_path=str(dst)))
    found = sorted(local.rglob("*.pth"))
    if not found:
        raise FileNotFoundError(f"models:/{name}/{version} has no checkpoint among its artifacts")
    return found[0]


def load_classifier(c: MlflowClient, settings: Settings, name: str, version: str, *, spin: bool = True):
    """One classifier version in memory, as the service and `osteo screen` score with it: ONNX Runtime when
    it has an export (osteo_model.onnx.build_classifier), its stored threshold; (model, runtime, files).
    Its files go to a temporary folder, removed once loaded. spin=False for a batch that reads beside the runs."""
    from osteo_model.onnx import build_classifier

    with tempfile.TemporaryDirectory(prefix="osteo-serve-") as tmp:
        files = fetch_version(c, settings, name, version, Path(tmp))
        model, runtime = build_classifier(files.checkpoint, files.onnx, files.threshold,
                                          threads=settings.serve_threads or None, spin=spin)
    return model, runtime, files


def load_localiser(c: MlflowClient, name: str, version: str):
    """One localiser version in memory (osteo.localiser.locate.FileLocator), with its `trained_on` tag."""
    from osteo.localiser.locate import FileLocator

    with tempfile.TemporaryDirectory(prefix="osteo-serve-") as tmp:
        locator = FileLocator.load(fetch_localiser(c, name, version, Path(tmp)), name, version)
    locator.trained_on = trained_on(c, name, version)
    return locator
