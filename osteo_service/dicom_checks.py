"""The DICOM checks: a DICOM upload's header is read (no pixels) and what the service will not decode is
refused with a 422 before any pixel is: modality, size, frames, bits, samples, photometric
interpretation and transfer syntax; a deflated dataset is inflated under a cap first (a zip bomb), and
a compressed frame must declare the size its header does. Refusals: malformed_dicom, unsupported_dicom,
image_too_large, image_too_small (osteo_service.limits)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.decoders.base import get_decoder

from osteo.etl.quiet import unvalidated_reads
from osteo_service.codestream import codestream_size
from osteo_service.limits import DEFLATED, JPEG_FAMILY, Limits, UploadError, check_size, too_many_pixels


@dataclass(frozen=True)
class DicomHeader:
    modality: str
    rows: int
    cols: int
    frames: int
    bits_allocated: int
    bits_stored: int
    transfer_syntax: str
    laterality: str  # "L", "R", "B" or ""
    patient_orientation_row: str  # PatientOrientation's first value, "" when absent


def malformed(message: str = "The DICOM file could not be read.") -> UploadError:
    return UploadError(422, "malformed_dicom", message)


def _unsupported(message: str) -> UploadError:
    return UploadError(422, "unsupported_dicom", message)


def _meta_transfer_syntax(data: bytes) -> str:
    """The file meta's Transfer Syntax UID (explicit VR, as the standard requires), read before pydicom."""
    at = data.find(b"\x02\x00\x10\x00UI", 132, 4096)
    if at < 0:
        return ""
    (n,) = struct.unpack("<H", data[at + 6 : at + 8])
    return data[at + 8 : at + 8 + n].rstrip(b"\x00 ").decode("ascii", "replace")


def _check_inflated_size(data: bytes, cap: int) -> None:
    """pydicom inflates a deflated dataset whole while reading its header: bound it first (a zip bomb)."""
    if data[132:138] != b"\x02\x00\x00\x00UL":  # the meta group length, which says where the dataset starts
        raise malformed()
    start = 144 + struct.unpack("<I", data[140:144])[0]
    inflater, rest, total = zlib.decompressobj(-zlib.MAX_WBITS), data[start:], 0
    try:
        while rest and total <= cap:  # 1 MB at a time: the count, not the inflated data, is kept
            total += len(inflater.decompress(rest, 1 << 20))
            rest = inflater.unconsumed_tail
    except zlib.error:
        raise malformed() from None
    if total > cap:
        raise too_many_pixels()


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword)
    if value in (None, ""):
        if default is None:
            raise malformed("The DICOM file lacks an attribute needed to show the image.")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise malformed("The DICOM file has an attribute that is not a number.") from None


def _read_header(data: bytes, limits: Limits) -> tuple[Dataset, str]:
    """The dataset without its pixels and its transfer syntax; a file cut short is refused."""
    if _meta_transfer_syntax(data) == DEFLATED:
        _check_inflated_size(data, 2 * limits.max_pixels * limits.max_frames + (8 << 20))
    buffer = io.BytesIO(data)
    with unvalidated_reads(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote header values
        try:
            ds = pydicom.dcmread(buffer, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - any parser failure is a malformed upload
            raise malformed() from None
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    # stop_before_pixels leaves the stream on the pixel data element; a cut file stops anywhere else
    # (deflated files: pydicom reads an inflated copy, so their pixel data is checked on decoding)
    if ts != DEFLATED and buffer.read(4) not in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        raise malformed("The DICOM file ends early or holds no image.")
    return ds, ts


def _check_pixel_format(ds: Dataset, ts: str, limits: Limits) -> tuple[int, int]:
    """Bits allocated and stored, once the bit depth, the samples and the transfer syntax pass."""
    ba, bs = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    if ba not in (8, 16) or not 1 <= bs <= ba:
        raise _unsupported("The DICOM file's bit depth is not supported (8 or 16 bits allocated).")
    if _int(ds, "SamplesPerPixel", 1) != 1 or str(ds.get("PhotometricInterpretation") or "").strip().upper() \
            not in ("MONOCHROME1", "MONOCHROME2"):
        raise _unsupported("Only greyscale (MONOCHROME1/2) radiographs are accepted.")
    try:  # listed, and a decoder plugin for it installed here
        available = ts in limits.transfer_syntaxes and get_decoder(ts).is_available
    except (NotImplementedError, ValueError):
        available = False
    if not available:
        raise _unsupported("The DICOM file's compression (transfer syntax) is not supported.")
    return ba, bs


def check_dicom_header(data: bytes, limits: Limits) -> DicomHeader:
    """Read the header only (no pixels) and refuse, with a 422, what the service will not decode."""
    ds, ts = _read_header(data, limits)
    if str(ds.get("Modality") or "").strip().upper() not in limits.modalities:
        raise _unsupported("The file is not a radiograph of an accepted modality (CR or DX).")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    frames = _int(ds, "NumberOfFrames", 1)
    if rows < 1 or cols < 1 or frames < 1:
        raise malformed("The DICOM file declares an empty image.")
    check_size(rows, cols, frames, limits)
    if frames > limits.max_frames:
        raise _unsupported("The DICOM file holds more frames than the service accepts.")
    ba, bs = _check_pixel_format(ds, ts, limits)
    laterality = str(ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper()
    orientation = ds.get("PatientOrientation")
    first = "" if orientation in (None, "") else str(orientation if isinstance(orientation, str) else orientation[0])
    return DicomHeader(modality=str(ds.Modality).strip().upper(), rows=rows, cols=cols, frames=frames,
                       bits_allocated=ba, bits_stored=bs, transfer_syntax=ts,
                       laterality=laterality if laterality in ("L", "R", "B") else "",
                       patient_orientation_row=first.split("\\")[0].strip())


def check_frame_size(ds: Dataset, header: DicomHeader) -> None:
    """A compressed frame must declare the size its header does (the header's size is what was checked)."""
    if header.transfer_syntax in JPEG_FAMILY:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
        if codestream_size(frame) != (header.rows, header.cols):
            raise malformed("The compressed image's size differs from its header.")
