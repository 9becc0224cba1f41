"""Outcomes (osteo/screening/outcomes.py): a screened film is linked only to a DEXA exam of its patient on or after
the film and strictly within the pairing window; PPV with its Wilson interval, sensitivity and specificity among
those with a DEXA; the weekly PSI warns above 0.25. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from db import make_session_factory
from db.models import DexaExam, DicomImage, Patient, SourceFile
from db.screening import ScreeningResult
from osteo.screening.outcomes import psi, screening_outcomes, wilson

FILM = dt.date(2023, 3, 1)
WINDOW = 183


def add_patient(session, n: int, exams: list[tuple[int, float]], probability: float, *, status="screened",
                version="3", film: dt.date = FILM) -> None:
    """A patient with one film (screened by `version`, flagged at 0.5) and DEXA exams (days after the film, T)."""
    sf = SourceFile(kind="dicom", path=f"/films/{n}.dcm", sha256=f"{n:064d}", size_bytes=1)
    patient = Patient(patient_key=f"P{n:031d}")
    session.add_all([sf, patient])
    session.flush()
    image = DicomImage(sop_instance_uid=f"1.2.3.{n}", study_instance_uid=f"1.2.4.{n}", series_instance_uid=f"1.2.5.{n}",
                       source_file_id=sf.id, patient_id=patient.id, study_date=film, modality="DX", laterality="L",
                       n_rows=10, n_columns=10, bits_stored=12, photometric="MONOCHROME2", transfer_syntax="1.2")
    session.add(image)
    session.flush()
    for i, (days, t) in enumerate(exams):
        session.add(DexaExam(patient_id=patient.id, exam_date=film + dt.timedelta(days=days), side="L" if i else "-",
                             t_score=t, source_file_id=sf.id, source_row=i + 1))
    screened = status == "screened"
    session.add(ScreeningResult(image_id=image.id, model_name="osteo-classifier", model_version=version,
                                status=status, threshold=0.5, probability=probability if screened else None,
                                label=int(probability >= 0.5) if screened else None, side="L" if screened else None))


def outcomes(engine, **kw):
    return screening_outcomes(make_session_factory(engine), "osteo-classifier", "3", window_days=WINDOW,
                              osteoporosis_t=-2.5, **kw)


def test_only_a_dexa_after_the_film_and_within_the_window_counts(engine):
    factory = make_session_factory(engine)
    with factory() as session, session.begin():
        add_patient(session, 1, [(30, -3.0)], 0.9)  # flagged, confirmed
        add_patient(session, 2, [(-10, -3.0), (40, -1.0)], 0.8)  # flagged; the exam before the film is not it
        add_patient(session, 3, [(0, -2.6)], 0.2)  # missed: a same-day exam is not before the film
        add_patient(session, 4, [(WINDOW, -3.0)], 0.7)  # flagged; the exam is just outside the window
        add_patient(session, 5, [(WINDOW - 1, -0.5)], 0.1)  # true negative, on the window's last day
        add_patient(session, 6, [], 0.95)  # flagged, no DEXA yet
        add_patient(session, 7, [(-30, -3.5)], 0.9)  # flagged; its only exam is before the film: no outcome
        add_patient(session, 8, [(20, -3.0)], 0.9, status="not_located")  # not screened: not counted
        add_patient(session, 9, [(20, -3.0)], 0.9, version="4")  # another version's result
    o = outcomes(engine)
    assert (o.screened, o.flagged, o.with_dexa) == (7, 5, 4)
    assert (o.confirmed, o.false_positive, o.missed, o.true_negative) == (1, 1, 1, 1)
    assert o.ppv == pytest.approx(0.5) and o.ppv_ci == pytest.approx(wilson(1, 2))
    assert o.sensitivity == pytest.approx(0.5) and o.specificity == pytest.approx(0.5)
    assert o.drift == () and o.reference is None  # no reference distribution: no drift reported


def test_the_wilson_interval_and_the_psi():
    lo, hi = wilson(74, 100)  # by hand: centre 0.7311, half-width 0.0848
    assert (round(lo, 4), round(hi, 4)) == (0.6463, 0.8160)
    assert wilson(0, 0) == (None, None) and wilson(0, 10)[0] == 0.0
    rng = np.random.default_rng(0)
    reference = rng.beta(2, 5, 5000)
    assert psi(reference, rng.beta(2, 5, 2000)) < 0.05  # the same population
    assert psi(reference, rng.beta(5, 2, 2000)) > 0.25  # a moved one


def test_a_week_that_drifted_is_warned_about(engine):
    factory = make_session_factory(engine)
    with factory() as session, session.begin():
        for i in range(25):  # one week of films scored far above what the model was validated on
            add_patient(session, 100 + i, [], 0.9 + i / 1000, film=FILM)
        for i in range(5):  # a small later week: reported, never warned about
            add_patient(session, 200 + i, [], 0.95, film=FILM + dt.timedelta(days=14))
    reference = np.random.default_rng(1).beta(2, 5, 1000)
    o = outcomes(engine, reference=reference, reference_source="validation")
    assert [(w.week, w.images, w.warning) for w in o.drift] == [("2023-W09", 25, True), ("2023-W11", 5, False)]
    assert o.reference == "validation" and len(o.warnings) == 1 and "2023-W09" in o.warnings[0]


def test_the_code_writes_the_closed_values_and_the_database_refuses_others(engine):
    from sqlalchemy.exc import IntegrityError

    from db.values import SCREENING_STATUSES
    from osteo.screening.score import NOT_LOCATED, SCREENED, excluded

    assert {SCREENED, NOT_LOCATED, *(excluded(r) for r in ("metal", "blur", "unreadable"))} == set(SCREENING_STATUSES)
    factory = make_session_factory(engine)
    with factory() as session, session.begin():
        add_patient(session, 1, [], 0.9)
    with pytest.raises(IntegrityError, match="ck_screening_result_status|CHECK constraint failed"):
        with factory() as session, session.begin():
            add_patient(session, 2, [], 0.9, status="maybe")
