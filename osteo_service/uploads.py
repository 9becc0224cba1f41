"""Upload handling: a size-capped form parsed in memory, the file typed by its content, checked before decoding.

Starlette's own form parsing spools a file part to a temporary file (patient data on disk), so the
body is parsed here with python-multipart's streaming parser into memory, counting bytes as they
arrive. A file is typed by its first bytes only (never its name or Content-Type) and its declared
size is refused before any pixel is decoded: a small upload can declare a huge image.

Every refusal is an UploadError: an HTTP status, a short code and a fixed plain-English message that
never quotes the file's header values, file name or pixels (patient data stays out of responses and
logs); its cause is dropped (`from None`) for the same reason: parser errors quote what they choke on.
Codes: too_large (413), not_a_form and unsupported_type (415), bad_form (400), malformed_dicom,
unsupported_dicom, malformed_image and image_too_large (422).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import numpy as np
import pydicom
from PIL import Image, ImageOps
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, QuerystringParser, parse_options_header
from starlette.requests import Request

from osteo.etl.dicom_headers import row_direction
from osteo.etl.imaging import ExportError, load_dicom, prepare_display
from osteo.etl.quiet import unvalidated_reads
from osteo_common.files import sha256_bytes
from osteo_service.codestream import codestream_size


class UploadError(Exception):
    """A refused request (the service's one refusal type; the screening's is a subclass): `status` for the
    response, `code` for machines, `message` for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# --------------------------------------------------------------------------- the form
@dataclass(frozen=True)
class Form:
    fields: dict[str, str]
    files: dict[str, bytes]  # the first file of each field name; file names are never kept


def _too_large() -> UploadError:
    return UploadError(413, "too_large", "The upload is larger than the service accepts.")


def _bad_form(message: str) -> UploadError:
    return UploadError(400, "bad_form", message)


class _Collector:
    """python-multipart callbacks that gather the parts in memory (BytesIO), never on disk."""

    def __init__(self, max_fields: int) -> None:
        self.max_fields, self.parts, self.ended = max_fields, 0, False
        self.fields: dict[str, str] = {}
        self.files: dict[str, bytes] = {}
        self._buf = {key: io.BytesIO() for key in ("header", "header_value", "name", "value")}
        self._disposition, self._name, self._is_file = b"", "", False

    def _into(self, key: str):
        return lambda data, start, end: self._buf[key].write(data[start:end])

    def _take(self, key: str) -> bytes:
        value, self._buf[key] = self._buf[key].getvalue(), io.BytesIO()
        return value

    def _count(self) -> None:
        self.parts += 1
        if self.parts > self.max_fields:
            raise _bad_form("The form has too many fields.")

    def _header_end(self) -> None:
        name, value = self._take("header"), self._take("header_value")
        if name.strip().lower() == b"content-disposition":
            self._disposition = value

    def _headers_finished(self) -> None:
        self._count()
        kind, options = parse_options_header(self._disposition)
        if kind != b"form-data" or b"name" not in options:
            raise _bad_form("A form part has no field name.")
        self._name = options[b"name"].decode("utf-8", "replace")
        self._is_file = b"filename" in options  # only its presence: the file name itself is dropped
        self._disposition = b""

    def _part_end(self) -> None:
        value = self._take("value")
        if self._is_file:
            self.files.setdefault(self._name, value)
        else:
            self.fields.setdefault(self._name, value.decode("utf-8", "replace"))

    def _field_end(self) -> None:  # urlencoded: the parser splits, the %-escapes are decoded here
        def unquote(raw: bytes) -> str:
            return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")
        self.fields.setdefault(unquote(self._take("name")), unquote(self._take("value")))

    def _end(self) -> None:
        self.ended = True

    def multipart(self) -> dict:
        return {"on_header_field": self._into("header"), "on_header_value": self._into("header_value"),
                "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
                "on_part_data": self._into("value"), "on_part_end": self._part_end, "on_end": self._end}

    def querystring(self) -> dict:
        return {"on_field_start": self._count, "on_field_name": self._into("name"),
                "on_field_data": self._into("value"), "on_field_end": self._field_end}


