"""The pairing rule (docs/design.md) on SQLite and PostgreSQL, and the Oracle variant compiled."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.models import DexaExam, DicomImage, Patient, SourceFile
from db.pairing import PAIR_COLUMNS, query_pairs, sync_pairs

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
    rows = query_pairs(s, window_days=window, osteoporosis_t=-2.5, normal_t=-1.0)
    return {r[0]: dict(zip(PAIR_COLUMNS, r)) for r in rows}


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


def test_day_numbers_follow_the_dates_on_orm_inserts(engine):
    from sqlalchemy import select

    from db.models import day_number

    with Session(engine, expire_on_commit=False) as s:
        p = add_patient(s, "G")
        for d in ("1969-12-31", "1970-01-01", "2000-02-29", "2022-12-31"):
            add_image(s, p, d)
            add_exam(s, p, d, -1.0)
        s.commit()
        images = s.execute(select(DicomImage.study_date, DicomImage.study_day)).all()
        exams = s.execute(select(DexaExam.exam_date, DexaExam.exam_day)).all()
    assert sorted(day for _, day in images) == [-1, 0, 11016, 19357]
    assert all(day == day_number(date) for date, day in images + exams) and len(exams) == 4


# ---------------------------------------------------------------- randomized cross-check
def reference_pairs(images: list[tuple], exams: list[tuple], window: int) -> dict[int, tuple[int, int]]:
    """The rule in plain Python: image (id, patient, date, side) -> (exam id, gap) of the exam
    (id, patient, date, side) nearest in days, gap < window; ties: earlier, same side, lower id."""
    out = {}
    for image_id, patient, day, side in images:
        ranked = sorted(
            (abs((e_day - day).days), e_day, 0 if e_side == side else 1, e_id)
            for e_id, e_patient, e_day, e_side in exams
            if e_patient == patient and abs((e_day - day).days) < window)
        if ranked:
            out[image_id] = (ranked[0][3], ranked[0][0])
    return out


OTHER = {"L": "R", "R": "L", "B": "L"}


def _random_cohort(s: Session, rng, window: int, tag: str) -> None:
    """Images whose exams sit where the rule's edges are: at gap = window - 1 (paired) and = window
    (not), at the same gap on both sides with only the later one on the image's side (the earlier
    still wins), several sides on one day (same side, then lower id), and anywhere at random."""
    taken = set()

    def exam(p, day, side):
        if (p.id, day, side) not in taken:
            taken.add((p.id, day, side))
            add_exam(s, p, day.isoformat(), rng.choice([-3.1, -2.5, -2.4, -1.0, -0.9, 0.5]), side=side)

    for k in range(15):
        p = add_patient(s, f"R{tag}-{k}")
        base = D("2020-01-01") + dt.timedelta(days=rng.randrange(0, 900))
        for _ in range(rng.randrange(1, 4)):
            day = base + dt.timedelta(days=rng.randrange(0, 4 * window))
            side = rng.choice("LRB")
            add_image(s, p, day.isoformat(), side=side)
            g = dt.timedelta(days=rng.randrange(0, window))
            case = rng.choice(["edge", "tie", "same day", "random"])
            if case == "edge":
                exam(p, day + rng.choice([-1, 1]) * dt.timedelta(days=rng.choice([window - 1, window])), "-")
            elif case == "tie":
                exam(p, day - g, OTHER[side])
                exam(p, day + g, side)
            elif case == "same day":
                for e_side in rng.sample("LR-", rng.randrange(2, 4)):
                    exam(p, day + g * rng.choice([-1, 1]), e_side)
            for _ in range(rng.randrange(0, 3)):
                exam(p, day + dt.timedelta(days=rng.randrange(-window - 10, 3 * window)), rng.choice("LR-"))


def _edge_cases(images: list[tuple], exams: list[tuple], window: int) -> dict[str, int]:
    """How many images of the cohort have their nearest exam in each edge case."""
    seen = {"gap = window - 1": 0, "gap = window": 0, "tie across the image": 0, "sides on one day": 0}
    for _, patient, day, _ in images:
        offsets = [((e_day - day).days, e_side) for _, e_patient, e_day, e_side in exams if e_patient == patient]
        nearest = min((abs(o) for o, _ in offsets), default=None)
        at = [o for o, _ in offsets if abs(o) == nearest]
        seen["gap = window - 1"] += nearest == window - 1
        seen["gap = window"] += nearest == window
        seen["tie across the image"] += nearest is not None and nearest < window and len(set(at)) == 2
        seen["sides on one day"] += nearest is not None and nearest < window and len(at) > len(set(at))
    return seen


def test_random_cohorts_match_the_plain_python_rule(engine):
    import random

    window = 30
    with Session(engine, expire_on_commit=False) as s:
        for seed in range(3):
            _random_cohort(s, random.Random(seed), window, tag=str(seed))
            every_exam = s.query(DexaExam).all()  # the earlier seeds' rows stay: each round checks them all
            images = [(i.id, i.patient_id, i.study_date, i.laterality) for i in s.query(DicomImage)]
            exams = [(e.id, e.patient_id, e.exam_date, e.side) for e in every_exam]
            got = pairs(s, window)
            assert {k: (r["dexa_exam_id"], int(r["gap_days"])) for k, r in got.items()} == \
                reference_pairs(images, exams, window), seed
            t_of = {e.id: e.t_score for e in every_exam}
            for r in got.values():
                t = t_of[r["dexa_exam_id"]]
                assert float(r["t_score"]) == t and int(r["label"]) == (1 if t <= -2.5 else 0)
                assert r["label3"] == ("osteoporosis" if t <= -2.5 else "normal" if t >= -1.0 else "osteopenia")
    seen = _edge_cases(images, exams, window)
    assert min(seen.values()) >= 3, seen  # the cohorts really hold the cases the rule's edges are about


def test_sqlite_plan_walks_the_day_indexes(tmp_path):
    """Why SQLite pairs 1M x 1M in seconds: X-rays walked once by patient and day, each patient's
    exams by index range, and the only sort is the result's order by image id."""
    from sqlalchemy import text

    from db import create_schema, make_engine
    from db.sql import load_sql

    engine = make_engine(f"sqlite:///{tmp_path / 'plan.sqlite'}")
    create_schema(engine)
    explain = text("EXPLAIN QUERY PLAN " + load_sql("pair_xray_dexa", "sqlite").text)
    with engine.connect() as conn:
        plan = [r[3] for r in conn.execute(explain, {"window_days": 183, "osteoporosis_t": -2.5, "normal_t": -1.0})]
        with Session(bind=conn) as s:
            before = conn.exec_driver_sql("PRAGMA mmap_size").scalar()
            pairs(s)
            after = conn.exec_driver_sql("PRAGMA mmap_size").scalar()
    engine.dispose()
    assert any("ix_dexa_exam_patient_day" in step and "exam_day>? AND exam_day<?" in step for step in plan), plan
    assert any(step.startswith("SCAN i USING") and "INDEX ix_dicom_image_patient_day" in step for step in plan), plan
    assert [step for step in plan if "TEMP B-TREE" in step] == ["USE TEMP B-TREE FOR ORDER BY"], plan
    assert before == after  # query_pairs maps the file for its query only


def test_a_pairing_query_with_other_columns_fails_loudly(engine, monkeypatch):
    """query_pairs' rows are positional: SQL that gives other columns is our bug, and says so."""
    import db.pairing

    monkeypatch.setattr(db.pairing, "load_sql", lambda name, dialect: text("SELECT 1 AS image_id, 2 AS t_score"))
    with Session(engine) as s, pytest.raises(RuntimeError, match="gives the columns"):
        query_pairs(s, window_days=183, osteoporosis_t=-2.5, normal_t=-1.0)
