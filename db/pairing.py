"""Run sql/pair_xray_dexa*.sql and bring the pair table in line with its result."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import Pair
from db.sql import load_sql

RULE_VERSION = "nearest-exam-v1"


def query_pairs(session: Session, *, window_days: int, osteoporosis_t: float, normal_t: float) -> list[dict]:
    stmt = load_sql("pair_xray_dexa", session.get_bind().dialect.name)
    params = {"window_days": window_days, "osteoporosis_t": osteoporosis_t, "normal_t": normal_t}
    return [dict(r._mapping) for r in session.execute(stmt, params)]


def sync_pairs(session: Session, *, window_days: int, osteoporosis_t: float, normal_t: float) -> Counter:
    """Insert new pairs, update changed ones (a nearer exam arrived), drop vanished ones."""
    wanted = {r["image_id"]: r for r in query_pairs(
        session, window_days=window_days, osteoporosis_t=osteoporosis_t, normal_t=normal_t)}
    counts: Counter = Counter()
    current = {p.image_id: p for p in session.scalars(select(Pair))}
    for image_id, r in wanted.items():
        row = dict(
            dexa_exam_id=int(r["dexa_exam_id"]), gap_days=int(r["gap_days"]), t_score=float(r["t_score"]),
            label=int(r["label"]), label3=str(r["label3"]), rule_version=RULE_VERSION, window_days=window_days,
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
    counts["positives"] = sum(1 for r in wanted.values() if int(r["label"]) == 1)
    counts["negatives"] = counts["pairs"] - counts["positives"]
    return counts
