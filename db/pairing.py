"""Run sql/pair_xray_dexa*.sql and bring the pair table in line with its result."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from db.models import Pair
from db.sql import load_sql

RULE_VERSION = "nearest-exam-v1"


# SQLite reads the file through its small page cache by default; the pairing query probes the
# (patient, day) indexes a million times at full size, and a memory map of the file makes those
# reads memory reads (1M x 1M: about a quarter less CPU). Set for the query, then put back.
SQLITE_MMAP_BYTES = 1 << 30


# the columns of sql/pair_xray_dexa*.sql, in its order; query_pairs checks them at every run
PAIR_COLUMNS = ("image_id", "dexa_exam_id", "gap_days", "t_score", "label", "label3")
PairRow = tuple[int, int, int, float, int, str]


def query_pairs(session: Session, *, window_days: int, osteoporosis_t: float, normal_t: float) -> list[PairRow]:
    """The pairing query's rows, as tuples in PAIR_COLUMNS' order. It runs on the DB-API cursor of the session's
    connection (its transaction): at 1M x 1M, SQLAlchemy's result rows and a dict a row were a third of the time."""
    conn = session.connection()
    sql, args = driver_statement(conn.dialect, {"window_days": window_days, "osteoporosis_t": osteoporosis_t,
                                                "normal_t": normal_t})
    dbapi = conn.connection.dbapi_connection
    if dbapi is None:  # pragma: no cover - a live session's connection always has one
        raise RuntimeError("the session's connection is closed")
    before = conn.exec_driver_sql("PRAGMA mmap_size").scalar() if conn.dialect.name == "sqlite" else None
    if before is not None:  # None: an in-memory database, nothing to map
        conn.exec_driver_sql(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql, args)
        names = tuple(str(d[0]).lower() for d in cursor.description)  # Oracle upper-cases the aliases
        if names != PAIR_COLUMNS:
            raise RuntimeError(f"sql/pair_xray_dexa gives the columns {names}, not {PAIR_COLUMNS}")
        return list(cursor.fetchall())
    finally:
        cursor.close()
        if before is not None:
            conn.exec_driver_sql(f"PRAGMA mmap_size={int(before)}")


def driver_statement(dialect: Dialect, params: dict) -> tuple[str, list | dict[str, Any]]:
    """sql/pair_xray_dexa*.sql for `dialect`'s driver: the text with its bind marks (? for SQLite, %(name)s for
    psycopg, :name for Oracle) and the values as the driver takes them (a list for positional marks)."""
    compiled = load_sql("pair_xray_dexa", dialect.name).compile(dialect=dialect)
    bound = dict(compiled.construct_params(params))
    return str(compiled), [bound[k] for k in compiled.positiontup or ()] if compiled.positional else bound


def sync_pairs(session: Session, *, window_days: int, osteoporosis_t: float, normal_t: float) -> Counter:
    """Insert new pairs, update changed ones (a nearer exam arrived), drop vanished ones."""
    wanted = {r[0]: r for r in query_pairs(
        session, window_days=window_days, osteoporosis_t=osteoporosis_t, normal_t=normal_t)}
    counts: Counter = Counter()
    current = {p.image_id: p for p in session.scalars(select(Pair))}
    for image_id, (_, exam_id, gap_days, t_score, label, label3) in wanted.items():
        row = dict(
            dexa_exam_id=int(exam_id), gap_days=int(gap_days), t_score=float(t_score), label=int(label),
            label3=str(label3), rule_version=RULE_VERSION, window_days=window_days,
        )
        old = current.get(image_id)
        if old is None:
            session.add(Pair(image_id=image_id, **row))
            counts["new"] += 1
        elif any(getattr(old, k) != v for k, v in row.items()):
            for k, v in row.items():
                setattr(old, k, v)
            counts["changed"] += 1
    gone = [i for i in current if i not in wanted]
    if gone:
        session.execute(delete(Pair).where(Pair.image_id.in_(gone)))
        counts["removed"] = len(gone)
    session.flush()
    counts["pairs"] = len(wanted)
    counts["positives"] = sum(1 for *_, label, _ in wanted.values() if int(label) == 1)
    counts["negatives"] = counts["pairs"] - counts["positives"]
    return counts
