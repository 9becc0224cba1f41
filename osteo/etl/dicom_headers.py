"""Read DICOM headers (never the pixels) into plain, de-identified records (db/headers.py's HeaderRead).

A record holds what the pipeline needs and nothing that names a patient: the raw
Patient ID is turned into its pseudonym here, in the worker, and birth date becomes
age at exam. Names and accession numbers are never read out of the file; the two free-text
descriptions are read only to decide the scope (osteo/etl/scope.py) and then dropped.

The scope is decided first, as soon as the file has a Modality: a chest radiograph or an MR is
out of scope (recorded with its reason), not quarantined for a tag it was never meant to have.

A record also says whether the file is synthetic (`osteo synth`'s marks: Manufacturer, or the flag
of its private block, found through the block's creator: osteo/etl/synthetic.py). The marks are
read raw, never through a converter, so that no value of theirs can fail a file.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from db.headers import HeaderRead, HeaderRecord, OutOfScopeHeader
from osteo.etl.dicom_bytes import deflate_problem, pixel_data_problem
from osteo.etl.dicom_fast import parse_fast
from osteo.etl.dicom_parsed import NOT_DICOM, REQUIRED, UIDS, Header, Parsed, parse_with_pydicom
from osteo.etl.errors import InputError
from osteo.etl.pool import shared_pool
from osteo.etl.pseudonym import pseudonymise
from osteo.etl.quiet import quiet_reads
from osteo.etl.scope import BODY_PART_CHARS, MODALITY_CHARS, ScopeRules, code, decide_scope
from osteo.etl.values import (
    AGE_RANGE,
    DATE_RULE,
    LATERALITIES,
    MAX_FILE_BYTES,
    MODALITIES,
    PHOTOMETRICS,
    PIXEL_SPACING_RANGE,
    SEXES,
    UID_RULE,
    code_text,
    finite_in,
    image_size_problem,
    is_printable,
    is_uid,
    parse_as,
    parse_da,
    plausible_age,
)
from osteo_common.files import sha256_bytes, sha256_file, trusted_mtime_ns

DEFAULT_SCOPE = ScopeRules()  # the product rule; the refresh passes the settings' (OSTEO_SCOPE_*)


def _bad(keyword: str, rule: str) -> InputError:
    """An invalid value: the detail names the attribute and the rule, never the value."""
    return InputError(f"bad_tag:{keyword}", f"{keyword} is not {rule}")


def age_at(study: dt.date, birth: object, patient_age: object) -> int | None:
    """Age in whole years at the study: PatientAge (AS) when given, else from PatientBirthDate; None
    when neither is given. InputError when one is given but is not a valid, plausible value."""
    if str(patient_age or "").strip("\0 "):
        try:
            return parse_as(patient_age)
        except ValueError:
            raise _bad("PatientAge", f"an age (nnnD/W/M/Y) of {AGE_RANGE[0]} to {AGE_RANGE[1]} years") from None
    if str(birth or "").strip("\0 "):
        try:
            born = parse_da(birth)
        except ValueError:
            raise _bad("PatientBirthDate", DATE_RULE) from None
        years = study.year - born.year - ((study.month, study.day) < (born.month, born.day))
        if not plausible_age(years):
            raise _bad("PatientBirthDate", f"a birth date {AGE_RANGE[0]} to {AGE_RANGE[1]} years before the study")
        return years
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


def header_record(data: bytes, key: bytes, scope: ScopeRules = DEFAULT_SCOPE, *,
                  fast: bool = True) -> HeaderRecord | OutOfScopeHeader:
    """Parse one file's bytes: a HeaderRecord for a hip image, an OutOfScopeHeader (reason, modality, body
    part, SOP Instance UID; no patient identifier) for any other; raises InputError for bad input. The header
    is read by our strict reader (osteo/etl/dicom_fast.py) where it reads the file exactly as pydicom would,
    else (or with fast=False) by pydicom: the result is the same either way."""
    if len(data) < 132:
        raise InputError("not_dicom", NOT_DICOM + ": shorter than a DICOM file's 132-byte preamble and marker")
    with quiet_reads():  # pydicom's warnings and log records quote header values
        parsed = parse_fast(data) if fast else None  # a deflated file is never the fast reader's
        if parsed is None:
            problem = deflate_problem(data)  # reading the meta (0.15 ms) beats searching 700 KB for the UID
            if problem:
                raise InputError(*problem)
            parsed = parse_with_pydicom(data)
        return _judge(parsed, data, key, scope)


def _judge(parsed: Parsed, data: bytes, key: bytes, scope: ScopeRules) -> HeaderRecord | OutOfScopeHeader:
    ds = parsed.header
    try:
        modality = code_text(ds.get("Modality"))
        if modality:  # the scope first: no other tag is asked of a file out of scope
            if modality not in MODALITIES and modality not in scope.modalities:
                raise _bad("Modality", "a DICOM modality code")
            out = _out_of_scope(ds, scope)
            if out is not None:
                return out
        for tag in REQUIRED:
            if tag not in ds or ds.get(tag) in (None, "") or (isinstance(ds.get(tag), str)
                                                              and not ds.get(tag).strip("\0 ")):
                raise InputError(f"missing_tag:{tag}", f"required tag {tag} is absent or empty")
        record = _record(ds, key)
        problem = pixel_data_problem(data, parsed.at, parsed.encoding, ds.file_meta)
        if problem:  # a file cut short is bad input now, not an image the localiser or the export meets later
            raise InputError(*problem)
        return record
    except InputError:
        raise
    except (AttributeError, ValueError, TypeError, IndexError, OverflowError) as exc:
        # the type only: a converter's message quotes the value it choked on
        raise InputError("bad_header", f"a header value cannot be read ({type(exc).__name__})") from exc


def _uid(value: object, keyword: str) -> str:
    text = str(value).rstrip("\0 ")
    if not is_uid(text):
        raise _bad(keyword, f"a UID ({UID_RULE})")
    return text


def _int(ds: Header, keyword: str, default: int | None = None) -> int:
    """One whole number (a US, or an IS as text); a list (a VR length that lies), bytes or a fraction is not."""
    value = ds.get(keyword)
    if value in (None, "") and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad(keyword, "one number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise _bad(keyword, "a number") from None
    if not math.isfinite(number) or not number.is_integer():
        raise _bad(keyword, "a whole number")
    return int(number)


def _uids(ds: Header) -> tuple[dict[str, str], str]:
    """The instance's UIDs (UIDS) and its transfer syntax (implicit VR little endian when the file meta names
    none); a SOPClassUID, when there, must be a UID too."""
    uids = {kw: _uid(ds.get(kw), kw) for kw in UIDS}
    if ds.get("SOPClassUID") not in (None, ""):
        _uid(ds.SOPClassUID, "SOPClassUID")
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return uids, _uid(tsyntax, "TransferSyntaxUID") if tsyntax else "1.2.840.10008.1.2"


def _laterality(ds: Header) -> str:
    """L, R or B (both hips: an AP pelvis, one crop per side); InputError for any other."""
    laterality = code_text(ds.get("ImageLaterality") or ds.get("Laterality"))
    if laterality and laterality not in LATERALITIES:
        raise _bad("ImageLaterality", "L, R, B or U")
    if laterality not in ("L", "R", "B"):
        raise InputError("missing_tag:ImageLaterality", f"image laterality is {laterality or 'absent'}")
    return laterality


def _image_size(ds: Header) -> tuple[int, int, int]:
    """(rows, columns, bits stored) of an image whose declared size is sane, read from the header only."""
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    frames, samples = _int(ds, "NumberOfFrames", 1), _int(ds, "SamplesPerPixel", 1)
    bits_stored, bits_allocated = _int(ds, "BitsStored"), _int(ds, "BitsAllocated", 16)
    if not 1 <= bits_stored <= min(bits_allocated, 32):
        raise _bad("BitsStored", "between 1 and BitsAllocated")
    for keyword, number in (("Rows", rows), ("Columns", cols), ("NumberOfFrames", frames),
                            ("SamplesPerPixel", samples)):
        if number < 1:
            raise _bad(keyword, "at least 1")
    size = image_size_problem(rows, cols, frames, samples, bits_allocated)  # from the header: no pixel is read
    if size:
        raise InputError("image_too_large", f"declared image: {size}")
    return rows, cols, bits_stored


def _pixel_spacing_mm(ds: Header) -> float | None:
    """The row spacing in mm (PixelSpacing, else ImagerPixelSpacing); None when neither is there."""
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    spacing_mm = None
    if spacing:
        try:  # the row spacing: the first of two values (one, when the VM is wrong)
            spacing_mm = float(spacing if isinstance(spacing, (int, float, str)) else spacing[0])
        except (TypeError, ValueError, IndexError):
            spacing_mm = math.nan
        if not finite_in(spacing_mm, *PIXEL_SPACING_RANGE):
            raise _bad("PixelSpacing", f"a finite spacing of {PIXEL_SPACING_RANGE[0]} to {PIXEL_SPACING_RANGE[1]} mm")
    return spacing_mm


def _record(ds: Header, key: bytes) -> HeaderRecord:
    """The validated record of a hip image; InputError naming the first invalid value."""
    uids, tsyntax = _uids(ds)
    patient_id = str(ds.PatientID)
    if not patient_id.strip("\0 "):
        raise InputError("missing_tag:PatientID", "required tag PatientID is absent or empty")
    laterality = _laterality(ds)
    try:
        study_date = parse_da(ds.StudyDate)
    except ValueError:
        raise _bad("StudyDate", f"{DATE_RULE}, written YYYYMMDD") from None
    sex = code_text(ds.get("PatientSex"))
    if sex and sex not in SEXES:
        raise _bad("PatientSex", "M, F or O")
    photometric = code_text(ds.PhotometricInterpretation)
    if photometric not in PHOTOMETRICS:
        raise _bad("PhotometricInterpretation", "a DICOM photometric interpretation")
    rows, cols, bits_stored = _image_size(ds)
    spacing_mm = _pixel_spacing_mm(ds)
    body_part = code_text(ds.get("BodyPartExamined"))
    return HeaderRecord(
        sop_instance_uid=uids["SOPInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        patient_key=pseudonymise(patient_id, key),
        sex=sex or None,
        study_date=study_date,
        age_at_exam=age_at(study_date, ds.get("PatientBirthDate"), ds.get("PatientAge")),
        modality=code_text(ds.Modality),
        body_part=body_part or None,
        laterality=laterality,
        row_direction=row_direction(ds.get("PatientOrientation")),
        n_rows=rows,
        n_columns=cols,
        bits_stored=bits_stored,
        photometric=photometric,
        pixel_spacing_mm=spacing_mm,
        transfer_syntax=tsyntax,
        synthetic=ds.synthetic,  # marked by `osteo synth` (osteo/etl/synthetic.py)
    )


def _out_of_scope(ds: Header, scope: ScopeRules) -> OutOfScopeHeader | None:
    """The scope decision on the parsed header; the descriptions go no further than this call."""
    body_part = code_text(ds.get("BodyPartExamined"))
    if body_part and not is_printable(body_part, BODY_PART_CHARS):  # local codes are allowed, control bytes not
        raise _bad("BodyPartExamined", f"a code of at most {BODY_PART_CHARS} printable characters")
    reason = decide_scope(ds.Modality, body_part or None, (ds.get("SeriesDescription"), ds.get("StudyDescription")),
                          scope)
    if reason is None:
        return None
    uid = str(ds.get("SOPInstanceUID") or "").rstrip("\0 ")
    # the UID (no patient identifier) lets a box drawn for this image be closed, not left waiting
    return OutOfScopeHeader(reason=reason, modality=code(ds.Modality, MODALITY_CHARS),
                            body_part=code(body_part, BODY_PART_CHARS) or None,
                            sop_instance_uid=uid if is_uid(uid) else None)


def read_one(path: str, key: bytes, scope: ScopeRules = DEFAULT_SCOPE) -> HeaderRead:
    """Hash and parse one file, reading it once: a HeaderRead with its record, out_of_scope or error
    (bad input comes back as a result, not an exception), and the file's size and trusted mtime_ns."""
    p = Path(path)
    try:
        st = p.stat()  # before the read: a write after it leaves a newer mtime, read again next time
        mtime_ns = trusted_mtime_ns(st)
        if st.st_size > MAX_FILE_BYTES:  # refused unread: no radiograph is this large
            return HeaderRead(path, sha256_file(p), st.st_size, mtime_ns,
                              error=("file_too_large", f"file is over {MAX_FILE_BYTES >> 20} MiB"))
        data = p.read_bytes()
    except OSError as exc:  # transient faults are retried by the task; a vanished file is reported
        return HeaderRead(path, "", 0, None, error=("unreadable", str(exc)[:200]))
    sha256, size = sha256_bytes(data), len(data)
    stamp = mtime_ns if size == st.st_size else None  # a size that moved under the read: read again next time
    try:
        found = header_record(data, key, scope)
    except InputError as exc:
        return HeaderRead(path, sha256, size, stamp, error=(exc.reason, exc.detail))
    if isinstance(found, HeaderRecord):
        return HeaderRead(path, sha256, size, stamp, record=found)
    return HeaderRead(path, sha256, size, stamp, out_of_scope=found)


def _read_chunk(args: tuple[list[str], bytes, ScopeRules]) -> list[HeaderRead]:
    paths, key, scope = args
    return [read_one(p, key, scope) for p in paths]


def read_headers(paths: list[str], key: bytes, *, workers: int = 1,
                 scope: ScopeRules = DEFAULT_SCOPE) -> list[HeaderRead]:
    """Read many headers, in worker processes when workers > 1 (parsing is CPU-bound Python)."""
    if workers <= 1 or len(paths) < 64:
        return _read_chunk((paths, key, scope))
    size = max(16, len(paths) // (workers * 4))
    chunks = [(paths[i : i + size], key, scope) for i in range(0, len(paths), size)]
    pool = shared_pool(workers)
    return [r for chunk in pool.map(_read_chunk, chunks) for r in chunk]
