"""Read DICOM headers (never the pixels) into plain, de-identified records.

A record holds what the pipeline needs and nothing that names a patient: the raw
Patient ID is turned into its pseudonym here, in the worker, and birth date becomes
age at exam. Names and accession numbers are never read out of the file; the two free-text
descriptions are read only to decide the scope (osteo/etl/scope.py) and then dropped.

The scope is decided first, as soon as the file has a Modality: a chest radiograph or an MR is
out of scope (recorded with its reason), not quarantined for a tag it was never meant to have.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from osteo.etl.errors import InputError
from osteo.etl.pool import shared_pool
from osteo.etl.pseudonym import pseudonymise
from osteo.etl.quiet import unvalidated_reads
from osteo.etl.scope import BODY_PART_CHARS, MODALITY_CHARS, ScopeRules, code, decide_scope
from osteo.etl.values import is_uid
from osteo_common.files import sha256_bytes

REQUIRED = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "StudyDate",
    "Modality",
    "Rows",
    "Columns",
    "BitsStored",
    "PhotometricInterpretation",
)
# Only these are parsed: faster than a full header and nothing else is ever touched.
WANTED = REQUIRED + (
    "PatientSex",
    "PatientBirthDate",
    "PatientAge",
    "BodyPartExamined",
    "ImageLaterality",
    "Laterality",
    "PatientOrientation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SeriesDescription",  # free text, for the scope keywords only: never stored
    "StudyDescription",
)
DEFAULT_SCOPE = ScopeRules()  # the product rule; the refresh passes the settings' (OSTEO_SCOPE_*)


def parse_da(value: str) -> dt.date:
    return dt.datetime.strptime(str(value).strip()[:8], "%Y%m%d").date()


def age_at(study: dt.date, birth: str | None, patient_age: str | None) -> int | None:
    if patient_age:
        text = str(patient_age).strip().upper()
        if text.endswith("Y") and text[:-1].isdigit():
            return int(text[:-1])
    if birth:
        try:
            born = parse_da(birth)
        except ValueError:
            return None
        return study.year - born.year - ((study.month, study.day) < (born.month, born.day))
    return None


def row_direction(orientation: Any) -> str:
    """The patient direction of the image rows (PatientOrientation's first value): R when the image is
    mirrored (columns run towards the patient's right), else L (the standard AP view, and the
    assumption when the tag is absent or names no left-right direction)."""
    if orientation is None or isinstance(orientation, str):
        first = str(orientation or "").split("\\")[0]
    else:  # pydicom's MultiValue of a two-valued CS
        first = str(next(iter(orientation), ""))
    return "R" if first.strip().upper()[:1] == "R" else "L"


def header_record(data: bytes, key: bytes, scope: ScopeRules = DEFAULT_SCOPE) -> dict[str, Any]:
    """Parse one file's bytes: {"record": {...}} for a hip image, {"out_of_scope": {reason, modality,
    body_part}} for any other (no identifier); raises InputError for bad input."""
    if len(data) < 132:
        raise InputError("not_dicom", "file is shorter than a DICOM preamble")
    with unvalidated_reads():  # pydicom's validation warnings quote header values
        return _header_record(data, key, scope)


def _header_record(data: bytes, key: bytes, scope: ScopeRules) -> dict[str, Any]:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=list(WANTED))
    except InvalidDicomError as exc:
        raise InputError("not_dicom", str(exc)[:200]) from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InputError("truncated", f"header could not be read: {type(exc).__name__}") from exc
    try:
        if ds.get("Modality") not in (None, ""):  # the scope first: no other tag is asked of a file out of scope
            out = _out_of_scope(ds, scope)
            if out:
                return {"out_of_scope": out}
        for tag in REQUIRED:
            if tag not in ds or ds[tag].value in (None, ""):
                raise InputError(f"missing_tag:{tag}", f"required tag {tag} is absent or empty")
        laterality = str(ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper()
        if laterality not in ("L", "R", "B"):  # B: both hips, an AP pelvis (one crop per side)
            raise InputError("missing_tag:ImageLaterality", f"image laterality is {laterality or 'absent'}")
        try:
            study_date = parse_da(ds.StudyDate)
        except ValueError as exc:
            raise InputError("bad_tag:StudyDate", "StudyDate is not a DICOM date") from exc
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        return {"record": {
            "sop_instance_uid": str(ds.SOPInstanceUID),
            "study_instance_uid": str(ds.StudyInstanceUID),
            "series_instance_uid": str(ds.SeriesInstanceUID),
            "patient_key": pseudonymise(str(ds.PatientID), key),
            "sex": (str(ds.get("PatientSex") or "").strip().upper()[:1] or None),
            "study_date": study_date,
            "age_at_exam": age_at(study_date, ds.get("PatientBirthDate"), ds.get("PatientAge")),
            "modality": str(ds.Modality)[:16],
            "body_part": (str(ds.get("BodyPartExamined") or "")[:64] or None),
            "laterality": laterality,
            "row_direction": row_direction(ds.get("PatientOrientation")),
            "n_rows": int(ds.Rows),
            "n_columns": int(ds.Columns),
            "bits_stored": int(ds.BitsStored),
            "photometric": str(ds.PhotometricInterpretation)[:16],
            "pixel_spacing_mm": float(spacing[0]) if spacing else None,
            "transfer_syntax": str(tsyntax) if tsyntax else "1.2.840.10008.1.2",
        }}
    except InputError:
        raise
    except (AttributeError, ValueError, TypeError) as exc:
        raise InputError("bad_header", f"{type(exc).__name__}: {str(exc)[:160]}") from exc


def _out_of_scope(ds: pydicom.Dataset, scope: ScopeRules) -> dict[str, Any] | None:
    """The scope decision on the parsed header; the descriptions go no further than this call."""
    body_part = ds.get("BodyPartExamined")
    reason = decide_scope(ds.Modality, body_part, (ds.get("SeriesDescription"), ds.get("StudyDescription")), scope)
    if reason is None:
        return None
    uid = str(ds.get("SOPInstanceUID") or "").strip()
    # the UID (no patient identifier) lets a box drawn for this image be closed, not left waiting
    return {"reason": reason, "modality": code(ds.Modality, MODALITY_CHARS),
            "body_part": code(body_part, BODY_PART_CHARS) or None, "sop_instance_uid": uid if is_uid(uid) else None}


def read_one(path: str, key: bytes, scope: ScopeRules = DEFAULT_SCOPE) -> dict[str, Any]:
    """Hash and parse one file, reading it once: a result with "record", "out_of_scope" or "error"
    (bad input comes back as a result, not an exception)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:  # transient faults are retried by the task; a vanished file is reported
        return {"path": path, "sha256": "", "size": 0, "error": ("unreadable", str(exc)[:200])}
    out: dict[str, Any] = {"path": path, "sha256": sha256_bytes(data), "size": len(data)}
    try:
        out.update(header_record(data, key, scope))
    except InputError as exc:
        out["error"] = (exc.reason, exc.detail)
    return out


def _read_chunk(args: tuple[list[str], bytes, ScopeRules]) -> list[dict[str, Any]]:
    paths, key, scope = args
    return [read_one(p, key, scope) for p in paths]


def read_headers(paths: list[str], key: bytes, *, workers: int = 1,
                 scope: ScopeRules = DEFAULT_SCOPE) -> list[dict[str, Any]]:
    """Read many headers, in worker processes when workers > 1 (parsing is CPU-bound Python)."""
    if workers <= 1 or len(paths) < 64:
        return _read_chunk((paths, key, scope))
    size = max(16, len(paths) // (workers * 4))
    chunks = [(paths[i : i + size], key, scope) for i in range(0, len(paths), size)]
    pool = shared_pool(workers)
    return [r for chunk in pool.map(_read_chunk, chunks) for r in chunk]
