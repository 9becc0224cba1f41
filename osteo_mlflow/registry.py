"""The model registry: register the best fold as a pyfunc, the champion gate, look-ups for lineage."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sqlalchemy.orm import Session, sessionmaker

from osteo.lineage import LineageError, parse_model_ref
from osteo.settings import REPO_ROOT, Settings
from osteo.training import snapshot as snap
from osteo.training.results import Evaluation, FoldResult, Registration
from osteo.training.snapshot import SnapshotInfo
from osteo_common.files import sha256_file, write_json
from osteo_mlflow.champion import clears_the_bar, should_promote
from osteo_mlflow.client import alias_version, code_tags, set_alias
from osteo_mlflow.model_card import model_card
from osteo_mlflow.pyfunc import write_model_code

# the packages the registered model imports (its code_paths)
MODEL_PACKAGES = ("osteo_model", "osteo", "osteo_mlflow", "osteo_common")
MODEL_REQUIREMENTS = ("torch", "torchvision", "numpy", "pandas", "pillow", "pydicom", "mlflow", "scikit-learn",
                      "onnxruntime", "onnx")
VALIDATION_FILE = "validation/probabilities.json"  # the best fold's validation probabilities, on the version's run
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


def find_registered(c: MlflowClient, name: str, digest: str) -> str | None:
    """The version registered from the same configuration on the same snapshot (tag training_digest), if any."""
    try:
        found = c.search_model_versions(f"name = '{name}' and tags.training_digest = '{digest}'")
    except MlflowException:  # no such model yet
        return None
    versions = sorted(int(v.version) for v in found if (v.tags or {}).get("training_digest") == digest)
    return str(versions[0]) if versions else None


@dataclass(frozen=True)
class LoggedModel:
    """The model version log_model_version registered, with what its tags need."""

    version: str
    checkpoint_sha: str
    onnx: bool  # ONNX artifacts logged beside the checkpoint
    localiser: dict[str, str]  # the localiser's artifacts in the model (empty: none)


@dataclass(frozen=True)
class ChampionDecision:
    """The gate's answer for a new version: promote it or not, why, and the champion it was judged against."""

    promote: bool
    why: str
    champion_version: str | None
    champion_test_auc: float | None


def report_existing(c: MlflowClient, name: str, existing: str, parent_run_id: str) -> Registration:
    """The registration of a version already there (the same configuration on the same snapshot)."""
    champion = alias_version(c, name, "champion")
    why = f"already registered as version {existing}: the same configuration on the same snapshot"
    c.set_tag(parent_run_id, "champion_decision", why)
    return Registration(model_name=name, model_version=existing, champion=champion == existing,
                        champion_version=champion, decision=why, already_registered=True,
                        trained_on=(c.get_model_version(name, existing).tags or {}).get("trained_on"))


def log_model_version(c: MlflowClient, settings: Settings, best: FoldResult, evaluation: Evaluation,
                      snapshot: SnapshotInfo, parent_run_id: str, test: pd.DataFrame, *, digest: str,
                      target_recall: float | None) -> LoggedModel:
    """Log the checkpoint, the validation probabilities and the pyfunc on the parent run and register the
    pyfunc under the settings' model name."""
    name = settings.registered_model
    thr = float(evaluation.threshold)
    checkpoint = best.checkpoint  # the fold's own file (lineage hashes it); the threshold goes in model_config
    example = pd.DataFrame({"image": [Path(test["path"].iloc[0]).read_bytes()]})
    signature = infer_signature(example, pd.DataFrame({
        "probability": [0.5], "label": [1], "label_name": ["x"], "heatmap_png": ["x"], "side": ["L"], "box": ["[]"],
        "box_confidence": [0.9], "localiser": ["x"], "sides": ["[]"], "error": [""], "trained_on": ["real"],
        "synthetic_training": [False]}),
        params={"heatmap": True, "cropped": False, "threshold": thr})
    # the localiser the classifier crops whole radiographs with: the champion's weights, in the model
    localiser = localiser_artifacts(c, settings, Path(checkpoint).parent / "localiser")
    onnx = onnx_artifacts(best)
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_artifact(checkpoint, "checkpoint")
        # the reference `osteo screen outcomes` measures the screened population's drift against
        mlflow.log_dict({"fold": best.fold, "probabilities": list(best.val_probs or [])}, VALIDATION_FILE)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(write_model_code(Path(checkpoint).parent / "model-code")),
            artifacts={"checkpoint": checkpoint, **onnx, **localiser},
            code_paths=[str(REPO_ROOT / p) for p in MODEL_PACKAGES],
            signature=signature, input_example=example, registered_model_name=name,
            pip_requirements=requirements(), model_config={"operating_threshold": thr, "target_recall": target_recall,
                                                           "trained_on": snapshot.trained_on},
            metadata={"threshold": thr, "target_recall": target_recall, "training_digest": digest,
                      "snapshot_digest": snapshot.digest, "trained_on": snapshot.trained_on,
                      "synthetic_images": snapshot.synthetic_images},
        )
    return LoggedModel(version=str(info.registered_model_version), checkpoint_sha=sha256_file(checkpoint),
                       onnx=bool(onnx), localiser=localiser)


