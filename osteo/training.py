"""Training work as plain functions: folds, test-year evaluation, reports (no Prefect, no MLflow).

Files go under one folder per training (keyed by snapshot digest and config), so a run that
was killed resumes there: a fold whose result file exists is not trained again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from osteo.snapshot import SnapshotInfo, load_manifest
from osteo_common.files import atomic_write_text, write_json
from osteo_model import metrics as M
from osteo_model.splits import fold_frames, holdout_frame

EpochCallback = Callable[[int, dict], None] | None


@dataclass(frozen=True)
class FoldResult:
    """One finished fold (what fold-k.json holds, less the epoch history)."""

    fold: int
    arch: str
    checkpoint: str
    best_epoch: int
    val_loss: float
    val_auc: float
    val_recall: float
    n_train: int
    n_val: int
    val_metrics: dict[str, float]
    seconds: float
    resumed: bool = False
    run_id: str | None = None  # the fold's MLflow run, once tracked

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FoldResult:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Evaluation:
    """The best fold scored on the test year."""

    metrics: dict[str, float]
    confusion_matrix: Any
    baseline_auc: float
    n_test: int
    test_positives: int


@dataclass(frozen=True)
class Registration:
    """What the registry did with a training's best fold."""

    model_name: str
    model_version: str
    champion: bool
    champion_version: str | None
    decision: str
    champion_test_auc: float | None = None


@dataclass(frozen=True)
class TrainingReport:
    """A whole training: its JSON, the human summary and the Prefect artifact are built from this."""

    run_id: str
    snapshot: SnapshotInfo
    folds: list[FoldResult]
    best_fold: int
    evaluation: Evaluation
    registration: Registration

    def to_dict(self) -> dict[str, Any]:
        m = self.evaluation.metrics
        return {
            "run_id": self.run_id, "snapshot_digest": self.snapshot.digest,
            "n_train": self.snapshot.n_train, "n_test": self.snapshot.n_test, "best_fold": self.best_fold,
            "folds": [{k: getattr(f, k) for k in ("fold", "val_loss", "val_auc", "val_recall", "best_epoch",
                                                  "resumed")} for f in self.folds],
            "test_auc": m.get("roc_auc"), "test_accuracy": m.get("accuracy"), "test_recall": m.get("recall_1"),
            "test_specificity": m.get("specificity"), "baseline_auc": self.evaluation.baseline_auc,
            **asdict(self.registration),
        }

    def summary(self) -> str:
        r, reg = self.to_dict(), self.registration
        folds = ", ".join(f"fold {f.fold} val loss {f.val_loss:.3f} AUC {f.val_auc:.3f}" for f in self.folds)
        return "\n".join([
            f"snapshot        {r['snapshot_digest'][:16]} ({r['n_train']} train, {r['n_test']} test images)",
            f"folds           {folds}",
            f"best fold       {r['best_fold']}",
            f"test year       AUC {r['test_auc']:.3f}, accuracy {r['test_accuracy']:.3f}, "
            f"osteoporosis recall {r['test_recall']:.3f}, specificity {r['test_specificity']:.3f}",
            f"baseline        mean-intensity logistic regression AUC {r['baseline_auc']:.3f}",
            f"registered      {reg.model_name} version {reg.model_version} (challenger)"
            + (" -> champion" if reg.champion else f"; champion stays version {reg.champion_version}"),
            f"decision        {reg.decision}",
            f"MLflow run      {r['run_id']}",
        ])

    def markdown(self) -> str:
        rows = [f"| {k} | {v} |" for k, v in self.to_dict().items() if not isinstance(v, list)]
        return "\n".join(["| metric | value |", "|---|---|", *rows])


