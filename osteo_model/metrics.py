"""Classification metrics, plots and the mean-intensity baseline.

Positive class = 1 = osteoporosis. Every metric is safe when only one class is present
(it becomes NaN instead of raising). Plot functions write PNG files with matplotlib's Agg
backend, chosen inside the function (importing this module does not import matplotlib).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from osteo_model.stats import EpochRecord

NAN = float("nan")


def _arrays(y_true, prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true and prob differ in length ({len(y)} vs {len(p)})")
    return y, p


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else NAN


def compute_metrics(y_true, prob, threshold: float = 0.5) -> dict:
    """Metrics of probabilities ``prob`` against labels ``y_true`` at ``threshold``.

    Keys: n, n_pos, n_neg, threshold, accuracy, tn, fp, fn, tp, confusion_matrix
    ([[tn, fp], [fn, tp]], rows = truth 0/1, columns = prediction 0/1), precision_0,
    recall_0, f1_0, support_0, precision_1, recall_1, f1_1, support_1, sensitivity
    (= recall_1), specificity (= recall_0), ppv (= precision_1), npv (= precision_0),
    balanced_accuracy, roc_auc, pr_auc (average precision), brier. Undefined values are NaN.
    """
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

    y, p = _arrays(y_true, prob)
    pred = (p >= threshold).astype(int)
    cm = confusion_matrix(y, pred, labels=[0, 1]) if len(y) else np.zeros((2, 2), int)
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    out: dict = {
        "n": int(len(y)),
        "n_pos": int((y == 1).sum()),
        "n_neg": int((y == 0).sum()),
        "threshold": float(threshold),
        "accuracy": _div(tn + tp, len(y)),
        "tn": tn, "fp": fp, "fn": fn, "tp": tp,
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }
    prec = {0: _div(tn, tn + fn), 1: _div(tp, tp + fp)}
    rec = {0: _div(tn, tn + fp), 1: _div(tp, tp + fn)}
    for c in (0, 1):
        pr, rc = prec[c], rec[c]
        f1 = 2 * pr * rc / (pr + rc) if (pr + rc) and not np.isnan(pr + rc) else NAN
        out.update({f"precision_{c}": pr, f"recall_{c}": rc, f"f1_{c}": f1,
                    f"support_{c}": int((y == c).sum())})
    out.update(
        sensitivity=rec[1], specificity=rec[0], ppv=prec[1], npv=prec[0],
        balanced_accuracy=(rec[0] + rec[1]) / 2,
    )
    both = len(np.unique(y)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["roc_auc"] = float(roc_auc_score(y, p)) if both else NAN
        out["pr_auc"] = float(average_precision_score(y, p)) if out["n_pos"] else NAN
    out["brier"] = float(np.mean((p - y) ** 2)) if len(y) else NAN
    return out


def classification_report_text(y_true, prob, threshold: float = 0.5) -> str:
    """sklearn's classification report plus AUCs and the confusion matrix, as text."""
    from sklearn.metrics import classification_report

    y, p = _arrays(y_true, prob)
    m = compute_metrics(y, p, threshold)
    rep = classification_report(
        y, (p >= threshold).astype(int), labels=[0, 1],
        target_names=["no osteoporosis (0)", "osteoporosis (1)"], digits=3, zero_division=0,  # pyright: ignore[reportArgumentType] - unannotated, default 'warn'
    )
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    return (
        f"{rep}\n"
        f"threshold {threshold:g}  ROC AUC {m['roc_auc']:.3f}  PR AUC {m['pr_auc']:.3f}  "
        f"Brier {m['brier']:.3f}\n"
        f"sensitivity {m['sensitivity']:.3f}  specificity {m['specificity']:.3f}  "
        f"PPV {m['ppv']:.3f}  NPV {m['npv']:.3f}\n"
        f"confusion matrix (rows truth 0/1, cols predicted 0/1): [[{tn}, {fp}], [{fn}, {tp}]]\n"
    )


