"""The best fold scored on the test year: metrics at the operating threshold and at 0.5, the plots, the
report, the mean-intensity baseline and Grad-CAM examples (subgroups and calibration:
evaluation_report.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from osteo.training.results import Evaluation
from osteo_common.files import write_json
from osteo_model import metrics as M
from osteo_model.splits import holdout_frame
from osteo_model.subgroups import bootstrap_auc_ci


def evaluate_on_test(checkpoint: str, manifest: pd.DataFrame, out_dir: Path, *, device=None,
                     n_gradcam: int = 4, threshold: float | None = None) -> Evaluation:
    """Score the best fold on the test year at the operating threshold (default: the checkpoint's) and
    at 0.5; write the plots (a confusion matrix for each), report and Grad-CAM examples."""
    from osteo_model.predict import Predictor

    test = holdout_frame(manifest)
    train = manifest[manifest["split"] == "train"]  # originals only: the snapshot manifest
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    labels, probs = score_test_year(predictor, test)
    thr = predictor.threshold if threshold is None else float(threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = M.compute_metrics(labels, probs, thr)
    at_half = M.compute_metrics(labels, probs, 0.5)
    write_test_plots(labels, probs, thr, out_dir)
    baseline = M.mean_intensity_baseline(train["path"].tolist(), train["label"].tolist(),
                                         test["path"].tolist(), labels.tolist())
    auc_ci = bootstrap_auc_ci(labels, probs)
    write_gradcam_examples(predictor, test, probs, out_dir / "gradcam", n_gradcam)
    write_test_files(test, labels, probs, out_dir, {"threshold": thr, "metrics": metrics, "metrics_at_0.5": at_half,
                                                    "roc_auc_ci": list(auc_ci), "baseline_mean_intensity": baseline})
    return Evaluation(metrics=_flat(metrics), confusion_matrix=metrics.get("confusion_matrix"),
                      baseline_auc=baseline["auc"], n_test=int(len(test)), test_positives=int(labels.sum()),
                      threshold=thr, metrics_at_half=_flat(at_half),
                      confusion_matrix_at_half=at_half.get("confusion_matrix"),
                      test_member_ids=[int(i) for i in test["member_id"]], test_probs=[float(p) for p in probs],
                      auc_ci=auc_ci)


def score_test_year(predictor, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The test year's labels and the predictor's probabilities, in the frame's order."""
    from osteo_model.train import predict_probs

    probs = predict_probs(predictor.model, test["path"].tolist(), predictor.image_size, predictor.device)
    return test["label"].to_numpy().astype(int), probs


def write_test_plots(labels: np.ndarray, probs: np.ndarray, thr: float, out_dir: Path) -> None:
    """A confusion matrix at the operating threshold and at 0.5, the ROC, precision-recall and reliability."""
    M.plot_confusion_matrix(labels, probs, out_dir / "confusion_matrix.png", threshold=thr,
                            title=f"Test year at the operating threshold {thr:.3f}")
    M.plot_confusion_matrix(labels, probs, out_dir / "confusion_matrix_at_0.5.png", threshold=0.5,
                            title="Test year at threshold 0.5")
    M.plot_roc(labels, probs, out_dir / "roc.png", title="Test-year ROC")
    M.plot_pr(labels, probs, out_dir / "pr.png", title="Test-year precision-recall")
    M.plot_reliability(labels, probs, out_dir / "reliability.png")


def write_test_files(test: pd.DataFrame, labels: np.ndarray, probs: np.ndarray, out_dir: Path,
                     summary: dict) -> None:
    """The classification report (at the summary's threshold), every prediction, and the metrics' JSON."""
    (out_dir / "classification_report.txt").write_text(
        M.classification_report_text(labels, probs, summary["threshold"]))
    pd.DataFrame({"member_id": test["member_id"], "label": labels, "probability": probs}).to_csv(
        out_dir / "test_predictions.csv", index=False)
    write_json(out_dir / "test_metrics.json", summary)


def _flat(metrics: dict) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


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
