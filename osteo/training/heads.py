"""The optional heads of issue 16 on a trained checkpoint and its snapshot: clinical fusion (AUC with and
without age/sex on the same images), femoral-neck BMD and T-score regression (Pearson r, MAE against
DEXA), and the 3-class output (accuracy, macro F1, confusion matrix), all on the test year.

The heads are fitted on the snapshot's training images (originals, every fold) through the frozen
backbone and scored on the test split; the CNN is not retrained. A plain function: the training flow's
evaluation calls it and logs ``metrics`` and the written files to MLflow.

Caveat, said once: the checkpoint's weights saw most training images, so their logits are sharper on
the training images than on the test year; the fusion's two arms share that bias (same images, same
image features), so the comparison with and without clinical variables stays fair.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from osteo.errors import UserError
from osteo.training.clinical import clinical_matrix, clinical_table, parse_clinical
from osteo_common.files import atomic_write_text

if TYPE_CHECKING:  # osteo_model.heads imports torch: only when the heads run
    from osteo_model.heads import RegressionResult, ThreeClassResult

FIT_ON = ("train", "validation")


@dataclass(frozen=True)
class HeadsReport:
    metrics: dict[str, float]  # flat, MLflow-ready
    clinical: tuple[str, ...]
    confusion3: list[list[int]]  # rows truth, columns predicted: normal, osteopenia, osteoporosis
    predictions_csv: str
    metrics_json: str
    bmd_scatter_png: str
    confusion3_png: str

    def to_dict(self) -> dict:
        return asdict(self)


def _frame(manifest: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    if isinstance(manifest, pd.DataFrame):
        return manifest
    from osteo.training.snapshot import load_manifest

    return load_manifest(manifest)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_bmd_scatter(test: pd.DataFrame, path: Path, bmd_r: float, t_r: float) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, col, unit, r in ((axes[0], "neck_bmd", "g/cm²", bmd_r), (axes[1], "t_score", "T", t_r)):
        both = test[[col, f"{col}_pred"]].dropna()
        ax.scatter(both[col], both[f"{col}_pred"], s=14, alpha=0.7)
        if len(both):
            lo = float(min(both.min()))
            hi = float(max(both.max()))
            ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
        ax.set_xlabel(f"DEXA femoral-neck {unit}")
        ax.set_ylabel(f"predicted {unit}")
        ax.set_title(f"{'BMD' if col == 'neck_bmd' else 'T-score'}: r = {r:.2f}, n = {len(both)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion3(cm: list[list[int]], path: Path, accuracy: float, macro_f1: float) -> Path:
    from osteo_model.heads import LABELS3

    plt = _pyplot()
    arr = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(arr, cmap="Blues")
    for (i, j), v in np.ndenumerate(arr):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > arr.max() / 2 else "black")
    ax.set_xticks(range(3), LABELS3, rotation=20)
    ax.set_yticks(range(3), LABELS3)
    ax.set_xlabel("predicted")
    ax.set_ylabel("DEXA")
    ax.set_title(f"3 classes: accuracy {accuracy:.2f}, macro F1 {macro_f1:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def heads_rows(factory: sessionmaker[Session], manifest: pd.DataFrame | str | os.PathLike,
               checkpoint: str | os.PathLike, extra: dict, fit_on: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, test): the images the heads are fitted on and scored on, each with its clinical and DEXA row."""
    frame = _frame(manifest)
    frame = frame[frame["split"].isin(["train", "test"])]
    if fit_on == "validation":
        if "fold" not in extra or "fold" not in frame.columns:
            raise UserError("heads_no_fold", f"{Path(checkpoint).name} names no validation fold: use fit_on='train'")
        frame = frame[(frame["split"] == "test") | (frame["fold"] == int(extra["fold"]))]
    table = clinical_table(factory, frame["member_id"].tolist())
    rows = frame[["member_id", "path", "label", "split"]].merge(table, on="member_id", how="inner")
    fit, test = rows[rows["split"] == "train"].reset_index(drop=True), rows[rows["split"] == "test"]
    test = test.reset_index(drop=True)
    if fit.empty or test.empty or fit["label"].nunique() < 2:
        raise UserError("heads_no_data", "the heads need training images of both labels and test images "
                        f"with their DEXA rows (found {len(fit)} training, {len(test)} test)")
    return fit, test


@dataclass(frozen=True)
class FittedHeads:
    """The three heads scored on the test images: flat metrics, the test rows with every prediction, and
    what the written files need."""

    metrics: dict[str, float]
    test: pd.DataFrame
    bmd: RegressionResult
    tscore: RegressionResult
    three: ThreeClassResult