def training_digest(snapshot_digest: str, config: dict[str, Any]) -> str:
    blob = json.dumps({"snapshot": snapshot_digest, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def augment_training_set(factory, manifest_path: str, out_root: Path, seed: int, copies: int) -> str:
    """The seed's augmentation: `copies` seeded copies per training image, recorded for lineage.

    Returns the copies CSV (beside the manifest) that training_frame adds to the originals.
    """
    from osteo.snapshot import record_augmented_copies
    from osteo_model.augment import materialize_copies

    train = load_manifest(manifest_path).query("split == 'train'")
    out = materialize_copies(train, Path(out_root) / f"seed-{seed}", seed=seed, copies=copies)
    record_augmented_copies(factory, out)
    path = Path(manifest_path).with_name(Path(manifest_path).stem + f"-copies-seed{seed}.csv")
    atomic_write_text(path, out.assign(params=out["params"].map(json.dumps)).to_csv(index=False))
    return str(path)


def training_frame(manifest_path: str, copies_path: str | None) -> pd.DataFrame:
    """Originals plus their augmented copies (which carry source_member_id)."""
    manifest = load_manifest(manifest_path)
    if copies_path:
        copies = pd.read_csv(copies_path, dtype={"patient_key": str})
        manifest = pd.concat([manifest, copies[[c for c in copies.columns if c in
                                                 set(manifest.columns) | {"source_member_id"}]]],
                             ignore_index=True)
    return manifest


def run_fold(manifest: pd.DataFrame, fold: int, config, out_dir: Path, *, device=None,
             on_epoch: EpochCallback = None) -> FoldResult:
    """Train one fold (or return its finished result) and write checkpoint, history and curves."""
    from osteo_model.predict import save_checkpoint
    from osteo_model.train import train_fold

    result_file = out_dir / f"fold-{fold}.json"
    if result_file.exists():
        return replace(FoldResult.from_dict(json.loads(result_file.read_text())), resumed=True)
    train_df, val_df = fold_frames(manifest, fold)
    model, fit = train_fold(train_df, val_df, config.replace(seed=config.seed + fold), device=device,
                            on_epoch=on_epoch)
    checkpoint = save_checkpoint(out_dir / f"fold-{fold}.pth", model, config,
                                 {"fold": fold, "best_epoch": fit.best_epoch, "threshold": config.threshold})
    M.plot_loss_curves(fit.history, out_dir / f"fold-{fold}" / "loss_curves.png", title=f"fold {fold}")
    val_metrics = M.compute_metrics(fit.val_labels, fit.val_probs, config.threshold)
    result = FoldResult(
        fold=fold, arch=config.arch, checkpoint=str(checkpoint), best_epoch=fit.best_epoch,
        val_loss=fit.best_metrics["val_loss"], val_auc=fit.best_metrics["val_auc"],
        val_recall=fit.best_metrics["val_recall"], n_train=len(train_df), n_val=len(val_df),
        val_metrics={k: v for k, v in val_metrics.items() if isinstance(v, int | float)},
        seconds=float(sum(h["seconds"] for h in fit.history)),
    )
    # last: its presence means the fold is finished
    write_json(result_file, result.to_dict() | {"history": fit.history})
    return result


def pick_best(results: list[FoldResult], select_by: str) -> FoldResult:
    """The best fold by the same rule that picked each fold's best epoch (osteo_model.train)."""
    from osteo_model.train import pick_best as best_of

    return best_of(results, select_by, key=vars)


def evaluate_on_test(checkpoint: str, manifest: pd.DataFrame, out_dir: Path, *, device=None,
                     n_gradcam: int = 4) -> Evaluation:
    """Score the best fold on the test year; write the plots, report and Grad-CAM examples."""
    from osteo_model.predict import Predictor
    from osteo_model.train import predict_probs

    test = holdout_frame(manifest)
    train = manifest[manifest["split"] == "train"]  # originals only: the snapshot manifest
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    probs = predict_probs(predictor.model, test["path"].tolist(), predictor.image_size, predictor.device)
    labels = test["label"].to_numpy().astype(int)
    thr = predictor.threshold
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = M.compute_metrics(labels, probs, thr)
    M.plot_confusion_matrix(labels, probs, out_dir / "confusion_matrix.png", threshold=thr)
    M.plot_roc(labels, probs, out_dir / "roc.png", title="Test-year ROC")
    M.plot_pr(labels, probs, out_dir / "pr.png", title="Test-year precision-recall")
    M.plot_reliability(labels, probs, out_dir / "reliability.png")
    (out_dir / "classification_report.txt").write_text(M.classification_report_text(labels, probs, thr))
    pd.DataFrame({"member_id": test["member_id"], "label": labels, "probability": probs}).to_csv(
        out_dir / "test_predictions.csv", index=False)
    baseline = M.mean_intensity_baseline(train["path"].tolist(), train["label"].tolist(),
                                         test["path"].tolist(), labels.tolist())
    write_gradcam_examples(predictor, test, probs, out_dir / "gradcam", n_gradcam)
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    write_json(out_dir / "test_metrics.json", {"metrics": metrics, "baseline_mean_intensity": baseline})
    return Evaluation(metrics=flat, confusion_matrix=metrics.get("confusion_matrix"), baseline_auc=baseline["auc"],
                      n_test=int(len(test)), test_positives=int(labels.sum()))


def write_gradcam_examples(predictor, test: pd.DataFrame, probs: np.ndarray, out_dir: Path, n: int) -> None:
    """The most confident positives and negatives, image beside heat-map overlay."""
    from PIL import Image

    from osteo_model.gradcam import overlay

    out_dir.mkdir(parents=True, exist_ok=True)
    order = np.argsort(probs)
    picks = list(order[::-1][: n // 2]) + list(order[: n - n // 2])
    for rank, i in enumerate(picks):
        row = test.iloc[int(i)]
        with Image.open(row["path"]) as im:
            gray = np.asarray(im.convert("L").resize((predictor.image_size,) * 2))
        (res,) = predictor.predict([gray])
        panel = np.concatenate([np.repeat(gray[..., None], 3, axis=-1), overlay(gray, res["heatmap"])], axis=1)
        name = f"{rank:02d}_label{int(row['label'])}_p{res['probability']:.2f}.png"
        Image.fromarray(panel).save(out_dir / name)
