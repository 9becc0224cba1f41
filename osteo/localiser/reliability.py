"""How far the localiser's confidence can be trusted, measured on the test year (osteo_model.roi_calibrate
fits the mapping on the validation views; this checks it on views it never saw).

- clean test views: the share that is confident (>= the minimum confidence) and the share of those
  that are right (IoU >= 0.5 on the image's pixels), and the ECE;
- the perturbed test set (each test view randomised harder than in training, some of them into
  crops away from the neck or mirrored hips; the test films' away-from-the-neck crops, other
  radiographs, and noise/text/blanks): the ECE and Brier score of the confidence against "the box
  is right" (a negative is never right), the reliability table, and the share of negatives given a
  confident box, overall and per kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EVAL_SEED = 104729  # never the calibration's seed
EVAL_DRAWS, EVAL_STRENGTH = 2, 1.5


def confidence_metrics(model: Any, data: Any, confidence: np.ndarray, iou: np.ndarray,
                       min_confidence: float) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics for the run: confident_share, confident_right, ece_clean, ece, brier,
    negatives_confident, negatives_max_confidence, n_negatives; the calibration record: the
    reliability table and the negatives per kind)."""
    from osteo_model.roi_calibrate import apply, needs_agreement, perturbed_set, reliability, score_set
    from osteo_model.roi_train import calibration_of

    conf, right = np.asarray(confidence, np.float64), (np.asarray(iou) >= 0.5).astype(float)
    sure = conf >= min_confidence
    ece_clean, _ = reliability(conf, right)
    metrics = {"confident_share": float(sure.mean()),
               "confident_right": float(right[sure].mean()) if sure.any() else float("nan"),
               "ece_clean": ece_clean}
    neg = data["test_neg_x"].astype(np.float32) if "test_neg_x" in data else None
    kinds_given = [str(k) for k in data["test_neg_kind"]] if "test_neg_kind" in data else []
    views = data["test_x"].astype(np.float32)
    test = perturbed_set(views, data["test_boxes"], neg, seed=EVAL_SEED, draws=EVAL_DRAWS,
                         strength=EVAL_STRENGTH)
    kind = test["kind"].astype(object)
    kind[kind == "negative"] = kinds_given * EVAL_DRAWS
    cal = calibration_of(model)
    scored = score_set(model, test, tta=needs_agreement(cal))
    c = apply(cal, scored)
    keep = ~np.isnan(scored["right"])
    ece, table = reliability(c[keep], scored["right"][keep])
    negative = test["target"] == 0
    by_kind = {}
    for k in sorted(set(kind[negative])):
        sel = negative & (kind == k)
        by_kind[k] = {"n": int(sel.sum()), "confident": float((c[sel] >= min_confidence).mean()),
                      "max_confidence": float(c[sel].max())}
    metrics.update(ece=ece, brier=float(np.mean((c[keep] - scored["right"][keep]) ** 2)),
                   negatives_confident=float((c[negative] >= min_confidence).mean()),
                   negatives_max_confidence=float(c[negative].max()), n_negatives=int(negative.sum()),
                   perturbed_hips_confident=float((c[test["target"] == 1] >= min_confidence).mean()))
    return metrics, {"ece": ece, "reliability": table, "negatives": by_kind, "n": int(keep.sum()),
                     "min_confidence": min_confidence}
