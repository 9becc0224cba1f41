"""The cohort plan: patients, studies, images, DEXA exams, and the ground truth.

Everything here is metadata (no pixels); it is drawn from one numpy Generator in a
fixed order, so a seed fixes the whole cohort.  The truth applies exactly the
pipeline's rules (docs/design.md, "Rules of the data") to the DEXA rows *as written*.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from osteo.errors import UserError
from osteo.synth.people import make_chart_numbers, make_name
from osteo.synth.screening import choose_screening, follow_up_day, follow_up_truth

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


def derived_t(bmd: float) -> float:
    return (bmd - BMD_MEAN) / BMD_SD


def _fmt_bmd(b: float) -> str:
    return f"{b:.3f}"


def _exam_values(rng, p: Patient, day: dt.date, empty_t: bool, offset: float = 0.0) -> tuple[str, str, str]:
    b = round(p.bmd_at(day) + offset + float(rng.normal(0, 0.004)), 3)
    b = min(max(b, 0.300), 1.400)
    if empty_t:
        # keep the derived T clear of the -2.5 threshold (not within 0.01)
        while abs(derived_t(b) - OSTEO_T) < 0.0125:
            b = round(b + 0.002, 3)
        t = ""
    else:
        t = f"{round(derived_t(b), 1):.1f}"
        if t == "-0.0":
            t = "0.0"
    age = (day - p.birth).days / 365.25
    z = f"{round(derived_t(b) + 0.022 * (age - 30) + float(rng.normal(0, 0.2)), 1):.1f}"
    return _fmt_bmd(b), t, z


def _rand_day(rng, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=int(rng.integers(0, (end - start).days + 1)))


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


def make_plan(n_patients: int, seed: int, *, screening: bool = False) -> Plan:
    if n_patients < 6:
        raise UserError("too_few_patients", f"--patients {n_patients} is too few: the cohort needs at least 6 "
                        "patients for its edge cases")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20240601]))
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
    # ~8% have no DEXA at all (never the first 5: they carry the edge cases)
    for p in patients[5:]:
        p.has_dexa = bool(rng.random() >= 0.08)
    # a screening population when asked (off by default: docs/synthetic.md), from a stream of its own
    srng = np.random.default_rng(np.random.SeedSequence([seed, 20240602]))
    if screening:
        choose_screening(patients, srng)

    # ---- images and studies
    images: list[Image] = []
    studies: dict[int, list[int]] = {}
    n_study = 0
    for p in patients:
        k = 1 if p.idx < 5 else int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        dates: list[dt.date] = []
        j = 0
        while j < k:
            if dates and j < k and rng.random() < 0.4 and len(studies[n_study - 1]) == 1:
                # the other hip in the same study
                first = images[-1]
                images.append(Image(len(images), p.idx, first.study, first.date,
                                    "R" if first.laterality == "L" else "L", instance=2))
                studies[first.study].append(images[-1].idx)
                j += 1
                continue
            for _ in range(50):
                y = int(rng.choice(YEARS, p=YEAR_WEIGHTS))
                day = _rand_day(rng, dt.date(y, 1, 1), dt.date(y, 12, 31))
                if all(abs((day - d0).days) >= 60 for d0 in dates):
                    break
            dates.append(day)
            lat = "L" if rng.random() < 0.5 else "R"
            images.append(Image(len(images), p.idx, n_study, day, lat))
            studies[n_study] = [images[-1].idx]
            n_study += 1
            j += 1

    # edge case: patient 4's X-ray lies 30 days from patient 3's X-ray (patient 4 gets a DEXA
    # exam on patient 3's X-ray day, which must not pair with patient 3's image)
    d3 = next(im.date for im in images if im.patient == 3)
    im4 = next(im for im in images if im.patient == 4)
    im4.date = d3 + dt.timedelta(days=30) if d3 <= dt.date(2022, 11, 30) else d3 - dt.timedelta(days=30)

    # both lateralities in every year (flip a single-image study where one is missing)
    for y in YEARS:
        for lat in ("L", "R"):
            in_year = [im for im in images if im.date.year == y]
            if not any(im.laterality == lat for im in in_year):
                singles = [im for im in in_year if len(studies[im.study]) == 1 and im.patient >= 5]
                if not singles:
                    singles = [im for im in in_year if len(studies[im.study]) == 1]
                if singles:
                    singles[0].laterality = lat

    # ---- AP pelvis views (~15%): single-image studies, never patients 0..4, and never the last
    # hip view of a laterality in a year
    n = len(images)
    n_pelvis = int(round(0.15 * n))
    for i in rng.permutation(n):
        im = images[int(i)]
        if n_pelvis == 0:
            break
        if im.patient < 5 or len(studies[im.study]) != 1:
            continue
        if not any(o is not im and o.view == "hip" and o.laterality == im.laterality and o.date.year == im.date.year
                   for o in images):
            continue
        im.view, im.laterality, im.mirrored = "pelvis", "B", bool(rng.random() < 0.25)
        n_pelvis -= 1

    # ---- image conditions: metal, blur, bad rotation (disjoint; hip views only), annotation
    hips = [im.idx for im in images if im.view == "hip"]
    order = [hips[int(i)] for i in rng.permutation(len(hips))]
    n_metal = max(1, int(round(0.05 * n)))
    n_blur = max(1, int(round(0.05 * n)))
    n_rot = max(1, int(round(0.02 * n)))
    for i in order[:n_metal]:
        images[i].exclusion = "metal"
        images[i].implant = "screw" if rng.random() < 0.5 else "stem"
    for i in order[n_metal:n_metal + n_blur]:
        images[i].exclusion = "blur"
    for i in order[n_metal + n_blur:n_metal + n_blur + n_rot]:
        images[i].rotation = float(rng.uniform(20, 35) * (1 if rng.random() < 0.5 else -1))
    for im in images:
        if abs(im.rotation) < 1e-9:
            im.rotation = float(rng.uniform(-15, 15))
    n_unann = max(3, int(round(0.10 * n)))
    for i in rng.permutation(n)[:n_unann]:
        images[i].annotated = False
    unann = [im for im in images if not im.annotated]
    for im in unann[:2]:
        im.malformed_xml = True
    for i in rng.permutation(n)[: max(1, int(round(0.03 * n)))]:
        images[i].no_extension = True

    # ---- DEXA exams
    exams: list[Exam] = []
    taken: dict[int, set[dt.date]] = {p.idx: set() for p in patients}
    lo_day, hi_day = dt.date(2017, 7, 1), dt.date(2023, 6, 30)

    def add(p: Patient, day: dt.date, empty_t: bool | None = None, offset: float = 0.0, note: str = "",
            r: np.random.Generator = rng) -> Exam | None:
        if day in taken[p.idx]:
            return None
        if empty_t is None:
            empty_t = bool(r.random() < 0.10)
        b, t, z = _exam_values(r, p, day, empty_t, offset)
        e = Exam(p.patient_id, day, b, t, side="L" if r.random() < 0.7 else "R", z=z, note=note)
        exams.append(e)
        taken[p.idx].add(day)
        return e

    by_patient: dict[int, list[Image]] = {}
    for im in images:
        by_patient.setdefault(im.patient, []).append(im)

    # edge cases on patients 0..4 (one image each)
    d0 = by_patient[0][0].date
    add(patients[0], d0 + dt.timedelta(days=183), note="edge: 183 days, not paired")
    d1 = by_patient[1][0].date
    add(patients[1], d1 - dt.timedelta(days=182), note="edge: 182 days, paired")
    d2 = by_patient[2][0].date
    add(patients[2], d2 - dt.timedelta(days=45), empty_t=False, offset=+0.03, note="edge: tie, earlier wins")
    add(patients[2], d2 + dt.timedelta(days=45), empty_t=False, offset=-0.03, note="edge: tie, later loses")
    d3 = by_patient[3][0].date
    add(patients[3], d3 + dt.timedelta(days=100), note="edge: own exam 100 days")
    # patient 4 has an exam on patient 3's X-ray day; patient 4's own X-ray is 30 days away
    add(patients[4], d3, note="edge: other patient's exam on the same day")
    for p in patients[:5]:  # far-away exams that never pair
        if rng.random() < 0.5:
            add(p, by_patient[p.idx][0].date + dt.timedelta(days=int(rng.integers(400, 700))))

    for p in patients[5:]:
        if not p.has_dexa:
            continue
        for im in by_patient[p.idx]:
            r = rng.random()
            if r < 0.78:
                gap = int(rng.integers(-175, 176))
            elif r < 0.92:
                gap = int(rng.integers(190, 420)) * (1 if rng.random() < 0.5 else -1)
            else:
                continue
            day = im.date + dt.timedelta(days=gap)
            if lo_day <= day <= hi_day:
                add(p, day)
        if rng.random() < 0.3:
            add(p, _rand_day(rng, lo_day, hi_day))

    # ---- the screening population: its exams drawn above dropped (the others' draws stay), one after the last film
    chosen = {p.patient_id for p in patients if p.screening}
    exams[:] = [e for e in exams if e.patient_id not in chosen]
    for p in (p for p in patients if p.screening):
        taken[p.idx].clear()
        if (day := follow_up_day(p.screening, max(im.date for im in by_patient[p.idx]), srng)) is not None:
            add(p, day, note=f"screening: {p.screening}", r=srng)

    # ---- malformed rows (never count for pairing); placed next to real X-rays
    hosts = [im for im in images if im.patient >= 5]
    hi_idx = rng.permutation(len(hosts))
    def host(k: int) -> tuple[str, dt.date]:
        im = hosts[int(hi_idx[k % len(hosts)])]
        day = im.date + dt.timedelta(days=1)
        while day in taken[im.patient]:
            day += dt.timedelta(days=1)
        taken[im.patient].add(day)
        return patients[im.patient].patient_id, day

    pid, day = host(0)
    exams.append(Exam("", day, "0.512", "-2.9", valid=False, note="malformed: missing patient id"))
    pid, day = host(1)
    exams.append(Exam(pid, None, "0.610", "-2.0", valid=False, date_text="2021-13-45", file_hint=0,
                      note="malformed: unparseable date"))
    pid, day = host(2)
    exams.append(Exam(pid, day, "N/A", "", valid=False, note="malformed: BMD N/A and no T"))
    pid, day = host(3)
    exams.append(Exam(pid, day, "", "", valid=False, note="malformed: BMD and T empty"))
    pid, day = host(4)
    exams.append(Exam(pid, day, "", "-12.4", valid=False, note="malformed: T out of range"))
    pid, day = host(5)
    exams.append(Exam(pid, day, "0.590", "-2.2", valid=False, short_row=True, note="malformed: too few columns"))

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
