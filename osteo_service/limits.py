"""What an upload may be (`Limits`) and how a request is refused (`UploadError`), with the size refusals
that the DICOM checks (osteo_service.dicom_checks) and the image decoding (osteo_service.image_decoding)
share.

Every refusal is an UploadError: an HTTP status, a short code and a fixed plain-English message that
never quotes the file's header values, file name or pixels (patient data stays out of responses and
logs); its cause is dropped (`from None`) for the same reason: parser errors quote what they choke on.
Codes: too_large (413), not_a_form and unsupported_type (415), bad_form (400), malformed_dicom,
unsupported_dicom, malformed_image, image_too_large and image_too_small (422).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class UploadError(Exception):
    """A refused request (the service's one refusal type; the screening's is a subclass): `status` for the
    response, `code` for machines, `message` for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# JPEG baseline, extended, lossless, lossless SV1; JPEG-LS lossless, near-lossless; JPEG 2000 lossless, lossy
JPEG_FAMILY = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
               "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
DEFLATED = "1.2.840.10008.1.2.1.99"
# implicit and explicit VR little endian, deflated, the JPEG family, RLE lossless: all decodable by the
# installed plugins (pylibjpeg, Pillow); big endian is retired and left out
TRANSFER_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", DEFLATED, *JPEG_FAMILY, "1.2.840.10008.1.2.5")


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 50_000_000  # rows x cols x frames; 7000 x 7000 passes
    max_side: int = 16384
    min_side: int = 16  # smaller is neither a radiograph nor a usable crop (the localiser needs some pixels)
    max_frames: int = 1
    modalities: tuple[str, ...] = ("CR", "DX")
    transfer_syntaxes: tuple[str, ...] = field(default=TRANSFER_SYNTAXES)


def too_small(limits: Limits) -> UploadError:
    return UploadError(422, "image_too_small", f"The image is smaller than {limits.min_side} pixels a side.")


def too_many_pixels() -> UploadError:
    return UploadError(422, "image_too_large", "The image has more pixels than the service accepts.")


def check_size(rows: int, cols: int, frames: int, limits: Limits) -> None:
    """Refuse a declared size the service will not decode (read from the header, before any pixel)."""
    if rows > limits.max_side or cols > limits.max_side or rows * cols * frames > limits.max_pixels:
        raise too_many_pixels()
    if min(rows, cols) < limits.min_side:
        raise too_small(limits)
