"""What `osteo screen` recorded (issue 27, migration 0006): one result per hip image and classifier version,
and each DICOM object (SR, secondary capture) pushed back into the image's study.

No patient data: an image is its dicom_image row; the SR and SC carry the patient module copied from the
source file at write time, and only their UIDs are kept here.

On db.models' Base (db.models imports this module last, so the metadata always holds these tables)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Identity, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.models import UID, Base, DicomImage, _now
from db.values import BoxSource, PushKind, PushStatus, PushTransport, ScreeningStatus, one_of

MODEL_NAME, MODEL_VERSION = 128, 32  # as training_run's


class ScreeningResult(Base):
    """One hip image screened by one classifier version: the box each side was scored on (a person's, else
    the localiser's), the probabilities, the label at the version's operating threshold, and the status
    (`screened`, `not_located`, `excluded: <reason>`). `--rescreen` replaces the version's row in place."""

    __tablename__ = "screening_result"
    __table_args__ = (
        UniqueConstraint("image_id", "model_name", "model_version", name="uq_screening_result_version"),
        Index("ix_screening_result_version", "model_name", "model_version"),
        one_of("screening_result", "status", ScreeningStatus),
        one_of("screening_result", "box_source_l", BoxSource),
        one_of("screening_result", "box_source_r", BoxSource),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("dicom_image.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(MODEL_NAME))
    model_version: Mapped[str] = mapped_column(String(MODEL_VERSION))
    localiser_name: Mapped[str | None] = mapped_column(String(MODEL_NAME))  # None: no localiser registered
    localiser_version: Mapped[str | None] = mapped_column(String(MODEL_VERSION))
    status: Mapped[str] = mapped_column(String(32))  # a ScreeningStatus
    # per side (L, R): the box in the image's pixels [x0, y0, x1, y1], who placed it (human | model), the
    # localiser's confidence, the side's probability; None where the image shows no such side or it was not scored
    box_l: Mapped[list | None] = mapped_column(JSON)
    box_source_l: Mapped[str | None] = mapped_column(String(8))
    confidence_l: Mapped[float | None] = mapped_column(Float)
    probability_l: Mapped[float | None] = mapped_column(Float)
    box_r: Mapped[list | None] = mapped_column(JSON)
    box_source_r: Mapped[str | None] = mapped_column(String(8))
    confidence_r: Mapped[float | None] = mapped_column(Float)
    probability_r: Mapped[float | None] = mapped_column(Float)
    side: Mapped[str | None] = mapped_column(String(1))  # the side of the higher probability
    probability: Mapped[float | None] = mapped_column(Float)  # None unless screened
    threshold: Mapped[float] = mapped_column(Float)  # the version's operating threshold
    label: Mapped[int | None] = mapped_column(Integer)  # probability >= threshold; None unless screened
    screened_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now, index=True)

    image: Mapped[DicomImage] = relationship()


class ScreeningPush(Base):
    """One DICOM object written for a result and sent to the PACS: the SR or the secondary capture, in the
    image's study (a new series each), by STOW-RS or C-STORE. Its UIDs are derived from the result, so a
    push repeated after a kill sends the same instance again, never a second one."""

    __tablename__ = "screening_push"
    __table_args__ = (
        UniqueConstraint("result_id", "kind", name="uq_screening_push_kind"),
        one_of("screening_push", "kind", PushKind),
        one_of("screening_push", "transport", PushTransport),
        one_of("screening_push", "status", PushStatus),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("screening_result.id"), index=True)
    kind: Mapped[str] = mapped_column(String(2))  # SR | SC
    sop_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    series_instance_uid: Mapped[str] = mapped_column(String(UID))
    study_instance_uid: Mapped[str] = mapped_column(String(UID))
    target: Mapped[str] = mapped_column(String(255))  # the DICOMweb URL or AET@host:port (no credentials)
    transport: Mapped[str] = mapped_column(String(8))  # stow-rs | c-store
    status: Mapped[str] = mapped_column(String(8))  # pushed | failed
    detail: Mapped[str | None] = mapped_column(String(255))  # why it failed: the PACS's status, never patient data
    pushed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    result: Mapped[ScreeningResult] = relationship()