def tag_model_version(c: MlflowClient, name: str, logged: LoggedModel, evaluation: Evaluation,
                      snapshot: SnapshotInfo, parent_run_id: str, *, digest: str,
                      target_recall: float | None) -> None:
    """The version's tags: its snapshot and training, its test-year figures, its run and code, its localiser."""
    m, half = evaluation.metrics, evaluation.metrics_at_half
    for key, value in {"snapshot_digest": snapshot.digest, "training_digest": digest,
                       "threshold": float(evaluation.threshold),
                       "target_recall": target_recall, "test_year": snapshot.params.get("test_year"),
                       "n_test": evaluation.n_test, "test_auc": m.get("roc_auc"),
                       "test_auc_ci_lo": evaluation.auc_ci[0], "test_auc_ci_hi": evaluation.auc_ci[1],
                       "baseline_auc": evaluation.baseline_auc,
                       "test_recall": m.get("recall_1"), "test_specificity": m.get("specificity"),
                       "test_positives": evaluation.test_positives,
                       "test_negatives": evaluation.n_test - evaluation.test_positives,
                       "test_at_0.5_recall": half.get("recall_1"), "test_at_0.5_specificity": half.get("specificity"),
                       "run_id": parent_run_id, "checkpoint_sha256": logged.checkpoint_sha,
                       "onnx": str(logged.onnx).lower(),
                       "trained_on": snapshot.trained_on, "synthetic_images": snapshot.synthetic_images,
                       **code_tags()}.items():
        if value is not None:
            c.set_model_version_tag(name, logged.version, key, str(value))
    if logged.localiser:
        info_json = json.loads(Path(logged.localiser["localiser_info"]).read_text())
        c.set_model_version_tag(name, logged.version, "localiser", f"{info_json['name']}/{info_json['version']}")


def decide_champion(c: MlflowClient, settings: Settings, name: str, version: str, evaluation: Evaluation,
                    test: pd.DataFrame) -> ChampionDecision:
    """The gate: above chance and its baseline on its test year (clears_the_bar), then better than the champion
    on the images both can be judged on."""
    m = evaluation.metrics
    champion_version = alias_version(c, name, "champion")
    challenger_metrics, champion_metrics = {**m, "n": evaluation.n_test}, None
    refused = clears_the_bar(m.get("roc_auc"), evaluation.auc_ci, evaluation.baseline_auc)  # first or not
    if refused is None and champion_version is not None and champion_version != version:
        challenger_metrics, champion_metrics = compare_on_fair_images(
            c, settings, name, champion_version, test, evaluation, version)
    promote, why = (False, refused) if refused else should_promote(challenger_metrics, champion_metrics,
                                                                   min_test_images=settings.min_test_images)
    if challenger_metrics.get("n_champion_trained_on"):
        why += (f" (on the {challenger_metrics['n']} test images the champion did not train on; it trained on "
                f"{challenger_metrics['n_champion_trained_on']})")
    return ChampionDecision(promote, why, champion_version, (champion_metrics or {}).get("roc_auc"))


def register_best(c: MlflowClient, settings: Settings, factory: sessionmaker[Session], best: FoldResult,
                  evaluation: Evaluation, snapshot: SnapshotInfo, parent_run_id: str, *, digest: str = "",
                  target_recall: float | None = None, folds: int | None = None) -> Registration:
    """Log the pyfunc + checkpoint (with its operating threshold), register it as challenger with a model card;
    champion only if the gate says so: above chance and its baseline on its test year (clears_the_bar), then
    better than the champion on the images both can be judged on. The same configuration on the same snapshot (`digest`,
    osteo.training.folds.training_digest) registers nothing new: the existing version is reported."""
    name = settings.registered_model
    existing = find_registered(c, name, digest) if digest else None
    if existing is not None:
        return report_existing(c, name, existing, parent_run_id)
    test = snap.load_manifest(snapshot.manifest_path).query("split == 'test'")
    logged = log_model_version(c, settings, best, evaluation, snapshot, parent_run_id, test, digest=digest,
                               target_recall=target_recall)
    version = logged.version
    tag_model_version(c, name, logged, evaluation, snapshot, parent_run_id, digest=digest, target_recall=target_recall)
    m, half = evaluation.metrics, evaluation.metrics_at_half
    preset = c.get_run(parent_run_id).data.tags.get("preset", "")
    c.update_model_version(name, version, description=model_card(
        arch=best.arch, preset=preset, folds=folds or 0, snapshot_digest=snapshot.digest, n_train=snapshot.n_train,
        n_test=evaluation.n_test, test_positives=evaluation.test_positives,
        test_year=snapshot.params.get("test_year", "the test year"), threshold=float(evaluation.threshold),
        target_recall=target_recall, at_threshold=m, at_half=half, trained_on=snapshot.trained_on,
        synthetic_images=snapshot.synthetic_images, n_images=snapshot.n_members))
    set_alias(c, name, "challenger", version)
    decision = decide_champion(c, settings, name, version, evaluation, test)
    if decision.promote:
        set_alias(c, name, "champion", version)
    c.set_tag(parent_run_id, "champion_decision", decision.why)
    snap.record_training_run(factory, snapshot_id=snapshot.snapshot_id, run_id=parent_run_id, arch=best.arch,
                             preset=preset, model_name=name, model_version=version,
                             test_auc=m.get("roc_auc"), checkpoint_sha256=logged.checkpoint_sha)
    return Registration(model_name=name, model_version=version, champion=decision.promote,
                        champion_version=version if decision.promote else decision.champion_version,
                        decision=decision.why, champion_test_auc=decision.champion_test_auc,
                        trained_on=snapshot.trained_on)


