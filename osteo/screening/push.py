"""Screening results back into the patient's study: for each screened result the push policy picks
(OSTEO_SCREEN_PUSH: positive = flagged only, all, none) and that has no pushed SR yet, the source file is read
again (the patient and study modules come from it, never from osteo's database), the SR and the secondary
capture are written (osteo/screening/sr.py, capture.py) and sent by STOW-RS or C-STORE (osteo/pacs/target.py
says which). Each object sent is a screening_push row: its UIDs, where, how and whether the PACS took it.

A PACS that does not answer raises PacsUnavailable (the task retries); an object it refuses is recorded
`failed` with its answer, and the next run sends it again (same UIDs: the same instance)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import DicomImage, SourceFile
from db.screening import ScreeningPush, ScreeningResult
from osteo.etl.imaging import ExportError, load_dicom, neck_crop, prepare_display
from osteo.pacs.target import PacsTarget
from osteo.screening.capture import write_sc
from osteo.screening.model import ScreeningModel
from osteo.screening.report import PushCounts
from osteo.screening.send import send_objects
from osteo.screening.sr import ReportInput, SideResult, write_sr

MODES = ("positive", "all", "none")


@dataclass(frozen=True)
class Written:
    """One result's DICOM objects, ready to send (kind -> dataset)."""

    result_id: int
    objects: dict[str, Dataset]


def results_to_push(session: Session, name: str, version: str, mode: str) -> list[ScreeningResult]:
    """This version's screened results the mode picks that have no SR in the PACS yet."""
    if mode == "none":
        return []
    pushed = select(ScreeningPush.result_id).where(ScreeningPush.kind == "SR", ScreeningPush.status == "pushed")
    query = (select(ScreeningResult).where(ScreeningResult.model_name == name,
                                           ScreeningResult.model_version == version,
                                           ScreeningResult.status == "screened", ScreeningResult.id.not_in(pushed))
             .order_by(ScreeningResult.id))
    if mode == "positive":
        query = query.where(ScreeningResult.label == 1)
    return list(session.scalars(query))


def report_input(r: ScreeningResult) -> ReportInput:
    sides = tuple(SideResult(s, tuple(getattr(r, f"box_{s.lower()}")), getattr(r, f"box_source_{s.lower()}"),
                             getattr(r, f"confidence_{s.lower()}"), getattr(r, f"probability_{s.lower()}"))
                  for s in ("L", "R") if getattr(r, f"probability_{s.lower()}") is not None)
    localiser = f"{r.localiser_name}/{r.localiser_version}" if r.localiser_name else None
    return ReportInput(r.id, r.model_name, r.model_version, localiser, r.threshold, sides)


def write_objects(path: str, result: ReportInput, model: ScreeningModel) -> Written:
    """The SR and the SC of one result from its source file (read now: its patient module is copied, never kept).
    The heat map is the classifier's on the flagged (higher) side's crop, as the service shows it."""
    source, _ = load_dicom(path)
    dm = prepare_display(source)
    display = dm.display_u8()
    best = max(result.sides, key=lambda s: s.probability)
    crop = neck_crop(display, best.box, best.side, size=int(model.crop["size"]), margin=float(model.crop["margin"]))
    heat = model.classifier.predict([crop], heatmaps=True)[0]["heatmap"]
    return Written(result.result_id, {"SR": write_sr(source, result),
                                      "SC": write_sc(source, result, display, np.asarray(heat),
                                                     float(model.crop["margin"]))})


def record(session: Session, result_id: int, kind: str, ds: Dataset, target: PacsTarget, error: str | None) -> None:
    """The push row of (result, kind): added, or updated by a later try."""
    row = session.scalar(select(ScreeningPush).where(ScreeningPush.result_id == result_id, ScreeningPush.kind == kind))
    if row is None:
        row = ScreeningPush(result_id=result_id, kind=kind)
        session.add(row)
    row.sop_instance_uid, row.series_instance_uid = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
    row.study_instance_uid = str(ds.StudyInstanceUID)
    row.target, row.transport = target.where()[:255], "stow-rs" if target.transport == "dicomweb" else "c-store"
    row.status, row.detail = ("failed", error[:255]) if error else ("pushed", None)
    row.pushed_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)


def push_results(factory: sessionmaker[Session], model: ScreeningModel, target: PacsTarget | None,
                 mode: str) -> PushCounts:
    """Write and send what the mode picks; nothing without a PACS or with mode `none`."""
    if target is None or mode == "none":
        return PushCounts(mode=mode, target=target.where() if target else None)
    with factory() as session:
        todo = [(report_input(r), path) for r, path in session.execute(
            select(ScreeningResult, SourceFile.path).join(DicomImage, DicomImage.id == ScreeningResult.image_id)
            .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
            .where(ScreeningResult.id.in_([r.id for r in results_to_push(session, model.name, model.version,
                                                                          mode)])))]
    counts = PushCounts(mode=mode, target=target.where())
    for result, path in sorted(todo, key=lambda t: t[0].result_id):
        try:
            written = write_objects(path, result, model)
        except (ExportError, OSError) as exc:  # the source file is gone or unreadable since the refresh
            why = getattr(exc, "reason", "unreadable")
            counts += PushCounts(mode, failed=1, errors=(f"result {result.result_id}: source file {why}",))
            continue
        errors = send_objects(target, list(written.objects.values()))
        with factory() as session, session.begin():
            for (kind, ds), error in zip(written.objects.items(), errors, strict=True):
                record(session, result.result_id, kind, ds, target, error)
        ok = [kind for kind, error in zip(written.objects, errors, strict=True) if error is None]
        counts += PushCounts(mode, results=int("SR" in ok), sr=int("SR" in ok), sc=int("SC" in ok),
                             failed=len(errors) - len(ok), errors=tuple(e for e in errors if e))
    return counts
