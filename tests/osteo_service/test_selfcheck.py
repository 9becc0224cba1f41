"""OSTA's formula and its boundaries (exactly), the IOF answers, the form's parsing."""

import pytest

from osteo_service.i18n import TEXT
from osteo_service.selfcheck import IOF_KEYS, iof, osta, osta_risk, self_check


def test_osta_index_is_a_fifth_of_weight_minus_age_truncated_for_display():
    r = osta(weight_kg=52, age_years=70)
    assert r.index == pytest.approx(-3.6) and r.shown == -3 and r.risk == "medium"
    assert osta(60, 50).shown == 2 and osta(60, 50).risk == "low"
    assert osta(40, 75).shown == -7 and osta(40, 75).risk == "high"


@pytest.mark.parametrize(("index", "risk"), [(-0.999, "low"), (-1.0, "medium"), (-4.0, "medium"), (-4.001, "high"),
                                             (0.0, "low"), (-2.5, "medium")])
def test_osta_boundaries_are_exact(index, risk):
    assert osta_risk(index) == risk


def test_osta_boundaries_reached_from_weight_and_age():
    assert osta(55, 60).index == pytest.approx(-1.0) and osta(55, 60).risk == "medium"  # -1 is medium
    assert osta(50, 70).index == pytest.approx(-4.0) and osta(50, 70).risk == "medium"  # -4 is medium


@pytest.mark.parametrize(("w", "a"), [(10, 60), (60, 10), (float("nan"), 60), (60, 200)])
def test_osta_refuses_impossible_people(w, a):
    with pytest.raises(ValueError):
        osta(w, a)


def test_iof_any_yes_means_risk_factors():
    assert not iof({}).risk_factors and iof({}).answered == 0
    none = iof({f"iof_{k}": "no" for k in IOF_KEYS})
    assert not none.risk_factors and none.answered == len(IOF_KEYS)
    one = iof({"iof_smoker": "yes", "iof_underweight": "no", "iof_unknown": "yes"})
    assert one.risk_factors and one.yes == ("smoker",) and one.answered == 2


def test_self_check_from_a_form():
    c = self_check({"age": "70", "weight": "52", "sex": "female", "iof_smoker": "yes"})
    assert c.osta.risk == "medium" and c.iof.yes == ("smoker",) and c.sex == "female"
    assert self_check({"age": "x", "weight": "52"}).osta is None and self_check({"age": "x", "weight": "5"}).osta_error
    assert self_check({}).osta is None and not self_check({}).osta_error


def test_every_question_has_words_in_both_languages():
    for key in IOF_KEYS:
        assert TEXT[f"iof_{key}"]["zh-TW"] and TEXT[f"iof_{key}"]["en"]
    assert all(set(v) == {"zh-TW", "en"} and all(v.values()) for v in TEXT.values())
