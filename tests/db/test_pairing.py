"""The pairing rule (docs/design.md) on SQLite and PostgreSQL, and the Oracle variant compiled."""

from __future__ import annotations

import datetime as dt
import itertools

from sqlalchemy.orm import Session

from db.models import DexaExam, DicomImage, Patient, SourceFile
from db.pairing import query_pairs, sync_pairs

_uid = itertools.count(1)
D = dt.date.fromisoformat


def _source(s: Session) -> SourceFile:
    n = next(_uid)
    sf = SourceFile(kind="dicom", path=f"/in/{n}.dcm", sha256=f"{n:064x}", size_bytes=1)
    s.add(sf)
    s.flush()
    return sf


def add_patient(s: Session, key: str) -> Patient:
    p = Patient(patient_key=key)
    s.add(p)
    s.flush()
    return p


def add_image(s: Session, p: Patient, date: str, side: str = "L") -> DicomImage:
    img = DicomImage(
        sop_instance_uid=f"1.2.{next(_uid)}", study_instance_uid="1.2", series_instance_uid="1.3",
        source_file_id=_source(s).id, patient_id=p.id, study_date=D(date), modality="DX", laterality=side,
        n_rows=10, n_columns=10, bits_stored=12, photometric="MONOCHROME2", transfer_syntax="1.2.840.10008.1.2.1",
    )
    s.add(img)
    s.flush()
    return img


def add_exam(s: Session, p: Patient, date: str, t: float, side: str = "-") -> DexaExam:
    e = DexaExam(patient_id=p.id, exam_date=D(date), side=side, t_score=t, source_file_id=_source(s).id,
                 source_row=next(_uid))
    s.add(e)
    s.flush()
    return e


def pairs(s: Session, window: int = 183) -> dict[int, dict]:
    return {r["image_id"]: r for r in query_pairs(s, window_days=window, osteoporosis_t=-2.5, normal_t=-1.0)}


def test_nearest_exam_wins_and_window_is_strict(engine):
    with Session(engine, expire_on_commit=False) as s:
        p = add_patient(s, "A")
        img = add_image(s, p, "2021-06-01")
        add_exam(s, p, "2021-01-01", -3.0)  # 151 days before
        near = add_exam(s, p, "2021-06-20", -1.5)  # 19 days after
        at_window = add_image(s, p, "2019-01-01")
        add_exam(s, p, "2019-07-03", -2.0)  # exactly 183 days later: not under the window
        inside = add_image(s, p, "2018-01-01")
        e182 = add_exam(s, p, "2018-07-02", -2.7)  # 182 days: paired
        got = pairs(s)
    assert got[img.id]["dexa_exam_id"] == near.id and got[img.id]["gap_days"] == 19
    assert got[img.id]["label"] == 0 and got[img.id]["label3"] == "osteopenia"
    assert at_window.id not in got
    assert got[inside.id]["dexa_exam_id"] == e182.id and got[inside.id]["gap_days"] == 182
    assert got[inside.id]["label"] == 1 and got[inside.id]["label3"] == "osteoporosis"


def test_tie_goes_to_earlier_exam_then_same_side(engine):
    with Session(engine, expire_on_commit=False) as s:
        p = add_patient(s, "B")
        img = add_image(s, p, "2020-03-10", side="R")
        earlier = add_exam(s, p, "2020-03-01", -2.6)
        add_exam(s, p, "2020-03-19", -0.5)
        img2 = add_image(s, p, "2022-05-05", side="R")
        add_exam(s, p, "2022-05-01", -1.2, side="L")
        same_side = add_exam(s, p, "2022-05-01", -2.9, side="R")
        got = pairs(s)
    assert got[img.id]["dexa_exam_id"] == earlier.id and got[img.id]["label"] == 1
    assert got[img2.id]["dexa_exam_id"] == same_side.id


def test_no_exam_other_patient_same_day_and_normal_label(engine):
    with Session(engine, expire_on_commit=False) as s:
        a, b = add_patient(s, "C"), add_patient(s, "D")
        lonely = add_image(s, a, "2022-02-02")
        add_exam(s, b, "2022-02-02", -3.5)  # another patient's exam on the same day never pairs
        img_b = add_image(s, b, "2021-12-01")
        add_exam(s, b, "2021-12-01", -1.0)  # T = -1.0 exactly is normal; the later -3.5 is 63 days away
        got = pairs(s)
    assert lonely.id not in got
    assert got[img_b.id]["gap_days"] == 0 and got[img_b.id]["label"] == 0 and got[img_b.id]["label3"] == "normal"


def test_threshold_is_inclusive_and_window_configurable(engine):
    with Session(engine, expire_on_commit=False) as s:
        p = add_patient(s, "E")
        img = add_image(s, p, "2020-01-01")
        add_exam(s, p, "2020-03-01", -2.5)  # 60 days, T exactly -2.5 is osteoporosis
        got = pairs(s)
        narrow = pairs(s, window=60)
    assert got[img.id]["label"] == 1
    assert img.id not in narrow


def test_sync_pairs_is_idempotent_and_follows_new_exams(engine):
    with Session(engine, expire_on_commit=False) as s:
        p = add_patient(s, "F")
        img = add_image(s, p, "2021-05-01")
        add_exam(s, p, "2021-01-01", -1.0)
        first = sync_pairs(s, window_days=183, osteoporosis_t=-2.5, normal_t=-1.0)
        again = sync_pairs(s, window_days=183, osteoporosis_t=-2.5, normal_t=-1.0)
        closer = add_exam(s, p, "2021-05-03", -2.8)
        moved = sync_pairs(s, window_days=183, osteoporosis_t=-2.5, normal_t=-1.0)
        s.commit()
        from db.models import Pair

        rows = s.query(Pair).all()
    assert first["new"] == 1 and again["new"] == 0 and again["changed"] == 0
    assert moved["changed"] == 1 and moved["positives"] == 1
    assert len(rows) == 1 and rows[0].dexa_exam_id == closer.id and rows[0].image_id == img.id


def test_sqlite_date_subtraction_would_be_wrong(tmp_path):
    """Why the SQLite override exists: text dates subtract as numbers there."""
    from sqlalchemy import text

    from db import make_engine

    with make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}").connect() as conn:
        naive = conn.execute(text("SELECT '2022-03-01' - '2021-12-31'")).scalar()
        right = conn.execute(text("SELECT julianday('2022-03-01') - julianday('2021-12-31')")).scalar()
    assert naive == 1 and right == 60
