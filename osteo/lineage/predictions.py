"""The screening service's audit rows (prediction_audit) for auditors: who asked, when, which model version
answered, the upload's SHA-256 (never the upload), the box and the result. No patient data is in them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import PredictionAudit
from osteo.lineage.records import iso


def predictions(session: Session, last: int | None = None, model_version: str | None = None,
                user: str | None = None) -> list[dict[str, Any]]:
    """Newest first; `user` keeps the answers one user (or token:NAME) asked for."""
    q = select(PredictionAudit).order_by(PredictionAudit.created_at.desc(), PredictionAudit.id.desc())
    if model_version is not None:
        q = q.where(PredictionAudit.model_version == model_version)
    if user is not None:
        q = q.where(PredictionAudit.asked_by == user)
    if last is not None:
        q = q.limit(last)
    return [{"id": r.id, "at": iso(r.created_at), "channel": r.channel, "asked_by": r.asked_by,
             "model": f"{r.model_name}/{r.model_version}", "localiser": r.localiser, "input_sha256": r.input_sha256,
             "input_kind": r.input_kind, "box": r.box, "box_source": r.box_source, "side": r.side,
             "probability": r.probability, "label": r.label, "threshold": r.threshold} for r in session.scalars(q)]