def champion_training_images(settings: Settings, c: MlflowClient, name: str, version: str) -> set[int]:
    """The export ids the version trained or validated on (its snapshot's train split), from its snapshot tag."""
    digest = (c.get_model_version(name, version).tags or {}).get("snapshot_digest")
    path = Path(settings.data_dir) / "snapshots" / f"{digest}.csv"
    if not digest or not path.is_file():
        return set()
    manifest = snap.load_manifest(path)
    return set(manifest.loc[manifest["split"] == "train", "member_id"].astype(int))


def compare_on_fair_images(c: MlflowClient, settings: Settings, name: str, champion_version: str, test: pd.DataFrame,
                           evaluation: Evaluation, version: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Challenger (`version`) and champion metrics on the same images: the challenger's test images that the
    champion did not train on (a champion from another snapshot, e.g. another test year, may have trained on
    some of them). The challenger's come from the evaluation's per-image probabilities, else it is scored again."""
    from osteo_model.metrics import compute_metrics

    seen = champion_training_images(settings, c, name, champion_version)
    keep = ~test["member_id"].astype(int).isin(seen)
    fair = test.loc[keep]
    probs = dict(zip(evaluation.test_member_ids, evaluation.test_probs, strict=True))
    if not len(fair):
        mine = {}
    elif all(int(i) in probs for i in fair["member_id"]):
        mine = compute_metrics(fair["label"].astype(int).tolist(), [probs[int(i)] for i in fair["member_id"]],
                               evaluation.threshold)
    else:
        mine = score_version(name, version, fair)
    challenger = {**{k: v for k, v in mine.items() if isinstance(v, int | float)}, "n": int(len(fair)),
                  "n_champion_trained_on": int((~keep).sum())}
    if not len(fair):
        return challenger, {"error": f"it trained on all {len(test)} of the challenger's test images"}
    return challenger, score_version(name, champion_version, fair)


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
                      "margin": settings.roi_margin, "min_confidence": settings.roi_min_confidence,
                      "trained_on": (c.get_model_version(settings.roi_model, version).tags or {}).get("trained_on")})
    return {"localiser": str(checkpoint), "localiser_info": str(info)}


def score_version(name: str, version: str, test: pd.DataFrame) -> dict[str, Any]:
    """A registered version scored on the challenger's test crops, so both are judged on the same images (at
    the version's own operating threshold); {"error": ...} when it returns no probability for some image."""
    import math

    from osteo_model.metrics import compute_metrics

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    predictor = model.unwrap_python_model().predictor
    results = predictor.predict([Path(p).read_bytes() for p in test["path"].astype(str)], heatmaps=False)
    probs = [float(r["probability"]) for r in results]
    if not all(math.isfinite(p) for p in probs):
        return {"error": f"version {version} gave no probability for {sum(not math.isfinite(p) for p in probs)} "
                         "test images"}
    m = compute_metrics(test["label"].astype(int).tolist(), probs, predictor.threshold)
    return {k: v for k, v in m.items() if isinstance(v, int | float)}


def experiment_of(c: MlflowClient, run_id: str) -> str:
    return c.get_run(run_id).info.experiment_id


def links(tracking_uri: str, experiment_id: str | None, run_id: str, model_name: str | None,
          model_version: str | None) -> dict[str, str]:
    """Links to the MLflow run and the registered version: UI pages on a tracking server, URIs otherwise. `runs` is
    the experiment's runs table (MLflow 3.17 opens a bare experiment link on its GenAI overview: ui_app.py)."""
    out: dict[str, str] = {}
    base = tracking_uri.rstrip("/")
    if base.startswith(("http://", "https://")):
        if experiment_id:
            out["runs"] = runs_table(base, experiment_id)
            out["run"] = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
        if model_name and model_version:
            out["model_version"] = f"{base}/#/models/{model_name}/versions/{model_version}"
    else:
        out["run"] = f"runs:/{run_id}"
        if model_name and model_version:
            out["model_version"] = f"models:/{model_name}/{model_version}"
    return out


def runs_table(base_url: str, experiment_id: str) -> str:
    """The experiment's runs table in MLflow's page, in its model-training view whatever the browser chose before."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def experiment_runs_table(base_url: str, experiment: str) -> str | None:
    """The runs table of the experiment named `experiment` on the MLflow server at `base_url`; None when the server
    holds no such experiment yet (nothing trained)."""
    found = MlflowClient(base_url, base_url).get_experiment_by_name(experiment)
    return runs_table(base_url, found.experiment_id) if found is not None else None


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
