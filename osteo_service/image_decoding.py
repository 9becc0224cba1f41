"""Image decoding: an upload typed by its content and decoded to 8-bit grey, refused before decoding.

A file is typed by its first bytes only (never its name or Content-Type) and its declared size is
refused before any pixel is decoded: a small upload can declare a huge image. A DICOM passes the
DICOM checks (osteo_service.dicom_checks) and is rendered with the pipeline's own grey-level mapping;
a PNG or JPEG is opened by Pillow (those two formats only), its decompression-bomb warning an error.
Refusals: unsupported_type (415), malformed_dicom, malformed_image, image_too_large, image_too_small
(422; osteo_service.limits).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from osteo.etl.dicom_headers import row_direction
from osteo.etl.imaging import ExportError, load_dicom, prepare_display
from osteo_common.files import sha256_bytes
from osteo_service.dicom_checks import DicomHeader, check_dicom_header, check_frame_size, malformed
from osteo_service.limits import Limits, UploadError, check_size, too_many_pixels


def sniff(data: bytes) -> str:
    """"dicom", "png" or "jpeg", from the content only."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    raise UploadError(415, "unsupported_type", "The file is not a DICOM, PNG or JPEG file.")


# --------------------------------------------------------------------------- DICOM
_EXPORT_MESSAGES = {"truncated": "The DICOM file ends early.", "no_pixels": "The DICOM file holds no image.",
                    "unsupported_pixel_format": "The DICOM file holds no image.",
                    "undecodable_pixels": "The DICOM image data could not be decoded.",
                    "invalid_modality_lut": "The DICOM file's grey-level tables are invalid.",
                    "invalid_voi_lut": "The DICOM file's grey-level tables are invalid."}


def _decode_dicom(data: bytes, limits: Limits) -> tuple[np.ndarray, DicomHeader]:
    header = check_dicom_header(data, limits)
    try:
        ds, _ = load_dicom(data)
        check_frame_size(ds, header)
        display = prepare_display(ds).display_u8()  # the pipeline's own grey-level mapping, as locate_dicom
    except ExportError as exc:  # its detail may quote header values: a fixed message per reason
        message = _EXPORT_MESSAGES.get(exc.reason, "The DICOM file could not be read.")
        raise malformed(message) from None
    except (ValueError, TypeError):  # a broken encapsulation
        raise malformed() from None
    return display, header


# --------------------------------------------------------------------------- PNG / JPEG
def _bad_image() -> UploadError:
    return UploadError(422, "malformed_image", "The image file is damaged or incomplete.")


def _open_image(data: bytes, limits: Limits) -> Image.Image:
    """The image loaded (and turned as its EXIF says) once its header's size passes."""
    try:
        img = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])  # lazy: reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_many_pixels() from None
    except (OSError, SyntaxError, ValueError):
        raise _bad_image() from None
    width, height = img.size
    if width < 1 or height < 1:
        raise _bad_image()
    check_size(height, width, 1, limits)
    try:
        img.load()
        return ImageOps.exif_transpose(img)  # a phone or viewer export may rely on EXIF rotation
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_many_pixels() from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error):
        raise _bad_image() from None


def _decode_image(data: bytes, limits: Limits) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = _open_image(data, limits)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit and wider grey: stretch min-max to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return np.rint(scaled).astype(np.uint8)
    return np.asarray(img if img.mode == "L" else img.convert("L"), dtype=np.uint8)


# --------------------------------------------------------------------------- the upload
@dataclass(frozen=True)
class Decoded:
    kind: str  # "dicom", "png" or "jpeg"
    display: np.ndarray  # rows x cols, uint8, bright = dense
    laterality: str  # "L", "R", "B" from the DICOM header; "" when unknown (always for PNG/JPEG)
    row_direction: str  # "L" (standard AP) or "R" (mirrored), from PatientOrientation
    sha256: str  # of the raw upload bytes


def decode_upload(data: bytes, limits: Limits) -> Decoded:
    """Type by content, refuse before decoding, decode to 8-bit grey (DICOM: the pipeline's own mapping)."""
    kind = sniff(data)
    if kind == "dicom":
        display, header = _decode_dicom(data, limits)
        laterality, direction = header.laterality, row_direction(header.patient_orientation_row)
    else:
        display, laterality, direction = _decode_image(data, limits), "", "L"
    return Decoded(kind=kind, display=display, laterality=laterality, row_direction=direction,
                   sha256=sha256_bytes(data))
