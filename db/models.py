"""Typed ORM models. No column ever holds a name, a raw patient ID or a birth date.

Lineage runs source_file -> dicom_image / dexa_exam / annotation -> pair -> export
-> augmented copy -> snapshot member -> snapshot -> training run -> model version.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.values import AuditBoxSource, BoxSource, ExportStatus, QuarantineStage, SourceStatus, one_of

SHA256 = 64
UID = 64  # DICOM UIDs are at most 64 characters
PATH = 1024
DAY_ZERO = dt.date(1970, 1, 1)


def day_number(day: dt.date | str | None) -> int | None:
    """Days since 1970-01-01: dates as integers, so that pairing's window is an indexed integer range
    on every database (SQLite keeps dates as text, where date arithmetic is a function call per row)."""
    if day is None:
        return None
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    return (day - DAY_ZERO).days


def _day_default(column: str):
    # a context-sensitive default: set from the row's own date by ORM and Core (executemany) inserts alike
    return lambda ctx: day_number(ctx.get_current_parameters()[column])


class Base(DeclarativeBase):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class SourceFile(Base):
    """Every input file ever seen, by path and content hash (a changed file is a new row)."""

    __tablename__ = "source_file"
    __table_args__ = (UniqueConstraint("path", "sha256", name="uq_source_file_path_sha"),
                      one_of("source_file", "status", SourceStatus))

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # dicom | dexa | annotation
    path: Mapped[str] = mapped_column(String(PATH))
    sha256: Mapped[str] = mapped_column(String(SHA256), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # the file's modification time (ns) when it was read: a rerun skips a file whose path, size and
    # mtime match its last row without opening it (`osteo refresh --rehash` reads every file again)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    status: Mapped[str] = mapped_column(String(16), default=SourceStatus.INGESTED)  # a SourceStatus


class Patient(Base):
    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    patient_key: Mapped[str] = mapped_column(String(32), unique=True)  # keyed-hash pseudonym
    sex: Mapped[str | None] = mapped_column(String(1))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class DicomImage(Base):
    __tablename__ = "dicom_image"
    # covering the pairing query's walk (sql/pair_xray_dexa*.sql): no table look-up per image
    __table_args__ = (Index("ix_dicom_image_patient_day", "patient_id", "study_day", "laterality"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    study_instance_uid: Mapped[str] = mapped_column(String(UID))
    series_instance_uid: Mapped[str] = mapped_column(String(UID))
    source_file_id: Mapped[int] = mapped_column(ForeignKey("source_file.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    study_date: Mapped[dt.date] = mapped_column(Date, index=True)
    study_day: Mapped[int] = mapped_column(Integer, default=_day_default("study_date"))  # day_number(study_date)
    age_at_exam: Mapped[int | None] = mapped_column(Integer)
    modality: Mapped[str] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    laterality: Mapped[str] = mapped_column(String(1))  # L | R | B (both: an AP pelvis)
    # PatientOrientation's row direction: L (standard: columns run towards the patient's left) | R (mirrored)
    row_direction: Mapped[str] = mapped_column(String(1), default="L", server_default="L")
    n_rows: Mapped[int] = mapped_column(Integer)
    n_columns: Mapped[int] = mapped_column(Integer)
    bits_stored: Mapped[int] = mapped_column(Integer)
    photometric: Mapped[str] = mapped_column(String(16))
    pixel_spacing_mm: Mapped[float | None] = mapped_column(Float)
    transfer_syntax: Mapped[str] = mapped_column(String(UID))
    # marked synthetic by `osteo synth` (Manufacturer or its private block: osteo/etl/synthetic.py)
    synthetic: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    ingested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    source_file: Mapped[SourceFile] = relationship()
    patient: Mapped[Patient] = relationship()


class DexaExam(Base):
    """One DEXA exam; the same exam re-exported in a later CSV is not a new exam."""

    __tablename__ = "dexa_exam"
    __table_args__ = (
        UniqueConstraint("patient_id", "exam_date", "side", name="uq_dexa_exam_natural"),
        Index("ix_dexa_exam_patient_date", "patient_id", "exam_date"),
        # covering the pairing query's probes: no table look-up per exam (1M x 1M SQLite: 2.7 -> 1.9 s CPU)
        Index("ix_dexa_exam_patient_day", "patient_id", "exam_day", "side", "t_score"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    exam_date: Mapped[dt.date] = mapped_column(Date)
    exam_day: Mapped[int] = mapped_column(Integer, default=_day_default("exam_date"))  # day_number(exam_date)
    side: Mapped[str] = mapped_column(String(1), default="-")  # L | R | - (not given)
    neck_bmd: Mapped[float | None] = mapped_column(Float)
    t_score: Mapped[float] = mapped_column(Float)
    t_score_derived: Mapped[bool] = mapped_column(Boolean, default=False)
    z_score: Mapped[float | None] = mapped_column(Float)
    age_at_exam: Mapped[int | None] = mapped_column(Integer)
    source_file_id: Mapped[int] = mapped_column(ForeignKey("source_file.id"), index=True)
    source_row: Mapped[int] = mapped_column(Integer)  # 1-based data row number in the file
    ingested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    patient: Mapped[Patient] = relationship()
    source_file: Mapped[SourceFile] = relationship()


class Annotation(Base):
    """A femoral-neck box, in the image's original pixel space: drawn by a person (LabelImg VOC,
    `source` human) or proposed by the localiser (`source` model, with its version and confidence).

    One box per image side and source (a pelvis has two sides); a person's box always wins over a
    model's at export. Model boxes are kept per localiser version, so an export names the very box
    it used even after a newer localiser located the image again.
    """

    __tablename__ = "annotation"
    __table_args__ = (UniqueConstraint("sop_instance_uid", "side", "source", "model_version",
                                       name="uq_annotation_box"),
                      one_of("annotation", "source", BoxSource))

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID), index=True)
    side: Mapped[str] = mapped_column(String(1))  # L | R: the patient side the box shows
    source: Mapped[str] = mapped_column(String(8), default="human")  # human | model
    label: Mapped[str] = mapped_column(String(64))
    box_xmin: Mapped[int] = mapped_column(Integer)  # xmin/xmax are PostgreSQL system columns
    box_ymin: Mapped[int] = mapped_column(Integer)
    box_xmax: Mapped[int] = mapped_column(Integer)
    box_ymax: Mapped[int] = mapped_column(Integer)
    # a person's box: the VOC file; a model's box: None
    source_file_id: Mapped[int | None] = mapped_column(ForeignKey("source_file.id"), index=True)
    model_name: Mapped[str | None] = mapped_column(String(128))  # model boxes: the registered localiser
    model_version: Mapped[str | None] = mapped_column(String(32))
    confidence: Mapped[float | None] = mapped_column(Float)  # model boxes: osteo_model.roi_train.predict_boxes
    ingested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    source_file: Mapped[SourceFile | None] = relationship()


class Pair(Base):
    """Result of sql/pair_xray_dexa.sql: at most one DEXA exam per image."""

    __tablename__ = "pair"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("dicom_image.id"), unique=True)
    dexa_exam_id: Mapped[int] = mapped_column(ForeignKey("dexa_exam.id"), index=True)
    gap_days: Mapped[int] = mapped_column(Integer)
    t_score: Mapped[float] = mapped_column(Float)
    label: Mapped[int] = mapped_column(Integer)  # 1 = osteoporosis (T <= -2.5)
    label3: Mapped[str] = mapped_column(String(16))  # normal | osteopenia | osteoporosis
    rule_version: Mapped[str] = mapped_column(String(32))
    window_days: Mapped[int] = mapped_column(Integer)
    paired_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    image: Mapped[DicomImage] = relationship()
    dexa_exam: Mapped[DexaExam] = relationship()


class Export(Base):
    """A labelled femoral-neck PNG, or the measured reason it was excluded."""

    __tablename__ = "export"
    __table_args__ = (UniqueConstraint("image_id", "recipe_digest", name="uq_export_image_recipe"),
                      one_of("export", "status", ExportStatus))

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("dicom_image.id"), index=True)
    side: Mapped[str] = mapped_column(String(1))  # L | R: the femur of this crop (a pelvis exports two)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotation.id"))
    # digest of everything decided before decoding (box, size, margin, thresholds, code version)
    recipe_digest: Mapped[str] = mapped_column(String(SHA256))
    transform: Mapped[dict] = mapped_column(JSON)  # every parameter the export actually applied
    transform_digest: Mapped[str | None] = mapped_column(String(SHA256))  # canonical SHA-256 of `transform`
    status: Mapped[str] = mapped_column(String(16))  # exported | excluded
    exclusion: Mapped[str | None] = mapped_column(String(16))  # metal | blur
    metal_fraction: Mapped[float] = mapped_column(Float)
    blur_score: Mapped[float] = mapped_column(Float)
    path: Mapped[str | None] = mapped_column(String(PATH))
    sha256: Mapped[str | None] = mapped_column(String(SHA256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    image: Mapped[DicomImage] = relationship()
    annotation: Mapped[Annotation] = relationship()


class Quarantine(Base):
    """Bad input with the stage and a plain reason; a rerun never adds the same entry twice.

    An entry is active until a retry of its input (a new column map, configuration or code
    version, or `--retry-quarantined`) no longer finds the fault: then `resolved_at` is set and
    the row stays for the auditors. `context_digest` is what the input was last judged under.
    """

    __tablename__ = "quarantine"
    __table_args__ = (
        UniqueConstraint("stage", "source_sha256", "source_row", "reason", name="uq_quarantine_entry"),
        one_of("quarantine", "stage", QuarantineStage),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    stage: Mapped[str] = mapped_column(String(32))
    source_path: Mapped[str] = mapped_column(String(PATH))
    source_sha256: Mapped[str] = mapped_column(String(SHA256))
    source_row: Mapped[int] = mapped_column(Integer, default=0)  # 0 = whole file
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    context_digest: Mapped[str | None] = mapped_column(String(SHA256))  # osteo.ingest.quarantine.judging_context
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)  # None: active


class OutOfScope(Base):
    """A DICOM file that is not a hip radiograph (osteo/etl/scope.py): why, from which coded tags.

    Not an error and never paired or exported; one row per file content (a copy under another
    path is a duplicate). No identifier and no free text: the reason names the modality or body part.
    """

    __tablename__ = "out_of_scope"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    source_file_id: Mapped[int] = mapped_column(ForeignKey("source_file.id"), unique=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(UID), index=True)  # closes boxes drawn for it
    reason: Mapped[str] = mapped_column(String(80), index=True)  # "modality CT", "body part CHEST"
    modality: Mapped[str] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    source_file: Mapped[SourceFile] = relationship()


class Snapshot(Base):
    """A training data set, identified by the digest of its whole manifest."""

    __tablename__ = "snapshot"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    digest: Mapped[str] = mapped_column(String(SHA256), unique=True)
    n_members: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict] = mapped_column(JSON)
    manifest_path: Mapped[str] = mapped_column(String(PATH))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    members: Mapped[list[SnapshotMember]] = relationship(back_populates="snapshot")


class SnapshotMember(Base):
    __tablename__ = "snapshot_member"
    __table_args__ = (UniqueConstraint("snapshot_id", "export_id", name="uq_snapshot_member"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshot.id"), index=True)
    export_id: Mapped[int] = mapped_column(ForeignKey("export.id"), index=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pair.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    split: Mapped[str] = mapped_column(String(16))  # train | test
    fold: Mapped[int] = mapped_column(Integer)  # validation fold of train members; -1 for test
    label: Mapped[int] = mapped_column(Integer)

    snapshot: Mapped[Snapshot] = relationship(back_populates="members")
    export: Mapped[Export] = relationship()


class AugmentedCopy(Base):
    __tablename__ = "augmented_copy"
    __table_args__ = (UniqueConstraint("export_id", "seed", "params_digest", name="uq_augmented_copy"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    export_id: Mapped[int] = mapped_column(ForeignKey("export.id"), index=True)
    seed: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict] = mapped_column(JSON)
    params_digest: Mapped[str] = mapped_column(String(SHA256))
    path: Mapped[str] = mapped_column(String(PATH))
    sha256: Mapped[str] = mapped_column(String(SHA256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class TrainingRun(Base):
    """One registered model version, linked to the MLflow run that made it and back to its snapshot.

    A rerun may register the same run again as a new version: each version keeps its own row.
    """

    __tablename__ = "training_run"
    __table_args__ = (UniqueConstraint("model_name", "model_version", name="uq_training_run_version"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshot.id"), index=True)
    mlflow_run_id: Mapped[str] = mapped_column(String(64), index=True)
    arch: Mapped[str] = mapped_column(String(32))
    preset: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(32))
    test_auc: Mapped[float | None] = mapped_column(Float)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(SHA256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)

    snapshot: Mapped[Snapshot] = relationship()


class RefreshRun(Base):
    """One refresh, with its counts (what the nightly report shows)."""

    __tablename__ = "refresh_run"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now, server_default=func.now())
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # running | finished | failed (with counts {"error": ...}); a killed run stays 'running'
    status: Mapped[str] = mapped_column(String(16), default="running")
    code_version: Mapped[str] = mapped_column(String(80))
    inputs: Mapped[dict] = mapped_column(JSON)  # the folders and column-map file it read
    counts: Mapped[dict | None] = mapped_column(JSON)  # RefreshReport.to_dict(): this run and the totals


class PredictionAudit(Base):
    """One answer of the screening service, auditable without patient data: which model version
    answered, the SHA-256 of the uploaded bytes (not the bytes, not the file name), the box and the result."""

    __tablename__ = "prediction_audit"
    __table_args__ = (one_of("prediction_audit", "box_source", AuditBoxSource),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now, index=True)
    channel: Mapped[str] = mapped_column(String(8))  # page | api
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(32))
    localiser: Mapped[str | None] = mapped_column(String(160))  # name/version, when it placed the box
    input_sha256: Mapped[str] = mapped_column(String(SHA256), index=True)
    input_kind: Mapped[str] = mapped_column(String(8))  # dicom | png | jpeg
    box: Mapped[list | None] = mapped_column(JSON)  # [x0, y0, x1, y1] in the image's pixels
    box_source: Mapped[str] = mapped_column(String(8))  # user | model | image (a crop used whole)
    side: Mapped[str | None] = mapped_column(String(1))
    probability: Mapped[float] = mapped_column(Float)
    label: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[float] = mapped_column(Float)
    asked_by: Mapped[str | None] = mapped_column(String(136), index=True)  # user, or token:NAME; null: mode none


class RefreshLock(Base):
    """The refresh's lock row on databases without advisory locks (Oracle): a refresh holds its row
    with SELECT ... FOR UPDATE NOWAIT for the whole run (osteo.ingest.lock). PostgreSQL uses an
    advisory lock and SQLite a file lock, so there the table stays empty."""

    __tablename__ = "refresh_lock"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


from db import access as _access  # noqa: E402, F401 - the sign-in tables (issue 26) on this Base
from db import pacs as _pacs  # noqa: E402, F401 - what the PACS pull retrieved (issue 27) on this Base
from db import screening as _screening  # noqa: E402, F401 - the screening tables (issue 27) on this Base
