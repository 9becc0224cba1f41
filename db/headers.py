"""One DICOM file's header as the ingest hands it over: osteo/etl/dicom_headers.py builds these (in worker
processes, one per file), db/store.py writes them. Frozen and slotted: they are made per file on the hot
ingest path and come back from the workers by pickle. Defined here, below osteo/, so both sides import them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any


@dataclass(frozen=True, slots=True)
class HeaderRecord:
    """The validated header of a hip image, de-identified (patient_key is the pseudonym)."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_key: str
    sex: str | None
    study_date: dt.date
    age_at_exam: int | None
    modality: str
    body_part: str | None
    laterality: str  # L | R | B (both: an AP pelvis)
    row_direction: str  # L | R (PatientOrientation's row direction)
    n_rows: int
    n_columns: int
    bits_stored: int
    photometric: str
    pixel_spacing_mm: float | None
    transfer_syntax: str
    synthetic: bool  # marked by `osteo synth` (osteo/etl/synthetic.py)

    def image_row(self, patient_id: int) -> dict[str, Any]:
        """The dicom_image insert's columns (no source_file_id yet): the patient by its id; the key and sex
        are the patient row's. Written out, not dataclasses.asdict (a deep copy per file)."""
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "study_date": self.study_date,
            "age_at_exam": self.age_at_exam,
            "modality": self.modality,
            "body_part": self.body_part,
            "laterality": self.laterality,
            "row_direction": self.row_direction,
            "n_rows": self.n_rows,
            "n_columns": self.n_columns,
            "bits_stored": self.bits_stored,
            "photometric": self.photometric,
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "transfer_syntax": self.transfer_syntax,
            "synthetic": bool(self.synthetic),  # every row the same keys and types (one executemany)
            "patient_id": patient_id,
        }

    def __reduce__(self) -> tuple[type, tuple]:
        return HeaderRecord, _RECORD_ARGS(self)


@dataclass(frozen=True, slots=True)
class OutOfScopeHeader:
    """A file that is not a hip radiograph (osteo/etl/scope.py): why, from which coded tags; no identifier.
    The SOP Instance UID (None when not a valid UID) lets a box drawn for this image be closed."""

    reason: str  # "modality MR", "body part CHEST"
    modality: str
    body_part: str | None
    sop_instance_uid: str | None

    def row(self) -> dict[str, Any]:
        """The out_of_scope insert's columns (no source_file_id yet)."""
        return {"reason": self.reason, "modality": self.modality, "body_part": self.body_part,
                "sop_instance_uid": self.sop_instance_uid}

    def __reduce__(self) -> tuple[type, tuple]:
        return OutOfScopeHeader, _OUT_OF_SCOPE_ARGS(self)


@dataclass(frozen=True, slots=True)
class HeaderRead:
    """One file hashed and read once: its size and trusted mtime_ns (None when not to be trusted) and exactly one
    of its record (a hip image), why it is out of scope, or its error (reason, detail): bad input is a result."""

    path: str
    sha256: str  # "" when the file could not be read
    size: int
    mtime_ns: int | None
    record: HeaderRecord | None = None
    out_of_scope: OutOfScopeHeader | None = None
    error: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if (self.record is None) + (self.out_of_scope is None) + (self.error is None) != 2:
            raise ValueError("a header read holds exactly one of record, out_of_scope and error")

    def __reduce__(self) -> tuple[type, tuple]:
        return HeaderRead, _READ_ARGS(self)


# Pickled as the constructor's arguments, read in C: a frozen slotted dataclass's own __getstate__/__setstate__
# walk fields() in Python, several times a dict's cost per file on the way back from the workers.
_RECORD_ARGS, _OUT_OF_SCOPE_ARGS, _READ_ARGS = (attrgetter(*(f.name for f in fields(cls)))
                                                for cls in (HeaderRecord, OutOfScopeHeader, HeaderRead))