def fit_heads(model, config, fit: pd.DataFrame, test: pd.DataFrame, clinical: tuple[str, ...], *, device,
              n_components: int, batch_size: int, seed: int, fit_on: str) -> FittedHeads:
    """Embed both sets through the frozen backbone, fit the fusion (with clinical variables), BMD, T-score and
    3-class heads on `fit` and score them on `test`."""
    from osteo_model.heads import bmd_head, embed_with_logits, fusion_auc, image_features, three_class_head

    fit_emb = embed_with_logits(model, fit["path"].tolist(), config.image_size, device, batch_size)
    test_emb = embed_with_logits(model, test["path"].tolist(), config.image_size, device, batch_size)

    fit_img, test_img = image_features(fit_emb, test_emb, n_components, seed)
    metrics: dict[str, float] = {"heads_n_fit": float(len(fit)), "heads_n_test": float(len(test)),
                                 "heads_fit_on_validation": float(fit_on == "validation")}
    test = test.assign(p_image=np.nan, p_fused=np.nan)
    if clinical:
        fusion = fusion_auc(fit_img, clinical_matrix(fit, clinical), fit["label"], test_img,
                            clinical_matrix(test, clinical), test["label"], clinical)
        metrics |= {"fusion_auc_image": fusion.auc_image, "fusion_auc_with_clinical": fusion.auc_fused,
                    "fusion_auc_clinical_only": fusion.auc_clinical,
                    "fusion_auc_gain": fusion.auc_fused - fusion.auc_image}
        test = test.assign(p_image=fusion.prob_image, p_fused=fusion.prob_fused)
    bmd = bmd_head(fit_emb.features, fit["neck_bmd"], test_emb.features, test["neck_bmd"])
    tsc = bmd_head(fit_emb.features, fit["t_score"], test_emb.features, test["t_score"])
    three = three_class_head(fit_emb.features, fit["label3"], test_emb.features, test["label3"])
    metrics |= {"bmd_pearson_r": bmd.pearson_r, "bmd_mae": bmd.mae, "bmd_n_test": float(bmd.n_test),
                "tscore_pearson_r": tsc.pearson_r, "tscore_mae": tsc.mae,
                "class3_accuracy": three.accuracy, "class3_macro_f1": three.macro_f1}
    test = test.assign(neck_bmd_pred=bmd.predictions, t_score_pred=tsc.predictions, label3_pred=three.predictions)
    return FittedHeads(metrics=metrics, test=test, bmd=bmd, tscore=tsc, three=three)


def write_heads(heads: FittedHeads, out_dir: str | os.PathLike, clinical: tuple[str, ...], *, n_components: int,
                fit_on: str) -> HeadsReport:
    """Write the predictions (CSV), metrics (JSON), the BMD / T scatter plot and the 3-class confusion matrix
    (PNG) under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "heads_predictions.csv"
    cols = ["member_id", "label", "p_image", "p_fused", "neck_bmd", "neck_bmd_pred", "t_score", "t_score_pred",
            "label3", "label3_pred"]
    atomic_write_text(csv_path, heads.test[cols].to_csv(index=False, float_format="%.5g"))
    json_path = out / "heads_metrics.json"
    payload = {"clinical": list(clinical), "metrics": {k: _num(v) for k, v in heads.metrics.items()},
               "confusion3": heads.three.confusion, "labels3": ["normal", "osteopenia", "osteoporosis"],
               "ridge_alpha": {"bmd": heads.bmd.alpha, "tscore": heads.tscore.alpha},
               "image_pca_components": n_components,
               "fit_on": fit_on}
    atomic_write_text(json_path, json.dumps(payload, indent=2, sort_keys=True))
    three = heads.three
    scatter = plot_bmd_scatter(heads.test, out / "heads_bmd_scatter.png", heads.bmd.pearson_r, heads.tscore.pearson_r)
    cm_png = plot_confusion3(three.confusion, out / "heads_confusion3.png", three.accuracy, three.macro_f1)
    return HeadsReport(metrics=heads.metrics, clinical=clinical, confusion3=three.confusion,
                       predictions_csv=str(csv_path), metrics_json=str(json_path),
                       bmd_scatter_png=str(scatter), confusion3_png=str(cm_png))


def heads_report(factory: sessionmaker[Session], manifest: pd.DataFrame | str | os.PathLike,
                 checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                 clinical: tuple[str, ...] | str | None = ("age", "sex"), *, device=None,
                 n_components: int = 0, batch_size: int = 32, seed: int = 0,
                 fit_on: str = "train") -> HeadsReport:
    """Fit the three heads on the training images of ``manifest`` through ``checkpoint``'s frozen
    backbone, score them on its test split, and write predictions (CSV), metrics (JSON), the BMD / T
    scatter plot and the 3-class confusion matrix (PNG) under ``out_dir``.

    ``fit_on`` "train": every training image; "validation": only the checkpoint's own validation fold
    (images its weights never trained on: fewer, but the image logits are as sharp as on the test year)."""
    from osteo_model.predict import load_checkpoint

    clinical = parse_clinical(clinical)
    if fit_on not in FIT_ON:
        raise ValueError(f"fit_on must be one of {FIT_ON}, got {fit_on!r}")
    model, config, extra = load_checkpoint(checkpoint)
    fit, test = heads_rows(factory, manifest, checkpoint, extra, fit_on)
    heads = fit_heads(model, config, fit, test, clinical, device=device, n_components=n_components,
                      batch_size=batch_size, seed=seed, fit_on=fit_on)
    return write_heads(heads, out_dir, clinical, n_components=n_components, fit_on=fit_on)
