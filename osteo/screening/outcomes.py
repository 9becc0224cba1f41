"""How often the flag was right: each screened result of a classifier version linked to the first DEXA exam of the
same (pseudonymised) patient on or after the film's day and strictly within the pairing window after it
(OSTEO_PAIR_WINDOW_DAYS); an exam before the film never counts. Confirmed: that exam's T-score <= -2.5.

PPV = confirmed / flagged with a DEXA (a flagged patient without one can be neither), with its Wilson 95 %
interval; sensitivity and specificity among the screened who had a DEXA. Drift: the population stability index
of each week's probabilities (by the film's ISO week) against the version's reference distribution (its
validation probabilities, osteo_mlflow.screening), over its deciles; a week above PSI_WARNING warns.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np
from sqlalchemy import and_, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import DexaExam, DicomImage
from db.screening import ScreeningResult
from db.values import ScreeningStatus

PSI_WARNING = 0.25  # above it the screened population has moved away from what the model was validated on
PSI_MIN_IMAGES = 20  # a week with fewer images is reported, never warned about (its PSI is mostly noise)
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion; (None, None) when n is 0."""
    if n == 0:
        return None, None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def psi(reference: np.ndarray, observed: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of `observed` against `reference`, over the reference's quantile bins."""
    edges = np.unique(np.quantile(np.asarray(reference, dtype=float), np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / max(len(reference), 1)
    actual = np.histogram(observed, edges)[0] / max(len(observed), 1)
    expected, actual = np.clip(expected, eps, None), np.clip(actual, eps, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class Linked:
    """One screened result and the DEXA exam that followed it (None: none within the window)."""

    result_id: int
    flagged: bool
    probability: float
    study_date: dt.date
    exam_id: int | None
    gap_days: int | None
    t_score: float | None


@dataclass(frozen=True)
class WeekDrift:
    week: str  # ISO year-week of the films, 2024-W07
    images: int
    psi: float
    warning: bool


@dataclass(frozen=True)
class Outcomes:
    model: str
    window_days: int
    screened: int
    flagged: int
    with_dexa: int
    confirmed: int  # flagged, and the DEXA after the film says osteoporosis
    flagged_with_dexa: int
    false_positive: int
    missed: int  # not flagged, and the DEXA says osteoporosis
    true_negative: int
    ppv: float | None
    ppv_ci: tuple[float | None, float | None]
    sensitivity: float | None
    specificity: float | None
    drift: tuple[WeekDrift, ...] = ()
    reference: str | None = None  # where the reference distribution came from; None: no drift reported

    @property
    def warnings(self) -> list[str]:
        return [f"week {w.week}: PSI {w.psi:.2f} over {w.images} images (> {PSI_WARNING})" for w in self.drift
                if w.warning]

    def to_dict(self) -> dict:
        return {**asdict(self), "ppv_ci": list(self.ppv_ci), "drift": [asdict(w) for w in self.drift],
                "warnings": self.warnings}

    def metrics(self) -> dict[str, float]:
        """The figures MLflow keeps on the version (osteo_mlflow.screening.log_outcomes)."""
        figures = {"screened": self.screened, "flagged": self.flagged, "with_dexa": self.with_dexa,
                   "confirmed": self.confirmed, "ppv": self.ppv, "ppv_ci_low": self.ppv_ci[0],
                   "ppv_ci_high": self.ppv_ci[1], "sensitivity": self.sensitivity, "specificity": self.specificity,
                   "psi_max": max((w.psi for w in self.drift), default=None)}
        return {k: float(v) for k, v in figures.items() if v is not None}


def link_results(session: Session, name: str, version: str, window_days: int) -> list[Linked]:
    """Each screened result of the version with its first DEXA exam on or after the film, within the window."""
    rows = session.execute(
        select(ScreeningResult.id, ScreeningResult.label, ScreeningResult.probability, DicomImage.study_date,
               DicomImage.study_day, DexaExam.id, DexaExam.exam_day, DexaExam.t_score)
        .join(DicomImage, DicomImage.id == ScreeningResult.image_id)
        .outerjoin(DexaExam, and_(DexaExam.patient_id == DicomImage.patient_id,
                                  DexaExam.exam_day >= DicomImage.study_day,
                                  DexaExam.exam_day < DicomImage.study_day + window_days))
        .where(ScreeningResult.model_name == name, ScreeningResult.model_version == version,
               ScreeningResult.status == ScreeningStatus.SCREENED)
        .order_by(ScreeningResult.id, DexaExam.exam_day, DexaExam.id)).all()
    first: dict[int, Linked] = {}
    for rid, label, p, date, day, exam, exam_day, t in rows:
        if rid not in first and p is not None:  # the nearest exam after the film (then the lowest id); screened: p set
            first[rid] = Linked(rid, label == 1, float(p), date, exam, exam_day - day if exam else None, t)
    return list(first.values())


def weekly_drift(linked: list[Linked], reference: np.ndarray | None) -> tuple[WeekDrift, ...]:
    if reference is None or len(reference) == 0:
        return ()
    weeks: dict[str, list[float]] = defaultdict(list)
    for r in linked:
        year, week, _ = r.study_date.isocalendar()
        weeks[f"{year}-W{week:02d}"].append(r.probability)
    return tuple(WeekDrift(w, len(ps), round(psi(reference, np.array(ps)), 4),
                           len(ps) >= PSI_MIN_IMAGES and psi(reference, np.array(ps)) > PSI_WARNING)
                 for w, ps in sorted(weeks.items()))


def screening_outcomes(factory: sessionmaker[Session], name: str, version: str, *, window_days: int,
                       osteoporosis_t: float, reference: np.ndarray | None = None,
                       reference_source: str | None = None) -> Outcomes:
    with factory() as session:
        linked = link_results(session, name, version, window_days)
    dexa = [r for r in linked if r.exam_id is not None]
    sick = [r for r in dexa if r.t_score is not None and r.t_score <= osteoporosis_t]
    tp = sum(r.flagged for r in sick)
    fp = sum(r.flagged for r in dexa) - tp
    fn, tn = len(sick) - tp, len(dexa) - len(sick) - fp
    drift = weekly_drift(linked, reference)
    return Outcomes(model=f"{name}/{version}", window_days=window_days, screened=len(linked),
                    flagged=sum(r.flagged for r in linked), with_dexa=len(dexa), confirmed=tp,
                    flagged_with_dexa=tp + fp, false_positive=fp, missed=fn, true_negative=tn,
                    ppv=tp / (tp + fp) if tp + fp else None, ppv_ci=wilson(tp, tp + fp),
                    sensitivity=tp / (tp + fn) if tp + fn else None,
                    specificity=tn / (tn + fp) if tn + fp else None,
                    drift=drift, reference=reference_source if drift else None)
