"""What the database holds after a refresh: the totals half of the nightly report, and the active
quarantine by stage and reason (osteo.refresh re-exports both)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Annotation, DexaExam, DicomImage, Export, OutOfScope, Pair, Quarantine
from osteo.boxes import HUMAN, awaiting_box, waiting_files
from osteo.refresh_report import Totals
from osteo.settings import ROI_MIN_CONFIDENCE


def summarise(factory: sessionmaker[Session], min_confidence: float = ROI_MIN_CONFIDENCE) -> Totals:
    """What the database holds after a refresh: the totals half of the nightly report."""
    with factory() as session:
        def n(stmt) -> int:
            return int(session.scalar(stmt) or 0)

        images = n(select(func.count(DicomImage.id)))
        pairs = n(select(func.count(Pair.id)))
        positives = n(select(func.count(Pair.id)).where(Pair.label == 1))
        no_annotation = n(select(func.count()).select_from(awaiting_box(min_confidence).subquery()))
        unmatched_box_files = n(select(func.count()).select_from(waiting_files().subquery()))
        latest = (select(Export.status, Export.exclusion, func.count(Export.id))
                  .group_by(Export.status, Export.exclusion))
        exported = 0
        excluded: Counter = Counter()
        for status, exclusion, count in session.execute(latest):
            if status == "exported":
                exported += count
            else:
                excluded[exclusion or "other"] += count
        quarantined = {k: int(v) for k, v in sorted(session.execute(
            select(Quarantine.reason, func.count(Quarantine.id)).where(Quarantine.resolved_at.is_(None))
            .group_by(Quarantine.reason)).all())}  # active entries: a resolved one stays only for the auditors
        out_of_scope = {k: int(v) for k, v in sorted(session.execute(
            select(OutOfScope.reason, func.count(OutOfScope.id)).group_by(OutOfScope.reason)).all())}
        return Totals(
            images=images, dexa_exams=n(select(func.count(DexaExam.id))),
            annotations=n(select(func.count(Annotation.id)).where(Annotation.source == HUMAN)),
            model_boxes=n(select(func.count(Annotation.id)).where(Annotation.source != HUMAN)),
            exported_from_model_boxes=n(select(func.count(Export.id))
                                        .join(Annotation, Annotation.id == Export.annotation_id)
                                        .where(Export.status == "exported", Annotation.source != HUMAN)),
            pairs=pairs, positives=positives, negatives=pairs - positives, exported=exported,
            excluded=sum(excluded.values()), quarantined=sum(quarantined.values()),
            waiting={"no_dexa": images - pairs, "no_annotation": no_annotation,
                     "unmatched_box_files": unmatched_box_files},
            excluded_by_reason=dict(sorted(excluded.items())), quarantined_by_reason=quarantined,
            out_of_scope=sum(out_of_scope.values()), out_of_scope_by_reason=out_of_scope,
        )


def quarantine_table(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Active quarantine entries by stage and reason (totals in the database)."""
    with factory() as session:
        rows = session.execute(select(Quarantine.stage, Quarantine.reason, func.count(Quarantine.id))
                               .where(Quarantine.resolved_at.is_(None)).group_by(Quarantine.stage, Quarantine.reason)
                               .order_by(Quarantine.stage, Quarantine.reason)).all()
    return [{"stage": stage, "reason": reason, "count": int(n)} for stage, reason, n in rows]
