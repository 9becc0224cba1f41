"""The synthetic cohort's BMD depends on age and sex as in real populations (osteo/synth/plan.py)."""

from __future__ import annotations

import numpy as np
import pytest

from osteo.synth.plan import BMD_MEAN, BMD_SD, FIRST_DAY, make_plan, t_mean


@pytest.fixture(scope="module")
def baseline():
    plan = make_plan(1500, seed=11)
    t0 = np.array([(p.bmd0 - BMD_MEAN) / BMD_SD for p in plan.patients])
    age = np.array([(FIRST_DAY - p.birth).days / 365.25 for p in plan.patients])
    men = np.array([p.sex == "M" for p in plan.patients])
    return t0, age, men


def test_t_score_falls_with_age_in_both_sexes(baseline):
    t0, age, men = baseline
    for group in (men, ~men):
        slope = np.polyfit(age[group], t0[group], 1)[0]
        assert slope < -0.02, f"T-score should fall by >0.02 a year of age, got {slope:.3f}"
    old, young = age >= 75, age < 65
    assert t0[~men & old].mean() < t0[~men & young].mean() - 0.4


def test_men_sit_above_women_of_the_same_age(baseline):
    t0, age, men = baseline
    x = np.column_stack([np.ones_like(age), age, men.astype(float)])
    coef = np.linalg.lstsq(x, t0, rcond=None)[0]
    assert 0.4 < coef[2] < 1.2, f"men - women at the same age: {coef[2]:.2f}"


def test_overall_level_and_prevalence_stay_as_before(baseline):
    t0, _age, _men = baseline
    assert -2.15 < t0.mean() < -1.75
    assert 0.22 < np.mean(t0 <= -2.5) < 0.36


def test_t_mean_is_the_population_curve():
    assert t_mean("F", 40) == t_mean("F", 50)  # no decline modelled before 50
    assert t_mean("F", 80) < t_mean("F", 60) < t_mean("F", 50)
    assert t_mean("M", 70) > t_mean("F", 70) + 0.5
