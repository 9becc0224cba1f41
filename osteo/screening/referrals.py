"""`osteo screen list`: the screened films for the fracture-liaison service, the newest result of each image:
study UID, accession number, study date, side, probability, model version. No names: the PACS shows the patient.

The accession number is not in osteo's database (docs/privacy.md): it is read from the source file the refresh
recorded, at list time, and printed, never stored."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import DicomImage, SourceFile
from db.screening import ScreeningResult
from db.values import ScreeningStatus

COLUMNS = ("study_instance_uid", "accession_number", "study_date", "side", "probability", "flagged", "model",
           "model_version", "screened_at")


@dataclass(frozen=True)
class Referral:
    study_instance_uid: str
    accession_number: str | None  # None: the source file is gone or has none
    study_date: dt.date
    side: str
    probability: float
    flagged: bool
    model: str
    model_version: str
    screened_at: dt.datetime

    def to_dict(self) -> dict:
        return {**asdict(self), "study_date": self.study_date.isoformat(),
                "screened_at": self.screened_at.isoformat(timespec="seconds")}


def accession_of(path: str) -> str | None:
    """AccessionNumber of the file, read now (headers only); None when unreadable or empty."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["AccessionNumber"])
    except (OSError, InvalidDicomError):
        return None
    return str(ds.get("AccessionNumber") or "").strip() or None


def newest_results(session: Session, positive: bool, since: dt.date | None):
    """(result, study UID, study date, path) of each image's newest screened result, newest films first."""
    newest = (select(func.max(ScreeningResult.id)).where(ScreeningResult.status == ScreeningStatus.SCREENED)
              .group_by(ScreeningResult.image_id))
    query = (select(ScreeningResult, DicomImage.study_instance_uid, DicomImage.study_date, SourceFile.path)
             .join(DicomImage, DicomImage.id == ScreeningResult.image_id)
             .join(SourceFile, SourceFile.id == DicomImage.source_file_id)
             .where(ScreeningResult.id.in_(newest))
             .order_by(DicomImage.study_date.desc(), DicomImage.study_instance_uid, ScreeningResult.id))
    if positive:
        query = query.where(ScreeningResult.label == 1)
    if since is not None:
        query = query.where(DicomImage.study_date >= since)
    return session.execute(query).all()


def list_referrals(factory: Callable[[], AbstractContextManager[Session]], *, positive: bool = False,
                   since: dt.date | None = None) -> list[Referral]:
    with factory() as session:
        rows = newest_results(session, positive, since)
    return [Referral(uid, accession_of(path), date, r.side, float(r.probability), r.label == 1, r.model_name,
                     r.model_version, r.screened_at) for r, uid, date, path in rows
            if r.side is not None and r.probability is not None]  # a screened result has both
