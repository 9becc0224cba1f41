"""Test-year results per acquisition subgroup, with 95 % confidence intervals (pure functions).

One row per (attribute, value) -- modality CR/DX, photometric MONOCHROME1/2, compressed or not, sex,
age band -- plus the overall row: counts (n, positives, negatives), ROC AUC with a percentile bootstrap
interval (fixed seed; resamples that hold one class only are skipped), osteoporosis recall (sensitivity)
and specificity at the operating threshold with Wilson score intervals, and a flag saying whether the
subgroup's AUC lies within 0.05 of the overall AUC. A subgroup with one class has no AUC: its AUC is
NaN with the note "one class only" and its flag None, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from osteo_model.frames import named_rows

Z95 = 1.959963984540054
AUC_TOLERANCE = 0.05
AGE_BANDS = ("<60", "60-69", "70-79", "80+")
ATTRIBUTES = ("modality", "photometric", "compressed", "sex", "age_band")
COLUMNS = ["attribute", "value", "n", "positives", "negatives", "auc", "auc_lo", "auc_hi", "recall", "recall_lo",
           "recall_hi", "specificity", "specificity_lo", "specificity_hi", "auc_within_0_05", "note"]


def age_band(age) -> str:
    """<60, 60-69, 70-79, 80+ (years at the exam); 'unknown' when missing."""
    if age is None or (isinstance(age, float) and math.isnan(age)) or pd.isna(age):
        return "unknown"
    age = int(age)
    return "<60" if age < 60 else "80+" if age >= 80 else f"{age // 10 * 10}-{age // 10 * 10 + 9}"


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (NaN, NaN) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _auc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (Mann-Whitney with average ranks for ties); NaN where a row has one class."""
    from scipy.stats import rankdata

    ranks = rankdata(p, axis=-1)
    n1 = y.sum(axis=-1)
    n0 = y.shape[-1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def roc_auc(labels, probs) -> float:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    return float(_auc_rows(y, p)) if len(y) else math.nan


def bootstrap_auc_ci(labels, probs, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC (resampling images with replacement, `seed` fixed);
    (NaN, NaN) with one class."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if len(y) == 0 or len(np.unique(y)) < 2:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    aucs = _auc_rows(y[idx], p[idx])
    aucs = aucs[~np.isnan(aucs)]
    if not len(aucs):
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(aucs, [tail, 100 - tail])
    return float(lo), float(hi)


def group_row(attribute: str, value: str, labels, probs, threshold: float, *, n_boot: int = 2000,
              seed: int = 0, overall_auc: float = math.nan) -> dict:
    """One subgroup's counts, AUC (bootstrap CI), recall and specificity (Wilson CIs), and flag."""
    y = np.asarray(labels).astype(int).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    pred = p >= threshold
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    tp, tn = int((pred & (y == 1)).sum()), int((~pred & (y == 0)).sum())
    auc = roc_auc(y, p)
    lo, hi = bootstrap_auc_ci(y, p, n_boot=n_boot, seed=seed)
    r_lo, r_hi = wilson_interval(tp, pos)
    s_lo, s_hi = wilson_interval(tn, neg)
    within = None if math.isnan(auc) or math.isnan(overall_auc) else bool(abs(auc - overall_auc) <= AUC_TOLERANCE)
    note = "" if len(y) else "empty"
    if len(y) and math.isnan(auc):
        note = "one class only: AUC undefined"
    return {"attribute": attribute, "value": str(value), "n": int(len(y)), "positives": pos, "negatives": neg,
            "auc": auc, "auc_lo": lo, "auc_hi": hi,
            "recall": tp / pos if pos else math.nan, "recall_lo": r_lo, "recall_hi": r_hi,
            "specificity": tn / neg if neg else math.nan, "specificity_lo": s_lo, "specificity_hi": s_hi,
            "auc_within_0_05": within, "note": note}


def subgroup_table(frame: pd.DataFrame, labels, probs, threshold: float,
                   attributes: Sequence[str] = ATTRIBUTES, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The overall row, then one row per value of each attribute column of `frame` (rows aligned with
    labels and probs); a missing value is its own group 'unknown'."""
    y = np.asarray(labels).astype(int).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if not (len(frame) == len(y) == len(p)):
        raise ValueError(f"frame, labels and probs differ in length ({len(frame)}, {len(y)}, {len(p)})")
    overall = group_row("overall", "all", y, p, threshold, n_boot=n_boot, seed=seed)
    overall["auc_within_0_05"] = None if math.isnan(overall["auc"]) else True
    rows = [overall]
    for attr in attributes:
        if attr not in frame.columns:
            continue
        values = frame[attr].astype(object).where(frame[attr].notna(), "unknown").astype(str).to_numpy()
        for value in sorted(set(values), key=_order):
            m = values == value
            rows.append(group_row(attr, value, y[m], p[m], threshold, n_boot=n_boot, seed=seed,
                                  overall_auc=overall["auc"]))
    return pd.DataFrame(rows, columns=COLUMNS)


def _order(value: str) -> tuple[int, str]:
    return (AGE_BANDS.index(value), "") if value in AGE_BANDS else (len(AGE_BANDS), value)


def subgroup_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown: value [95 % CI] per metric; n/a where undefined."""
    def ci(v, lo, hi) -> str:
        if v is None or math.isnan(v):
            return "n/a"
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if not (math.isnan(lo) or math.isnan(hi)) else f"{v:.3f}"

    lines = ["| subgroup | n | positives | AUC [95% CI] | recall [95% CI] | specificity [95% CI] | "
             f"AUC within {AUC_TOLERANCE} of overall |",
             "|---|---|---|---|---|---|---|"]
    for r in named_rows(table):
        flag = "n/a" if r.auc_within_0_05 is None or pd.isna(r.auc_within_0_05) else (
            "yes" if r.auc_within_0_05 else "**no**")
        lines.append(f"| {r.attribute} {r.value} | {r.n} | {r.positives} | {ci(r.auc, r.auc_lo, r.auc_hi)} | "
                     f"{ci(r.recall, r.recall_lo, r.recall_hi)} | "
                     f"{ci(r.specificity, r.specificity_lo, r.specificity_hi)} | {flag} |")
    return "\n".join(lines)
