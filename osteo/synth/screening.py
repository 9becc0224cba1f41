"""The synthetic hospital's screening population (docs/synthetic.md): patients whose hip films were taken with no
DEXA exam before them, as the films an opportunistic screening sees. After the patient's last film, a DEXA exam
follows within the pairing window (so `osteo screen outcomes` has truth), after it, or never.

And the follow-up truth of every film, whoever the patient: the first valid DEXA exam on or after the film's day
and strictly within the window after it (osteo/screening/outcomes.py's rule), and whether its T-score confirms
osteoporosis.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

SCREENING_SHARE = 0.2  # of the patients past the first five (those carry the pairing's edge cases)
GROUPS = ("dexa_in_window", "dexa_after_window", "no_dexa")
GROUP_WEIGHTS = (0.5, 0.25, 0.25)
IN_WINDOW_DAYS = (1, 175)  # after the last film: inside the 183-day window of that film
AFTER_WINDOW_DAYS = (190, 420)  # after the last film: outside every film's window


class _Patient(Protocol):
    idx: int
    screening: str


class _Exam(Protocol):
    date: dt.date | None
    t: str

    def t_value(self) -> float | None: ...


def choose_screening(patients: Sequence[_Patient], rng: np.random.Generator) -> None:
    """Mark SCREENING_SHARE of the patients past the first five (at least three, when there are) with their group:
    the first three one of each group, so that even a small hospital has all three."""
    candidates = [p for p in patients if p.idx >= 5]
    n = min(len(candidates), max(3, int(round(SCREENING_SHARE * len(patients)))))
    for k, i in enumerate(rng.permutation(len(candidates))[:n]):
        group = GROUPS[k] if k < len(GROUPS) else GROUPS[int(rng.choice(len(GROUPS), p=GROUP_WEIGHTS))]
        candidates[int(i)].screening = group


def follow_up_day(group: str, last_film: dt.date, rng: np.random.Generator) -> dt.date | None:
    """The day of the patient's one DEXA exam, counted from the last film; None for `no_dexa`."""
    if group == "no_dexa":
        return None
    lo, hi = IN_WINDOW_DAYS if group == "dexa_in_window" else AFTER_WINDOW_DAYS
    return last_film + dt.timedelta(days=int(rng.integers(lo, hi + 1)))


def follow_up(day: dt.date, exams: Sequence[_Exam], window: int) -> _Exam | None:
    """The first valid exam on or after `day` and strictly within `window` days after it (the earliest; a tie
    keeps the first listed)."""
    best, best_day = None, None
    for e in exams:
        if e.t_value() is None or e.date is None or not 0 <= (e.date - day).days < window:
            continue
        if best_day is None or e.date < best_day:
            best, best_day = e, e.date
    return best


def follow_up_truth(day: dt.date, exams: Sequence[_Exam], window: int, osteoporosis_t: float) -> dict[str, Any]:
    """truth.csv's follow-up columns of one film: the gap to its follow-up exam, that exam's T-score (as the
    pipeline reads or derives it) and whether it confirms osteoporosis; empty when no exam follows in the window."""
    e = follow_up(day, exams, window)
    if e is None or e.date is None:
        return {"followup_days": "", "followup_t_score": "", "followup_confirmed": ""}
    t = e.t_value()
    assert t is not None  # follow_up takes valid exams only
    return {"followup_days": (e.date - day).days, "followup_t_score": e.t if e.t.strip() else f"{t:.4f}",
            "followup_confirmed": int(t <= osteoporosis_t)}