# ---------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_confusion_matrix(y_true, prob, path: str | os.PathLike, threshold: float = 0.5,
                          title: str = "Confusion matrix") -> Path:
    plt = _pyplot()
    cm = np.asarray(compute_metrics(y_true, prob, threshold)["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > cm.max() / 2 else "black", fontsize=13)
    ax.set_xticks([0, 1], ["0 normal", "1 osteo"])
    ax.set_yticks([0, 1], ["0 normal", "1 osteo"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (t={threshold:g})")
    return _save(fig, path)


def plot_roc(y_true, prob, path: str | os.PathLike, title: str = "ROC") -> Path:
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    y, p = _arrays(y_true, prob)
    fig, ax = plt.subplots(figsize=(4, 4))
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        auc = compute_metrics(y, p)["roc_auc"]
        ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    else:
        ax.text(0.5, 0.5, "one class only", ha="center")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr(y_true, prob, path: str | os.PathLike, title: str = "Precision-recall") -> Path:
    from sklearn.metrics import precision_recall_curve

    plt = _pyplot()
    y, p = _arrays(y_true, prob)
    fig, ax = plt.subplots(figsize=(4, 4))
    if (y == 1).any():
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, label=f"AP {compute_metrics(y, p)['pr_auc']:.3f}")
        ax.axhline((y == 1).mean(), color="k", ls="--", lw=0.8, label="prevalence")
    else:
        ax.text(0.5, 0.5, "no positives", ha="center")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left")
    return _save(fig, path)


def plot_loss_curves(history: Sequence[EpochRecord], path: str | os.PathLike,
                     title: str = "Loss") -> Path:
    """Train/validation loss per epoch from :class:`osteo_model.train.FitResult.history`."""
    plt = _pyplot()
    ep = [h.epoch for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ep, [h.train_loss for h in history], "o-", label="train")
    ax.plot(ep, [h.val_loss for h in history], "o-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("BCE loss")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def reliability_table(y_true, prob, n_bins: int = 10) -> list[dict]:
    """Equal-width probability bins: mean predicted probability, observed rate, count."""
    y, p = _arrays(y_true, prob)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = idx == b
        rows.append({
            "lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(m.sum()),
            "mean_prob": float(p[m].mean()) if m.any() else NAN,
            "observed": float(y[m].mean()) if m.any() else NAN,
        })
    return rows


def plot_reliability(y_true, prob, path: str | os.PathLike, n_bins: int = 10,
                     title: str = "Reliability") -> Path:
    plt = _pyplot()
    rows = [r for r in reliability_table(y_true, prob, n_bins) if r["count"]]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    ax.plot([r["mean_prob"] for r in rows], [r["observed"] for r in rows], "o-", label="model")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed osteoporosis rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    return _save(fig, path)


# ---------------------------------------------------------------- baseline
def mean_intensity(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    from PIL import Image

    out = np.empty(len(paths))
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            out[i] = np.asarray(im.convert("L"), dtype=np.float64).mean()
    return out


def mean_intensity_baseline(train_paths, train_labels, test_paths, test_labels) -> dict:
    """Logistic regression on each PNG's mean intensity — a model that can only see the
    exposure. If it rivals the CNN, the CNN's signal may be exposure, not bone.

    Returns dict(auc, accuracy, n_train, n_test, coef, intercept); auc NaN with one class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr = mean_intensity(train_paths).reshape(-1, 1)
    xte = mean_intensity(test_paths).reshape(-1, 1)
    ytr = np.asarray(train_labels).astype(int)
    yte = np.asarray(test_labels).astype(int)
    if len(np.unique(ytr)) < 2:
        return {"auc": NAN, "accuracy": NAN, "n_train": len(ytr), "n_test": len(yte),
                "coef": NAN, "intercept": NAN}
    clf = make_pipeline(StandardScaler(), LogisticRegression())
    clf.fit(xtr, ytr)
    p = clf.predict_proba(xte)[:, 1]
    m = compute_metrics(yte, p)
    lr = clf.steps[-1][1]
    return {"auc": m["roc_auc"], "accuracy": m["accuracy"], "n_train": int(len(ytr)),
            "n_test": int(len(yte)), "coef": float(lr.coef_[0, 0]),
            "intercept": float(lr.intercept_[0])}
