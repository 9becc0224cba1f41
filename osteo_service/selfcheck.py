"""Self-assessment beside the result: OSTA and the IOF one-minute risk test (no FRAX: its algorithm
is not public, so the page links to the official calculator instead).

OSTA (Osteoporosis Self-assessment Tool for Asians; Koh et al., Osteoporos Int 2001) was derived
and validated in postmenopausal Asian women (8 countries); index = 0.2 x (weight kg - age years),
shown truncated to an integer. Risk: low above -1, medium -1 to -4, high below -4.

The IOF One-Minute Osteoporosis Risk Test (International Osteoporosis Foundation) is a
questionnaire of known risk factors for adults, not a validated score: any "yes" means risk
factors are present and a talk with a doctor is worthwhile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

OSTA_LOW_ABOVE = -1.0
OSTA_HIGH_BELOW = -4.0

# (key, who it applies to); the wording in both languages is in osteo_service.i18n
IOF_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("parent_osteoporosis", "all"),
    ("parent_stooped", "all"),
    ("age_40_or_older", "all"),
    ("adult_fracture_minor_fall", "all"),
    ("falls_often", "all"),
    ("height_loss_3cm", "all"),
    ("underweight", "all"),
    ("steroids_3_months", "all"),
    ("rheumatoid_arthritis", "all"),
    ("overactive_thyroid_parathyroid", "all"),
    ("menopause_before_45", "women"),
    ("periods_stopped_12_months", "women"),
    ("ovaries_removed_before_50", "women"),
    ("low_testosterone", "men"),
    ("alcohol_over_limit", "all"),
    ("smoker", "all"),
    ("activity_under_30min", "all"),
    ("no_dairy_no_calcium", "all"),
    ("outdoors_under_10min_no_vitd", "all"),
)
IOF_KEYS = tuple(k for k, _ in IOF_QUESTIONS)


@dataclass(frozen=True)
class Osta:
    index: float
    shown: int  # truncated toward zero, as the tool is printed
    risk: str  # low | medium | high


def osta(weight_kg: float, age_years: float) -> Osta:
    """The OSTA index of one person. Raises ValueError for values no adult has."""
    if not (math.isfinite(weight_kg) and 20 <= weight_kg <= 300):
        raise ValueError("weight must be between 20 and 300 kg")
    if not (math.isfinite(age_years) and 18 <= age_years <= 120):
        raise ValueError("age must be between 18 and 120 years")
    index = 0.2 * (weight_kg - age_years)
    return Osta(index=index, shown=math.trunc(index), risk=osta_risk(index))


def osta_risk(index: float) -> str:
    """Low above -1, medium from -1 to -4 (both included), high below -4."""
    if index > OSTA_LOW_ABOVE:
        return "low"
    if index < OSTA_HIGH_BELOW:
        return "high"
    return "medium"


@dataclass(frozen=True)
class IofAnswers:
    yes: tuple[str, ...] = field(default_factory=tuple)  # the keys answered "yes"
    answered: int = 0

    @property
    def risk_factors(self) -> bool:
        return bool(self.yes)


def iof(answers: dict[str, str]) -> IofAnswers:
    """The IOF questions from a form: a key with value "yes" is a risk factor; unknown keys are ignored."""
    yes = tuple(k for k in IOF_KEYS if answers.get(f"iof_{k}") == "yes")
    answered = sum(1 for k in IOF_KEYS if answers.get(f"iof_{k}") in ("yes", "no"))
    return IofAnswers(yes=yes, answered=answered)


@dataclass(frozen=True)
class SelfCheck:
    osta: Osta | None
    osta_error: str  # a plain reason when age/weight were given but not usable
    iof: IofAnswers
    age: str = ""
    weight: str = ""
    sex: str = ""


def self_check(form: dict[str, str]) -> SelfCheck:
    """The questionnaire part of a submitted form (all optional)."""
    age, weight = form.get("age", "").strip(), form.get("weight", "").strip()
    result, error = None, ""
    if age or weight:
        try:
            result = osta(float(weight), float(age))
        except ValueError as exc:
            error = str(exc) if "between" in str(exc) else "age and weight must be numbers"
    return SelfCheck(osta=result, osta_error=error, iof=iof(form), age=age, weight=weight,
                     sex=form.get("sex", "") if form.get("sex") in ("female", "male") else "")
