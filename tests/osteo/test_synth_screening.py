"""The synthetic hospital's screening population (osteo/synth/screening.py): films of patients with no DEXA before
them, a DEXA after within the pairing window, after it, or never; and every film's follow-up truth, checked
against the DEXA exports as written (read back by the synth tests' own reader, never the pipeline's). Plans and
DEXA files only: no film is rendered."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pytest

from osteo.synth.plan import make_plan, truth_rows
from osteo.synth.screening import AFTER_WINDOW_DAYS, IN_WINDOW_DAYS
from osteo.synth.tables import write_dexa
from tests.osteo.test_synth import read_dexa

WINDOW = 183


def _plan_and_exams(tmp_path, patients: int, seed: int):
    plan = make_plan(patients, seed, screening=True)
    write_dexa(plan, tmp_path / "dexa", np.random.default_rng(np.random.SeedSequence([seed, 11])))
    exams, *_ = read_dexa(tmp_path / "dexa")
    by_pid: dict[str, set] = {}
    for pid, day, tv, _t in exams:
        by_pid.setdefault(pid, set()).add((day, tv))
    return plan, truth_rows(plan, WINDOW), by_pid


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    return _plan_and_exams(tmp_path_factory.mktemp("screening-plan"), 120, 4)


def test_the_screening_population_has_no_dexa_before_its_films(hospital):
    plan, _, by_pid = hospital
    chosen = [p for p in plan.patients if p.screening]
    groups = Counter(p.screening for p in chosen)
    assert set(groups) == {"dexa_in_window", "dexa_after_window", "no_dexa"}
    assert 0.15 * len(plan.patients) <= len(chosen) <= 0.25 * len(plan.patients)
    assert all(p.idx >= 5 for p in chosen)  # the pairing's edge cases stay as they are
    for p in chosen:
        films = [im.date for im in plan.images if im.patient == p.idx]
        exams = sorted(by_pid.get(p.patient_id, ()))
        assert all(day > max(films) for day, _ in exams)  # never on or before a film
        gaps = [(day - max(films)).days for day, _ in exams]
        if p.screening == "no_dexa":
            assert gaps == []
        elif p.screening == "dexa_in_window":
            assert len(gaps) == 1 and IN_WINDOW_DAYS[0] <= gaps[0] <= IN_WINDOW_DAYS[1]
        else:
            assert len(gaps) == 1 and AFTER_WINDOW_DAYS[0] <= gaps[0] <= AFTER_WINDOW_DAYS[1]


def test_every_film_says_which_dexa_follows_it_and_whether_it_confirms(hospital):
    plan, rows, by_pid = hospital
    groups: Counter = Counter()
    for row in rows:
        day = dt.date.fromisoformat(row["study_date"])
        after = sorted((d, tv) for d, tv in by_pid.get(row["patient_id"], ()) if 0 <= (d - day).days < WINDOW)
        if not after:
            assert (row["followup_days"], row["followup_t_score"], row["followup_confirmed"]) == ("", "", "")
        else:
            first, tv = after[0]  # the first exam on or after the film, within the window
            assert row["followup_days"] == (first - day).days and abs(float(row["followup_t_score"]) - tv) < 1e-3
            assert row["followup_confirmed"] == int(tv <= -2.5)
        groups[(row["screening"], row["followup_confirmed"])] += 1
    # outcomes have truth both ways among the screening population; the others' films follow-up too
    assert groups[("dexa_in_window", 1)] and groups[("dexa_in_window", 0)]
    assert groups[("dexa_after_window", "")] and groups[("no_dexa", "")]
    assert not groups[("dexa_after_window", 1)] + groups[("dexa_after_window", 0)] + groups[("no_dexa", 0)]
    assert sum(n for (g, c), n in groups.items() if g == "" and c != "")


def test_a_small_hospital_has_every_group(tmp_path):
    plan, rows, _ = _plan_and_exams(tmp_path, 8, 3)
    assert sorted(p.screening for p in plan.patients if p.screening) == ["dexa_after_window", "dexa_in_window",
                                                                          "no_dexa"]
    assert {r["screening"] for r in rows} == {"", "dexa_in_window", "dexa_after_window", "no_dexa"}


def test_without_the_flag_the_cohort_has_no_screening_population():
    """Off by default (the demo's training set and its measured figures stay as they were): no patient is in it,
    and every DEXA exam the flag takes away is there."""
    plain, screened = make_plan(40, 4), make_plan(40, 4, screening=True)
    assert not any(p.screening for p in plain.patients)
    chosen = {p.patient_id for p in screened.patients if p.screening}
    assert chosen and [im.date for im in plain.images] == [im.date for im in screened.images]
    kept = [(e.patient_id, e.date) for e in plain.exams if e.patient_id not in chosen]
    assert kept == [(e.patient_id, e.date) for e in screened.exams if e.patient_id not in chosen]
    assert any(e.patient_id in chosen for e in plain.exams)
