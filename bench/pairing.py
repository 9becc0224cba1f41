"""Pairing: sql/pair_xray_dexa*.sql through db.pairing.query_pairs (SQLite, and PostgreSQL when a
server answers on 127.0.0.1:5432) against pandas.merge_asof on the same rows, at growing sizes."""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import row, target, timed

PG_URL = os.environ.get("OSTEO_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WINDOW, OSTEO_T, NORMAL_T = 183, -2.5, -1.0
GOAL_S = {"sqlite": 5.0, "postgresql": 3.0}  # issue 15: seconds for query_pairs at 1M images x 1M exams
EPOCH = dt.date(2018, 1, 1)
SPAN_DAYS = 6 * 365


def make_rows(n: int, seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n images and n DEXA exams over n/4 patients and six years."""
    rng = np.random.default_rng(seed)
    patients = max(1, n // 4)
    img = pd.DataFrame({
        "image_id": np.arange(1, n + 1),
        "patient_id": rng.integers(1, patients + 1, n),
        "study_date": pd.Timestamp(EPOCH) + pd.to_timedelta(rng.integers(0, SPAN_DAYS, n), unit="D"),
        "laterality": np.where(rng.random(n) < 0.5, "L", "R"),
    })
    exm = pd.DataFrame({
        "exam_id": np.arange(1, n + 1),
        "patient_id": rng.integers(1, patients + 1, n),
        "exam_date": pd.Timestamp(EPOCH) + pd.to_timedelta(rng.integers(0, SPAN_DAYS, n), unit="D"),
        "side": rng.choice(np.array(["L", "R", "-"]), n),
        "t_score": np.round(rng.normal(-1.5, 1.2, n), 2),
    })
    # the schema's natural key: one exam per patient, day and side (a handful of draws collide)
    exm = exm.drop_duplicates(["patient_id", "exam_date", "side"]).reset_index(drop=True)
    return img, exm


def plain_pairs(img: pd.DataFrame, exm: pd.DataFrame) -> pd.DataFrame:
    """What a user would write: nearest exam per image by patient, within the window, labelled."""
    left = img.sort_values("study_date")
    right = exm.sort_values("exam_date")
    m = pd.merge_asof(left, right, left_on="study_date", right_on="exam_date", by="patient_id",
                      direction="nearest", tolerance=pd.Timedelta(days=WINDOW - 1))
    m = m.dropna(subset=["exam_id"])
    m["gap_days"] = (m["study_date"] - m["exam_date"]).abs().dt.days
    m["label"] = (m["t_score"] <= OSTEO_T).astype(int)
    m["label3"] = np.where(m["t_score"] <= OSTEO_T, "osteoporosis",
                           np.where(m["t_score"] >= NORMAL_T, "normal", "osteopenia"))
    return m.sort_values("image_id")


# ---------------------------------------------------------------- loading the tables
def _tables(img: pd.DataFrame, exm: pd.DataFrame, iso_dates: bool):
    now = dt.datetime(2024, 1, 1)
    n_pat = int(max(img["patient_id"].max(), exm["patient_id"].max()))
    src = [(1, "dicom", "/bench/source", "0" * 64, 0, now, "ingested")]
    pats = [(i, f"p{i:031d}", "F", now) for i in range(1, n_pat + 1)]
    sd = img["study_date"].dt.date
    ed = exm["exam_date"].dt.date
    # db.models.day_number: days since 1970-01-01 (raw inserts skip the ORM's default)
    s_day = img["study_date"].to_numpy().astype("datetime64[D]").astype(np.int64).tolist()
    e_day = exm["exam_date"].to_numpy().astype("datetime64[D]").astype(np.int64).tolist()
    if iso_dates:
        sd, ed = sd.astype(str), ed.astype(str)
    images = list(zip(
        img["image_id"].tolist(), [f"1.2.3.{i}" for i in img["image_id"]], ["1.2.3"] * len(img), ["1.2.3"] * len(img),
        [1] * len(img), img["patient_id"].tolist(), sd.tolist(), s_day, [70] * len(img), ["DX"] * len(img),
        ["HIP"] * len(img), img["laterality"].tolist(), [2000] * len(img), [1500] * len(img), [12] * len(img),
        ["MONOCHROME2"] * len(img), [0.15] * len(img), ["1.2.840.10008.1.2.1"] * len(img), [now] * len(img)))
    exams = list(zip(
        exm["exam_id"].tolist(), exm["patient_id"].tolist(), ed.tolist(), e_day, exm["side"].tolist(), [0.7] * len(exm),
        exm["t_score"].tolist(), [False] * len(exm), [None] * len(exm), [70] * len(exm), [1] * len(exm),
        exm["exam_id"].tolist(), [now] * len(exm)))
    return [
        ("source_file", "id, kind, path, sha256, size_bytes, first_seen, status", src),
        ("patient", "id, patient_key, sex, created_at", pats),
        ("dicom_image", "id, sop_instance_uid, study_instance_uid, series_instance_uid, source_file_id, patient_id, "
         "study_date, study_day, age_at_exam, modality, body_part, laterality, n_rows, n_columns, bits_stored, "
         "photometric, pixel_spacing_mm, transfer_syntax, ingested_at", images),
        ("dexa_exam", "id, patient_id, exam_date, exam_day, side, neck_bmd, t_score, t_score_derived, z_score, "
         "age_at_exam, source_file_id, source_row, ingested_at", exams),
    ]


def load(engine, img: pd.DataFrame, exm: pd.DataFrame) -> None:
    dialect = engine.dialect.name
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for table, cols, data in _tables(img, exm, iso_dates=dialect == "sqlite"):
            if dialect == "postgresql":
                with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for r in data:
                        copy.write_row(r)
            else:
                marks = ", ".join("?" * len(cols.split(",")))
                cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", data)
        if dialect == "postgresql":
            cur.execute("ANALYZE")  # what autovacuum does after a bulk load
        raw.commit()
    finally:
        raw.close()


def _query(factory) -> list[tuple]:
    from db.pairing import query_pairs

    with factory() as session:
        return query_pairs(session, window_days=WINDOW, osteoporosis_t=OSTEO_T, normal_t=NORMAL_T)


def agreement(ours: list[tuple], plain: pd.DataFrame, exm: pd.DataFrame) -> dict:
    """Ours against merge_asof: the same images paired to an exam of the same day (so the same gap
    and direction); the exam ids too, apart from days with several exams of the patient, where
    merge_asof takes any and the rule takes the image's side, then the lower id."""
    day_of = dict(zip(exm["exam_id"].tolist(), exm["exam_date"].tolist()))
    ours_day = {image_id: day_of[int(exam_id)] for image_id, exam_id, *_ in ours}
    plain_day = dict(zip(plain["image_id"].tolist(), plain["exam_date"].tolist()))
    plain_exam = dict(zip(plain["image_id"].tolist(), plain["exam_id"].astype(int).tolist()))
    return {"same_pairs": ours_day == plain_day,
            "other_exam_same_day": sum(1 for image_id, exam_id, *_ in ours if plain_exam.get(image_id) != int(exam_id))}


# ---------------------------------------------------------------- databases
def _sqlite(tmp: Path, n: int):
    from db import create_schema, make_engine

    path = tmp / f"pairing-{n}.sqlite"
    path.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    return engine, lambda: (engine.dispose(), path.unlink(missing_ok=True))


def pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc)[:120]}"


