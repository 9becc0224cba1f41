"""The cohort plan's DEXA exams: the edge cases of patients 0..4, the exams around everyone else's films, the
screening population's one follow-up exam, and the malformed rows.

Each function draws from the generator it is given, in the order make_plan (plan.py) calls them, so a seed
fixes every exam.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from osteo.synth.records import OSTEO_T, Exam, Image, Patient, derived_t, draw_day
from osteo.synth.screening import follow_up_day

FIRST_EXAM_DAY, LAST_EXAM_DAY = dt.date(2017, 7, 1), dt.date(2023, 6, 30)


@dataclass
class ExamBook:
    """The exams written so far and each patient's days taken (one exam a patient a day)."""

    exams: list[Exam]
    taken: dict[int, set[dt.date]]


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


def add_exam(book: ExamBook, p: Patient, day: dt.date, rng: np.random.Generator, *, empty_t: bool | None = None,
             offset: float = 0.0, note: str = "") -> None:
    """One exam of `p` on `day` (none when the patient has one that day); ~10% leave T empty unless told."""
    if day in book.taken[p.idx]:
        return
    if empty_t is None:
        empty_t = bool(rng.random() < 0.10)
    b, t, z = _exam_values(rng, p, day, empty_t, offset)
    book.exams.append(Exam(p.patient_id, day, b, t, side="L" if rng.random() < 0.7 else "R", z=z, note=note))
    book.taken[p.idx].add(day)


def add_edge_exams(book: ExamBook, patients: list[Patient], by_patient: dict[int, list[Image]],
                   rng: np.random.Generator) -> None:
    """The pairing's edge cases on patients 0..4 (one image each), then far-away exams that never pair."""
    d0 = by_patient[0][0].date
    add_exam(book, patients[0], d0 + dt.timedelta(days=183), rng, note="edge: 183 days, not paired")
    d1 = by_patient[1][0].date
    add_exam(book, patients[1], d1 - dt.timedelta(days=182), rng, note="edge: 182 days, paired")
    d2 = by_patient[2][0].date
    add_exam(book, patients[2], d2 - dt.timedelta(days=45), rng, empty_t=False, offset=+0.03,
             note="edge: tie, earlier wins")
    add_exam(book, patients[2], d2 + dt.timedelta(days=45), rng, empty_t=False, offset=-0.03,
             note="edge: tie, later loses")
    d3 = by_patient[3][0].date
    add_exam(book, patients[3], d3 + dt.timedelta(days=100), rng, note="edge: own exam 100 days")
    # patient 4 has an exam on patient 3's X-ray day; patient 4's own X-ray is 30 days away
    add_exam(book, patients[4], d3, rng, note="edge: other patient's exam on the same day")
    for p in patients[:5]:
        if rng.random() < 0.5:
            add_exam(book, p, by_patient[p.idx][0].date + dt.timedelta(days=int(rng.integers(400, 700))), rng)


def add_film_exams(book: ExamBook, patients: list[Patient], by_patient: dict[int, list[Image]],
                   rng: np.random.Generator) -> None:
    """Patients past the first five with a DEXA: per film an exam inside the window (78%), outside it (14%) or
    none; and 30% one more exam on any day."""
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
            if FIRST_EXAM_DAY <= day <= LAST_EXAM_DAY:
                add_exam(book, p, day, rng)
        if rng.random() < 0.3:
            add_exam(book, p, draw_day(rng, FIRST_EXAM_DAY, LAST_EXAM_DAY), rng)


def replace_screening_exams(book: ExamBook, patients: list[Patient], by_patient: dict[int, list[Image]],
                            srng: np.random.Generator) -> None:
    """The screening population: its exams drawn above dropped (the others' draws stay), one after the last
    film, from the screening's own generator."""
    chosen = {p.patient_id for p in patients if p.screening}
    book.exams[:] = [e for e in book.exams if e.patient_id not in chosen]
    for p in (p for p in patients if p.screening):
        book.taken[p.idx].clear()
        if (day := follow_up_day(p.screening, max(im.date for im in by_patient[p.idx]), srng)) is not None:
            add_exam(book, p, day, srng, note=f"screening: {p.screening}")


def add_malformed_rows(book: ExamBook, patients: list[Patient], images: list[Image],
                       rng: np.random.Generator) -> None:
    """Malformed rows (never count for pairing), each placed the day after a real X-ray of patients past 5."""
    hosts = [im for im in images if im.patient >= 5]
    order = rng.permutation(len(hosts))

    def host(k: int) -> tuple[str, dt.date]:
        im = hosts[int(order[k % len(hosts)])]
        day = im.date + dt.timedelta(days=1)
        while day in book.taken[im.patient]:
            day += dt.timedelta(days=1)
        book.taken[im.patient].add(day)
        return patients[im.patient].patient_id, day

    exams = book.exams
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


def draw_exams(patients: list[Patient], images: list[Image], rng: np.random.Generator,
               srng: np.random.Generator) -> list[Exam]:
    """Every DEXA row of the plan, valid and malformed, in the order they are drawn."""
    book = ExamBook([], {p.idx: set() for p in patients})
    by_patient: dict[int, list[Image]] = {}
    for im in images:
        by_patient.setdefault(im.patient, []).append(im)
    add_edge_exams(book, patients, by_patient, rng)
    add_film_exams(book, patients, by_patient, rng)
    replace_screening_exams(book, patients, by_patient, srng)
    add_malformed_rows(book, patients, images, rng)
    return book.exams
