"""Calibration of the osteoporosis probability: expected calibration error and temperature scaling.

Pure functions over arrays (labels 0/1, probabilities of class 1); nothing is read or written.

Expected calibration error (ECE), as used here: the probabilities are put in ``n_bins`` equal-width
bins over [0, 1] (default 10: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0], the last bin closed; the same bins
as osteo_model.metrics.reliability_table); in each non-empty bin b, |mean predicted probability -
observed rate of class 1|; ECE is the average of these gaps weighted by the bin's share of the images:
ECE = sum_b (n_b / n) * |mean(p_b) - mean(y_b)|. 0 is perfect; it is in the units of probability.

Temperature scaling (Guo et al., 2017) divides the model's logit by one temperature T > 0 fitted on the
VALIDATION set by minimising the negative log-likelihood; T > 1 softens overconfident probabilities,
T < 1 sharpens underconfident ones. Applying it never changes the ranking (ROC AUC stays the same).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

EPS = 1e-7
LOG_T_BOUNDS = (-5.0, 5.0)  # T in [e^-5, e^5] ~ [0.0067, 148]


def _arrays(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probs differ in length ({len(y)} vs {len(p)})")
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1):
        raise ValueError("probabilities must lie in [0, 1]")
    return y, p


def expected_calibration_error(labels, probs, n_bins: int = 10) -> float:
    """ECE over ``n_bins`` equal-width bins (see the module's note); NaN for an empty set."""
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    y, p = _arrays(labels, probs)
    if not len(y):
        return math.nan
    idx = np.clip(np.floor(p * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(idx):
        m = idx == b
        ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


def to_logits(probs) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def nll(labels, logits, temperature: float = 1.0) -> float:
    """Mean binary negative log-likelihood of ``labels`` under sigmoid(logits / temperature)."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    z = np.asarray(logits, dtype=np.float64).ravel() / temperature
    # -[y log s(z) + (1-y) log(1 - s(z))] = log(1 + e^z) - y z, stable for any z
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(labels, *, logits=None, probs=None) -> float:
    """The temperature T minimising the validation NLL of sigmoid(logit / T), searched over log T
    (scipy's bounded Brent); 1.0 (no change) when the set is empty or has one class only."""
    from scipy.optimize import minimize_scalar

    if (logits is None) == (probs is None):
        raise ValueError("give logits or probs, not both")
    if probs is not None:
        y, p = _arrays(labels, probs)
        z = to_logits(p)
    else:
        y = np.asarray(labels, dtype=np.float64).ravel()
        z = np.asarray(logits, dtype=np.float64).ravel()
        if y.shape != z.shape:
            raise ValueError(f"labels and logits differ in length ({len(y)} vs {len(z)})")
    if len(np.unique(y)) < 2 or not np.any(z):
        return 1.0
    res = minimize_scalar(lambda log_t: nll(y, z, math.exp(log_t)), bounds=LOG_T_BOUNDS, method="bounded",
                          options={"xatol": 1e-6})
    return float(math.exp(res.x))


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Probabilities rescaled by ``temperature`` (through their logits)."""
    if not temperature > 0:
        raise ValueError("temperature must be > 0")
    return sigmoid(to_logits(probs) / temperature)


@dataclass(frozen=True)
class CalibrationReport:
    """ECE of the test probabilities as they are and after the validation-fitted temperature."""

    n_bins: int
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    fitted_on: str  # "validation" | "none" (no validation set given: T = 1)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def calibration_report(test_labels, test_probs, val_labels=None, val_probs=None, n_bins: int = 10) -> CalibrationReport:
    """Fit T on validation (when given), apply it to the test probabilities, ECE and NLL before and after."""
    y, p = _arrays(test_labels, test_probs)
    fitted = val_labels is not None and val_probs is not None and len(val_labels) > 0
    t = fit_temperature(val_labels, probs=val_probs) if fitted else 1.0
    after = apply_temperature(p, t) if len(p) and t != 1.0 else p
    z = to_logits(p)
    return CalibrationReport(
        n_bins=n_bins, temperature=t,
        ece_before=expected_calibration_error(y, p, n_bins), ece_after=expected_calibration_error(y, after, n_bins),
        nll_before=nll(y, z) if len(y) else math.nan, nll_after=nll(y, z, t) if len(y) else math.nan,
        fitted_on="validation" if fitted else "none")
