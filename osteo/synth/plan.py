"""The cohort plan: patients, studies, images, DEXA exams, and the ground truth.

Everything here is metadata (no pixels); it is drawn from one numpy Generator in a
fixed order, so a seed fixes the whole cohort.  The truth applies exactly the
pipeline's rules (docs/design.md, "Rules of the data") to the DEXA rows *as written*.
The records live in records.py, the images' draws in plan_images.py, the exams' in plan_exams.py.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from osteo.errors import UserError
from osteo.synth.people import make_chart_numbers, make_name
from osteo.synth.plan_exams import draw_exams
from osteo.synth.plan_images import (
    balance_lateralities,
    choose_pelvis_views,
    draw_conditions,
    draw_studies,
    move_patient_4_film,
)
from osteo.synth.records import (
    BMD_MEAN,
    BMD_SD,
    FIRST_DAY,
    OSTEO_T,
    PAIR_WINDOW_DAYS,
    Exam,
    Patient,
    Plan,
)
from osteo.synth.screening import choose_screening, follow_up_truth

# T-score on 2018-01-01 by age and sex. The femoral-neck pattern of NHANES III (Looker et al. 1998), in
# words: after about 50 a woman's femoral-neck BMD falls by roughly half a T unit per decade (faster in the
# years after menopause), a man's a little more slowly, and a man sits well above a woman of the same age
# against the one (young-women) reference, by roughly 0.6 T at 50 widening towards 0.9 T at 80. This cohort
# is a hospital referral cohort (DEXA was ordered), so the level is lower than the general population's;
# the intercept keeps the overall mean T and the osteoporosis share of the earlier, age-blind plan
# (mean -1.95, SD 1.0), and the residual SD leaves room for the variance that age and sex now explain.
T_AT_50_F = -1.12
T_PER_YEAR_F = -0.045  # per year of age past 50, women
T_PER_YEAR_M = -0.035  # men
T_MEN_AT_50 = 0.60  # men above women of the same age, at 50
T_RESIDUAL_SD = 0.85


def t_mean(sex: str, age: float) -> float:
    """Expected femoral-neck T-score (female young-adult reference) for a patient of this sex and age."""
    past = max(0.0, age - 50.0)
    if sex == "M":
        return T_AT_50_F + T_MEN_AT_50 + T_PER_YEAR_M * past
    return T_AT_50_F + T_PER_YEAR_F * past


def _age(birth: dt.date, day: dt.date) -> float:
    return (day - birth).days / 365.25


def pair_image(date: dt.date, exams: list[Exam], window: int = PAIR_WINDOW_DAYS) -> Exam | None:
    """The pipeline's rule: nearest valid exam, |gap| < window, ties -> earlier exam."""
    best = None
    best_key = None
    for e in exams:
        if not e.valid or e.date is None:
            continue
        gap = abs((e.date - date).days)
        if gap >= window:
            continue
        key = (gap, e.date)
        if best_key is None or key < best_key:
            best, best_key = e, key
    return best


def draw_patients(n_patients: int, rng: np.random.Generator) -> list[Patient]:
    """Chart numbers, then each patient's sex, name, birth day and BMD course; then who has no DEXA at all
    (~8%, never the first 5: they carry the edge cases)."""
    ids = make_chart_numbers(rng, n_patients)
    patients: list[Patient] = []
    for i in range(n_patients):
        sex = "F" if rng.random() < 0.8 else "M"
        name, name_zh = make_name(rng, sex)
        birth = dt.date(int(rng.integers(1928, 1966)), int(rng.integers(1, 13)), int(rng.integers(1, 29)))
        t0 = float(np.clip(rng.normal(t_mean(sex, _age(birth, FIRST_DAY)), T_RESIDUAL_SD), -4.6, 1.8))
        bmd0 = BMD_MEAN + BMD_SD * t0
        decline = float(rng.uniform(0.003, 0.012))
        patients.append(Patient(i, ids[i], name, name_zh, sex, birth, bmd0, decline))
    for p in patients[5:]:
        p.has_dexa = bool(rng.random() >= 0.08)
    return patients


def make_plan(n_patients: int, seed: int, *, screening: bool = False) -> Plan:
    """The whole plan from one generator, drawn in a fixed order (the order of the calls below is the cohort)."""
    if n_patients < 6:
        raise UserError("too_few_patients", f"--patients {n_patients} is too few: the cohort needs at least 6 "
                        "patients for its edge cases")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20240601]))
    patients = draw_patients(n_patients, rng)
    # a screening population when asked (off by default: docs/synthetic.md), from a stream of its own
    srng = np.random.default_rng(np.random.SeedSequence([seed, 20240602]))
    if screening:
        choose_screening(patients, srng)
    images, studies = draw_studies(patients, rng)
    move_patient_4_film(images)
    balance_lateralities(images, studies)
    choose_pelvis_views(images, studies, rng)
    draw_conditions(images, rng)
    exams = draw_exams(patients, images, rng, srng)
    return Plan(seed, patients, images, exams, studies)


def truth_rows(plan: Plan, window: int = PAIR_WINDOW_DAYS) -> list[dict]:
    """Per image: the pairing's truth and the follow-up's (osteo/synth/screening.py)."""
    by_pid: dict[str, list[Exam]] = {}
    for e in plan.exams:
        by_pid.setdefault(e.patient_id, []).append(e)
    rows = []
    for im in plan.images:
        p = plan.patients[im.patient]
        e = pair_image(im.date, by_pid.get(p.patient_id, []), window)
        t = e.t_value() if e is not None else None
        pair = e is not None
        export = pair and im.annotated and im.exclusion == "none"
        crops = 0 if not export else (2 if im.view == "pelvis" else 1)
        rows.append({
            "idx": im.idx,
            "patient_id": p.patient_id,
            "laterality": im.laterality,
            "study_date": im.date.isoformat(),
            "bmd": f"{p.bmd_at(im.date):.4f}",
            "t_score": "" if t is None or e is None else (e.t if e.t.strip() else f"{t:.4f}"),
            "expected_pair": int(pair),
            "expected_label": "" if t is None else int(t <= OSTEO_T),
            "expected_exclusion": im.exclusion,
            "annotated": int(im.annotated),
            "expected_export": int(export),
            "view": im.view,
            "crops": crops,
            "screening": p.screening,
            **follow_up_truth(im.date, by_pid.get(p.patient_id, []), window, OSTEO_T),
        })
    return rows
