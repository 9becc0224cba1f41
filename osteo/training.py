"""Training work as plain functions: folds, test-year evaluation, reports (no Prefect, no MLflow).

Files go under one folder per training (keyed by snapshot digest and config), so a run that
was killed resumes there: a fold whose result file exists is not trained again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from osteo.snapshot import load_manifest
from osteo_model import metrics as M
from osteo_model.splits import fold_frames, holdout_frame

EpochCallback = Callable[[int, dict], None] | None


def training_digest(snapshot_digest: str, config: dict[str, Any]) -> str:
    blob = json.dumps({"snapshot": snapshot_digest, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


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
             on_epoch: EpochCallback = None) -> dict[str, Any]:
    """Train one fold (or return its finished result) and write checkpoint, history and curves."""
    from osteo_model.predict import save_checkpoint
    from osteo_model.train import train_fold

    result_file = out_dir / f"fold-{fold}.json"
    if result_file.exists():
        return json.loads(result_file.read_text()) | {"resumed": True}
    train_df, val_df = fold_frames(manifest, fold)
    model, fit = train_fold(train_df, val_df, config.replace(seed=config.seed + fold), device=device,
                            on_epoch=on_epoch)
    checkpoint = save_checkpoint(out_dir / f"fold-{fold}.pth", model, config,
                                 {"fold": fold, "best_epoch": fit.best_epoch, "threshold": config.threshold})
    M.plot_loss_curves(fit.history, out_dir / f"fold-{fold}" / "loss_curves.png", title=f"fold {fold}")
    val_metrics = M.compute_metrics(fit.val_labels, fit.val_probs, config.threshold)
    result = {
        "fold": fold,
        "arch": config.arch,
        "checkpoint": str(checkpoint),
        "best_epoch": fit.best_epoch,
        "val_loss": fit.best_metrics["val_loss"],
        "val_auc": fit.best_metrics["val_auc"],
        "val_recall": fit.best_metrics["val_recall"],
        "n_train": len(train_df),
        "n_val": len(val_df),
        "val_metrics": {k: v for k, v in val_metrics.items() if isinstance(v, int | float)},
        "history": fit.history,
        "seconds": float(sum(h["seconds"] for h in fit.history)),
        "resumed": False,
    }
    write_json(result_file, result)  # last: its presence means the fold is finished
    return result


def pick_best(results: list[dict[str, Any]], select_by: str) -> dict[str, Any]:
    """Best fold by validation loss (lowest) or validation recall / AUC (highest; loss breaks ties)."""
    def key(r: dict) -> tuple:
        loss = r["val_loss"] if math.isfinite(r["val_loss"]) else math.inf
        if select_by == "val_loss":
            return (loss,)
        score = r.get(select_by, math.nan)
        return (-(score if math.isfinite(score) else -math.inf), loss)

    return min(results, key=key)


def evaluate_on_test(checkpoint: str, manifest: pd.DataFrame, out_dir: Path, *, device=None,
                     n_gradcam: int = 4) -> dict[str, Any]:
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
    return {"metrics": flat, "confusion_matrix": metrics.get("confusion_matrix"), "baseline_auc": baseline["auc"],
            "n_test": int(len(test)), "test_positives": int(labels.sum()), "probs": probs.tolist()}


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
