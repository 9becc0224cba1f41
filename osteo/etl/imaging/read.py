"""Reading: a path, bytes or file object -> pydicom dataset -> the first frame's raw pixel codes.

The file is read once (the bytes also give the source hash); only the first frame is decoded.
Bad input raises ExportError with a short reason, for the quarantine.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from osteo.etl.dicom_bytes import deflate_problem
from osteo.etl.errors import InputError
from osteo.etl.quiet import quiet_reads
from osteo.etl.values import MAX_FILE_BYTES, image_size_problem, is_uid

_REQUIRED_PIXEL_TAGS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
)
# every element the decoding and the grey-level mapping read: converted (and so checked) at parse time
_PIXEL_KEYWORDS = _REQUIRED_PIXEL_TAGS + (
    "NumberOfFrames",
    "PlanarConfiguration",
    "HighBit",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)
_MONO = ("MONOCHROME1", "MONOCHROME2")
_UNDEFINED_LENGTH = 0xFFFFFFFF
_EOF_WARNINGS = ("end of file", "before delimiter", "unexpected end")


class ExportError(InputError):
    """Bad input for render/export: quarantine it with `reason` (a short code) and go on.

    Reasons: file_not_found, unreadable_file, file_too_large, not_dicom, truncated, unreadable_dicom,
    missing_tag:<Keyword>, bad_tag:<Keyword>, no_pixels, unsupported_pixel_format, unsupported_photometric,
    unsupported_bits, invalid_bits, image_too_large, unsupported_transfer_syntax, undecodable_pixels,
    invalid_modality_lut, invalid_voi_lut, invalid_laterality, invalid_box, empty_box,
    box_outside_image, box_too_small.
    """

    def __reduce__(self):  # survives the trip back from a process-pool worker
        return (type(self), (self.reason, self.detail))


# --------------------------------------------------------------------------- reading


def _read_source(src: str | PathLike[str] | bytes | bytearray | memoryview | BinaryIO) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if not isinstance(src, (str, PathLike)):  # a binary file object
        return src.read()
    try:
        size = Path(src).stat().st_size
        if size > MAX_FILE_BYTES:  # refused unread: no radiograph is this large
            raise ExportError("file_too_large", f"file is over {MAX_FILE_BYTES >> 20} MiB")
        return Path(src).read_bytes()
    except FileNotFoundError as exc:
        raise ExportError("file_not_found", str(src)) from exc
    except OSError as exc:
        raise ExportError("unreadable_file", f"{type(exc).__name__}: {exc}") from exc


def _looks_like_bare_dataset(data: bytes) -> bool:
    # no preamble/DICM: accept only a stream that starts with a group 0x0002/0x0008 element
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _check_complete(ds: Dataset, nbytes: int, caught: list[warnings.WarningMessage]) -> None:
    """pydicom reads a cut file without complaint; find the cut ourselves."""
    for w in caught:
        text = str(w.message).lower()
        if any(key in text for key in _EOF_WARNINGS):
            raise ExportError("truncated", f"file ends early ({w.message})")
    keys = list(ds.keys())
    if not keys:
        return
    raw = ds.get_item(keys[-1], keep_deferred=True)  # as read: an element without a value is not converted
    length = getattr(raw, "length", None)
    tell = getattr(raw, "value_tell", None)
    if length is None or tell is None or length == _UNDEFINED_LENGTH:
        return
    value = getattr(raw, "value", None)
    if value is not None and len(value) < length:
        raise ExportError(
            "truncated", f"element {keys[-1]} declares {length} bytes, file holds {len(value)}"
        )
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts != DeflatedExplicitVRLittleEndian and 0 < nbytes - (tell + length) < 12:
        raise ExportError("truncated", "file ends inside an element header")


def _parse(data: bytes) -> Dataset:
    with quiet_reads():
        problem = deflate_problem(data)  # before pydicom inflates it whole
        if problem:
            raise ExportError(*problem)
        ds = _dcmread(data)
    return ds


def _dcmread(data: bytes) -> Dataset:
    # warnings recorded (not shown): a cut file is only told by them
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                ds = pydicom.dcmread(io.BytesIO(data))
            except InvalidDicomError as exc:
                if not _looks_like_bare_dataset(data):
                    raise ExportError("not_dicom", "no DICM prefix and no DICOM element at the start") from exc
                ds = pydicom.dcmread(io.BytesIO(data), force=True)
                if "SOPClassUID" not in ds and "Rows" not in ds:
                    raise ExportError("not_dicom", "no DICM prefix and no image attributes") from exc
                meta = getattr(ds, "file_meta", None)
                if meta is None or "TransferSyntaxUID" not in meta:
                    from pydicom.dataset import FileMetaDataset

                    ds.file_meta = meta if meta is not None else FileMetaDataset()
                    if ds.original_encoding[0]:
                        ts = ImplicitVRLittleEndian
                    else:
                        ts = ExplicitVRLittleEndian if ds.original_encoding[1] else ExplicitVRBigEndian
                    ds.file_meta.TransferSyntaxUID = ts
        except ExportError:
            raise
        except (EOFError, OSError, struct.error) as exc:  # struct.error: a cut element header
            raise ExportError("truncated", f"{type(exc).__name__}: {exc}") from exc
        except zlib.error as exc:
            raise ExportError("unreadable_dicom", "the deflated dataset does not inflate") from exc
        except Exception as exc:  # any parser failure is a quarantine reason
            raise ExportError("unreadable_dicom", f"{type(exc).__name__}: {exc}") from exc
    _check_complete(ds, len(data), caught)  # on the raw elements: before any is converted
    for kw in _PIXEL_KEYWORDS:  # pydicom converts a value when first asked: a damaged one fails here
        try:
            if kw in ds:
                ds[kw]
        except Exception as exc:  # noqa: BLE001 - whatever a converter raises on a hostile value
            raise ExportError("unreadable_dicom", f"{kw} cannot be read ({type(exc).__name__})") from None
    return ds


def load_dicom(src: Any) -> tuple[Dataset, bytes]:
    """Read a file (path, bytes or file object) once: the dataset and the raw bytes (for hashing)."""
    data = _read_source(src)
    return _parse(data), data


def read_dicom(src: Any) -> Dataset:
    """The full dataset (pixels included, decoded lazily by pydicom); ExportError on bad input."""
    return load_dicom(src)[0]


# --------------------------------------------------------------------------- decoding


def _tag_int(ds: Dataset, keyword: str) -> int:
    try:
        return int(ds[keyword].value)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"missing_tag:{keyword}", f"{keyword} is empty or not a number") from exc


def _check_pixel_module(ds: Dataset) -> None:
    if "PixelData" not in ds or not ds.PixelData:  # an empty element reads as None
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ExportError("unsupported_pixel_format", "float pixel data is not a radiograph")
        raise ExportError("no_pixels", "the file has no Pixel Data element, or an empty one")
    for kw in _REQUIRED_PIXEL_TAGS:
        if kw not in ds or ds[kw].value in (None, ""):
            raise ExportError(f"missing_tag:{kw}", f"{kw} is required to decode the pixels")
    pi = str(ds.PhotometricInterpretation).strip().upper()
    if pi not in _MONO or _tag_int(ds, "SamplesPerPixel") != 1:
        raise ExportError(
            "unsupported_photometric",
            f"{pi} with {ds.SamplesPerPixel} sample(s) per pixel; only MONOCHROME1/2 radiographs are exported",
        )
    ba, bs = _tag_int(ds, "BitsAllocated"), _tag_int(ds, "BitsStored")
    if ba not in (8, 16):
        raise ExportError("unsupported_bits", f"BitsAllocated {ba} (8 or 16 are supported)")
    if not 1 <= bs <= ba:
        raise ExportError("invalid_bits", f"BitsStored {bs} with BitsAllocated {ba}")
    if _tag_int(ds, "PixelRepresentation") not in (0, 1):
        raise ExportError("invalid_bits", f"PixelRepresentation {ds.PixelRepresentation}")
    rows, cols = _tag_int(ds, "Rows"), _tag_int(ds, "Columns")
    if rows < 1 or cols < 1:
        raise ExportError("undecodable_pixels", "Rows/Columns is zero")
    frames = _frames(ds)
    too_large = image_size_problem(rows, cols, frames, 1, ba)  # from the header, before any pixel buffer
    if too_large:
        raise ExportError("image_too_large", f"declared image: {too_large}")


def _frames(ds: Dataset) -> int:
    if ds.get("NumberOfFrames") in (None, ""):
        return 1
    try:
        frames = int(ds.NumberOfFrames)
    except (TypeError, ValueError, OverflowError):
        raise ExportError("bad_tag:NumberOfFrames", "NumberOfFrames is not a whole number") from None
    if frames < 1:
        raise ExportError("bad_tag:NumberOfFrames", "NumberOfFrames is below 1")
    return frames


def _decode_first_frame(ds: Dataset) -> np.ndarray:
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if not ts:
        raise ExportError("missing_tag:TransferSyntaxUID", "no transfer syntax in the file meta")
    if not is_uid(str(ts)):
        raise ExportError("bad_tag:TransferSyntaxUID", "TransferSyntaxUID is not a UID")
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise ExportError("unsupported_transfer_syntax", f"{ts} ({getattr(ts, 'name', ts)})") from exc
    if not decoder.is_available:
        raise ExportError("unsupported_transfer_syntax", f"no decoder plugin installed for {ts.name}")
    if not ts.is_encapsulated:  # native pixels: the element must hold every declared frame
        declared = int(ds.Rows) * int(ds.Columns) * (int(ds.BitsAllocated) // 8) * _frames(ds)
        held = len(ds.PixelData)
        if held < declared:
            raise ExportError("undecodable_pixels", f"pixel data holds {held} bytes; Rows x Columns x frames x "
                              f"bytes per pixel declare {declared}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr, _ = decoder.as_array(ds, index=0)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # Rust plugins panic with a BaseException
        raise ExportError("undecodable_pixels", f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    rows, cols = int(ds.Rows), int(ds.Columns)
    if arr.shape != (rows, cols):
        raise ExportError("undecodable_pixels", f"decoded shape {arr.shape}, expected {(rows, cols)}")
    return arr


def _as_codes(arr: np.ndarray, bits_allocated: int, signed: bool) -> np.ndarray:
    """The raw container codes as unsigned ints (a view, no copy, for the usual dtypes)."""
    if not arr.dtype.isnative:  # big endian transfer syntaxes decode to '>u2'/'>i2'
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind in "iu" and arr.dtype.itemsize in (1, 2):
        return arr.view(np.uint8 if arr.dtype.itemsize == 1 else np.uint16)
    if arr.dtype.kind not in "iu":
        raise ExportError("undecodable_pixels", f"decoder returned {arr.dtype} values")
    # unusual decoder output: store the values back into the declared container
    container = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}
    out = arr.astype(container[(bits_allocated, signed)])
    return out.view(np.uint8 if bits_allocated == 8 else np.uint16)
