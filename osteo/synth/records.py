"""The cohort plan's records (patients, images, DEXA exams, the plan) and the constants of its rules.

Kept apart from the draws (plan.py, plan_images.py, plan_exams.py) so that each of those modules can build
the records without importing another draw module.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

BMD_MEAN = 0.858
BMD_SD = 0.120
OSTEO_T = -2.5
PAIR_WINDOW_DAYS = 183
T_LIMIT = 10.0

FIRST_DAY = dt.date(2018, 1, 1)
YEARS = (2018, 2019, 2020, 2021, 2022)
YEAR_WEIGHTS = np.array([0.17, 0.17, 0.17, 0.17, 0.32])


@dataclass
class Patient:
    idx: int
    patient_id: str
    name: str
    name_zh: str
    sex: str
    birth: dt.date
    bmd0: float  # true femoral-neck BMD on 2018-01-01
    decline: float  # g/cm2 per year
    has_dexa: bool = True
    screening: str = ""  # the screening population's group (osteo/synth/screening.py); "" for the others

    def bmd_at(self, day: dt.date) -> float:
        years = (day - FIRST_DAY).days / 365.25
        return max(0.30, self.bmd0 - self.decline * years)


@dataclass
class Image:
    idx: int
    patient: int
    study: int
    date: dt.date
    laterality: str  # L | R | B (both: an AP pelvis)
    instance: int = 1
    view: str = "hip"  # hip | pelvis (an AP pelvis: both hips, no implants or blur)
    mirrored: bool = False  # a pelvis stored with its columns reversed (PatientOrientation R\\F)
    exclusion: str = "none"  # none | metal | blur
    implant: str | None = None
    rotation: float = 0.0
    annotated: bool = True
    malformed_xml: bool = False
    no_extension: bool = False


@dataclass
class Exam:
    """One DEXA row as it will be written. ``valid`` False = a malformed row."""

    patient_id: str
    date: dt.date | None
    bmd: str  # cell text
    t: str  # cell text
    side: str = ""
    z: str = ""
    valid: bool = True
    date_text: str | None = None  # overrides the formatted date (malformed dates)
    short_row: bool = False  # written with too few columns
    file_hint: int | None = None
    note: str = ""

    def t_value(self) -> float | None:
        if not self.valid:
            return None
        if self.t.strip():
            return float(self.t)
        return (float(self.bmd) - BMD_MEAN) / BMD_SD


@dataclass
class Plan:
    seed: int
    patients: list[Patient]
    images: list[Image]
    exams: list[Exam]
    studies: dict[int, list[int]] = field(default_factory=dict)  # study -> image idxs


def derived_t(bmd: float) -> float:
    return (bmd - BMD_MEAN) / BMD_SD


def draw_day(rng: np.random.Generator, start: dt.date, end: dt.date) -> dt.date:
    """A day from start to end, both included (one draw)."""
    return start + dt.timedelta(days=int(rng.integers(0, (end - start).days + 1)))