def pg_schema(name: str):
    """A new, empty schema on the bench's PostgreSQL server: its engine (search_path set), and its drop."""
    from sqlalchemy import text

    from db import make_engine

    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={name}"})

    def drop():
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()

    return engine, drop


def _postgres(n: int):
    from db import create_schema

    engine, drop = pg_schema(f"osteo_bench_{os.getpid()}_{n}")
    create_schema(engine)
    return engine, drop


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def run(sizes: list[int], tmp: Path, repeats: int, full_size: int = 1_000_000) -> tuple[list[dict], dict]:
    from db import make_session_factory

    rows: list[dict] = []
    info: dict = {}
    pg_why = pg_available()
    info["postgresql"] = "reachable" if pg_why is None else f"not reachable ({pg_why})"
    backends = ["sqlite"] + (["postgresql"] if pg_why is None else [])
    for backend in backends:
        prev: tuple[int, float, float] | None = None
        goal_s = GOAL_S[backend]
        for n in sizes:
            img, exm = make_rows(n)
            t_plain = min(timed(lambda: plain_pairs(img, exm))[0] for _ in range(repeats))
            plain = plain_pairs(img, exm)
            engine, cleanup = _sqlite(tmp, n) if backend == "sqlite" else _postgres(n)
            try:
                t_load, _ = timed(lambda: load(engine, img, exm))
                factory = make_session_factory(engine)
                times = []
                for _ in range(repeats):
                    t, ours = timed(lambda: _query(factory))
                    times.append(t)
                t_ours = min(times)
            finally:
                cleanup()
            growth = None
            if prev is not None:
                growth = round(math.log(t_ours / prev[1]) / math.log(n / prev[0]), 2)
            goal = target("ours", "<=", goal_s) if n >= full_size else None
            rows.append(row(
                f"pairing {backend} {_label(n)} x {_label(n)}", stage="pairing", ours=t_ours, baseline=t_plain,
                unit="s", work=f"{n} images x {n} DEXA exams", goal=goal, growth_exponent=growth,
                pairs_ours=len(ours), pairs_baseline=len(plain), **agreement(ours, plain, exm),
                load_s=round(t_load, 2),
                note="ours: query_pairs (SQL + fetch); baseline: merge_asof on in-memory frames (ratio); "
                     f"goal at {_label(full_size)} x {_label(full_size)}: ours <= {goal_s:g} s; "
                     "growth_exponent k: time ~ n^k from the previous size"))
            prev = (n, t_ours, t_plain)
        if sizes[-1] < full_size and prev is not None and len(sizes) >= 2:
            k = max(1.0, rows[-1]["growth_exponent"] or 1.0)
            kb = max(1.0, math.log(prev[2] / rows[-2]["baseline"]) / math.log(sizes[-1] / sizes[-2]))
            scale = full_size / sizes[-1]
            rows.append(row(
                f"pairing {backend} {_label(full_size)} x {_label(full_size)} (projected)", stage="pairing",
                ours=prev[1] * scale**k, baseline=prev[2] * scale**kb, unit="s",
                work=f"{full_size} x {full_size}, projected from {_label(sizes[-2])} and {_label(sizes[-1])}",
                goal=target("ours", "<=", goal_s), growth_exponent=round(k, 2), projected=True,
                note=f"projected: t({_label(sizes[-1])}) x {scale:g}^k with the measured growth exponent "
                     "(at least 1); the full bench measures it"))
    return rows, info