async def read_form(request: Request, limit: int, *, max_fields: int = 50) -> Form:
    """The request's form, read into memory: 413 once the body passes `limit` bytes (at once on a
    Content-Length above it, else as the chunks arrive), 415 for a body that is no form, 400 for a bad one."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdecimal():  # what int() accepts, nothing else
            raise _bad_form("The Content-Length header is not a number.")
        if int(declared) > limit:
            raise _too_large()
    ctype, params = parse_options_header(request.headers.get("content-type"))
    collector = _Collector(max_fields)
    parser: MultipartParser | QuerystringParser
    if ctype == b"multipart/form-data":
        if not params.get(b"boundary"):
            raise _bad_form("The multipart form has no boundary.")
        try:
            parser = MultipartParser(params[b"boundary"], collector.multipart())
        except FormParserError:  # a boundary longer than the parser allows
            raise _bad_form("The multipart boundary is invalid.") from None
    elif ctype == b"application/x-www-form-urlencoded":
        parser = QuerystringParser(collector.querystring())
    else:
        raise UploadError(415, "not_a_form", "Send the upload as multipart/form-data.")
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:  # a chunked body, or one longer than it declared
                raise _too_large()
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise _bad_form("The form data could not be parsed.") from None
    if isinstance(parser, MultipartParser) and not collector.ended:
        raise _bad_form("The form data ends before its closing boundary.")
    return Form(fields=collector.fields, files=collector.files)


# --------------------------------------------------------------------------- typing and limits

def sniff(data: bytes) -> str:
    """"dicom", "png" or "jpeg", from the content only."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    raise UploadError(415, "unsupported_type", "The file is not a DICOM, PNG or JPEG file.")


# JPEG baseline, extended, lossless, lossless SV1; JPEG-LS lossless, near-lossless; JPEG 2000 lossless, lossy
_JPEG_FAMILY = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
                "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
_DEFLATED = "1.2.840.10008.1.2.1.99"
# implicit and explicit VR little endian, deflated, the JPEG family, RLE lossless: all decodable by the
# installed plugins (pylibjpeg, Pillow); big endian is retired and left out
TRANSFER_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", _DEFLATED, *_JPEG_FAMILY, "1.2.840.10008.1.2.5")


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 50_000_000  # rows x cols x frames; 7000 x 7000 passes
    max_side: int = 16384
    min_side: int = 16  # smaller is neither a radiograph nor a usable crop (the localiser needs some pixels)
    max_frames: int = 1
    modalities: tuple[str, ...] = ("CR", "DX")
    transfer_syntaxes: tuple[str, ...] = field(default=TRANSFER_SYNTAXES)


# --------------------------------------------------------------------------- DICOM
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


def _malformed(message: str = "The DICOM file could not be read.") -> UploadError:
    return UploadError(422, "malformed_dicom", message)


def _unsupported(message: str) -> UploadError:
    return UploadError(422, "unsupported_dicom", message)


def _too_small(limits: Limits) -> UploadError:
    return UploadError(422, "image_too_small", f"The image is smaller than {limits.min_side} pixels a side.")


def _too_many_pixels() -> UploadError:
    return UploadError(422, "image_too_large", "The image has more pixels than the service accepts.")


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
        raise _malformed()
    start = 144 + struct.unpack("<I", data[140:144])[0]
    inflater, rest, total = zlib.decompressobj(-zlib.MAX_WBITS), data[start:], 0
    try:
        while rest and total <= cap:  # 1 MB at a time: the count, not the inflated data, is kept
            total += len(inflater.decompress(rest, 1 << 20))
            rest = inflater.unconsumed_tail
    except zlib.error:
        raise _malformed() from None
    if total > cap:
        raise _too_many_pixels()


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword)
    if value in (None, ""):
        if default is None:
            raise _malformed("The DICOM file lacks an attribute needed to show the image.")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _malformed("The DICOM file has an attribute that is not a number.") from None


