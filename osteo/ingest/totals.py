"""What the database holds after a refresh: the totals half of the nightly report, and the active
quarantine by stage and reason (osteo.ingest.refresh re-exports both)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Annotation, DexaExam, DicomImage, Export, OutOfScope, Pair, Quarantine, RefreshRun
from db.values import ExportStatus
from osteo.ingest.boxes import HUMAN, awaiting_box, waiting_files
from osteo.ingest.report import FOLDERS, EmptyFolder, ThisRun, Totals
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
            if status == ExportStatus.EXPORTED:
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
                                        .where(Export.status == ExportStatus.EXPORTED, Annotation.source != HUMAN)),
            pairs=pairs, positives=positives, negatives=pairs - positives, exported=exported,
            excluded=sum(excluded.values()), quarantined=sum(quarantined.values()),
            waiting={"no_dexa": images - pairs, "no_annotation": no_annotation,
                     "unmatched_box_files": unmatched_box_files},
            excluded_by_reason=dict(sorted(excluded.items())), quarantined_by_reason=quarantined,
            out_of_scope=sum(out_of_scope.values()), out_of_scope_by_reason=out_of_scope,
        )


LOOK_BACK = 60  # finished refreshes searched for the last one that found files in a folder now empty


def empty_folders(factory: sessionmaker[Session], refresh_id: int, this_run: ThisRun) -> tuple[EmptyFolder, ...]:
    """The folders given to this refresh that held no file, where the last refresh that read the same folder
    and found files in it is among the last LOOK_BACK: a night that sees nothing where the last one saw
    thousands is an unmounted share more often than a quiet night, and it stays one while it stays empty."""
    now = this_run.files_by_folder()
    with factory() as session:
        inputs = session.get_one(RefreshRun, refresh_id).inputs or {}
        folders = {f: inputs.get(f"{f}_dir") for f in FOLDERS if now[f] == 0 and inputs.get(f"{f}_dir")}
        if not folders:
            return ()
        earlier = session.scalars(select(RefreshRun).where(RefreshRun.status == "finished", RefreshRun.id < refresh_id)
                                  .order_by(RefreshRun.id.desc()).limit(LOOK_BACK)).all()
        found: list[EmptyFolder] = []
        for f, path in folders.items():
            for run in earlier:  # newest first; a run recorded before the counts by folder were kept says nothing
                files = (((run.counts or {}).get("this_run") or {}).get("files_by_folder") or {}).get(f) or 0
                if (run.inputs or {}).get(f"{f}_dir") == path and files > 0:
                    found.append(EmptyFolder(f, run.id, int(files)))
                    break
        return tuple(found)


def quarantine_table(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Active quarantine entries by stage and reason (totals in the database)."""
    with factory() as session:
        rows = session.execute(select(Quarantine.stage, Quarantine.reason, func.count(Quarantine.id))
                               .where(Quarantine.resolved_at.is_(None)).group_by(Quarantine.stage, Quarantine.reason)
                               .order_by(Quarantine.stage, Quarantine.reason)).all()
    return [{"stage": stage, "reason": reason, "count": int(n)} for stage, reason, n in rows]