def check_dicom_header(data: bytes, limits: Limits) -> DicomHeader:
    """Read the header only (no pixels) and refuse, with a 422, what the service will not decode."""
    if _meta_transfer_syntax(data) == _DEFLATED:
        _check_inflated_size(data, 2 * limits.max_pixels * limits.max_frames + (8 << 20))
    buffer = io.BytesIO(data)
    with unvalidated_reads(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote header values
        try:
            ds = pydicom.dcmread(buffer, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - any parser failure is a malformed upload
            raise _malformed() from None
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    # stop_before_pixels leaves the stream on the pixel data element; a cut file stops anywhere else
    # (deflated files: pydicom reads an inflated copy, so their pixel data is checked on decoding)
    if ts != _DEFLATED and buffer.read(4) not in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        raise _malformed("The DICOM file ends early or holds no image.")
    if str(ds.get("Modality") or "").strip().upper() not in limits.modalities:
        raise _unsupported("The file is not a radiograph of an accepted modality (CR or DX).")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    frames = _int(ds, "NumberOfFrames", 1)
    if rows < 1 or cols < 1 or frames < 1:
        raise _malformed("The DICOM file declares an empty image.")
    if rows > limits.max_side or cols > limits.max_side or rows * cols * frames > limits.max_pixels:
        raise _too_many_pixels()
    if min(rows, cols) < limits.min_side:
        raise _too_small(limits)
    if frames > limits.max_frames:
        raise _unsupported("The DICOM file holds more frames than the service accepts.")
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
    laterality = str(ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper()
    orientation = ds.get("PatientOrientation")
    first = "" if orientation in (None, "") else str(orientation if isinstance(orientation, str) else orientation[0])
    return DicomHeader(modality=str(ds.Modality).strip().upper(), rows=rows, cols=cols, frames=frames,
                       bits_allocated=ba, bits_stored=bs, transfer_syntax=ts,
                       laterality=laterality if laterality in ("L", "R", "B") else "",
                       patient_orientation_row=first.split("\\")[0].strip())


_EXPORT_MESSAGES = {"truncated": "The DICOM file ends early.", "no_pixels": "The DICOM file holds no image.",
                    "unsupported_pixel_format": "The DICOM file holds no image.",
                    "undecodable_pixels": "The DICOM image data could not be decoded.",
                    "invalid_modality_lut": "The DICOM file's grey-level tables are invalid.",
                    "invalid_voi_lut": "The DICOM file's grey-level tables are invalid."}


def _decode_dicom(data: bytes, limits: Limits) -> tuple[np.ndarray, DicomHeader]:
    header = check_dicom_header(data, limits)
    try:
        ds, _ = load_dicom(data)
        if header.transfer_syntax in _JPEG_FAMILY:
            frame = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
            if codestream_size(frame) != (header.rows, header.cols):
                raise _malformed("The compressed image's size differs from its header.")
        display = prepare_display(ds).display_u8()  # the pipeline's own grey-level mapping, as locate_dicom
    except ExportError as exc:  # its detail may quote header values: a fixed message per reason
        message = _EXPORT_MESSAGES.get(exc.reason, "The DICOM file could not be read.")
        raise _malformed(message) from None
    except (ValueError, TypeError):  # a broken encapsulation
        raise _malformed() from None
    return display, header


# --------------------------------------------------------------------------- PNG / JPEG
def _bad_image() -> UploadError:
    return UploadError(422, "malformed_image", "The image file is damaged or incomplete.")


def _decode_image(data: bytes, limits: Limits) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])  # lazy: reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many_pixels() from None
        except (OSError, SyntaxError, ValueError):
            raise _bad_image() from None
        width, height = img.size
        if width < 1 or height < 1:
            raise _bad_image()
        if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
            raise _too_many_pixels()
        if min(width, height) < limits.min_side:
            raise _too_small(limits)
        try:
            img.load()
            img = ImageOps.exif_transpose(img)  # a phone or viewer export may rely on EXIF rotation
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many_pixels() from None
        except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error):
            raise _bad_image() from None
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
