"""Outputs: the femoral-neck ROI export, the whole-frame render and their metadata-free PNGs."""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from os import PathLike
from typing import Any

import numpy as np
import PIL
import pydicom
from PIL import Image

from osteo.etl.imaging.display import prepare_display
from osteo.etl.imaging.quality import METAL_LEVEL, exclusion_of, measure_quality
from osteo.etl.imaging.read import ExportError, load_dicom
from osteo.etl.quiet import quiet_reads
from osteo_common.files import atomic_write_bytes, sha256_bytes

# Bump when anything that changes exported pixels or decisions changes, in any module of this
# package (it is in every transform, and in the refresh's export recipe: every image exports again).
ALGORITHM_VERSION = "1"

# zlib level of the PNGs, fixed (part of what makes the bytes deterministic): level 1 encodes
# 2-3x faster than 6 for files ~10% bigger.
PNG_COMPRESS_LEVEL = 1
RENDER_COMPRESS_LEVEL = 1
_RESAMPLE = Image.Resampling.LANCZOS
_LATERALITY = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}


@dataclass(frozen=True, slots=True)
class ExportJob:
    """One crop the refresh exports (osteo/ingest/refresh.py plans it): what export_roi is asked, and the
    rows it is recorded under. Pickled to a worker process, so plain values only."""

    annotation_id: int  # the box; it names the job in its batch
    image_id: int
    side: str  # the crop's femur (L, R: flipped): the box's side
    path: str  # the DICOM file
    sha256: str  # of the DICOM file: its quarantine entry, should it not read
    box: tuple[float, float, float, float]  # the recipe's box, in the DICOM's pixels
    digest: str  # the recipe's digest (the export row's recipe_digest)
    out_png: str
    size: int
    margin: float
    metal_threshold: float
    blur_threshold: float


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What export_roi did: exported (path and sha256 of the PNG) or excluded (why), the quality measures,
    the transform (its digest keys the export) and what was read."""

    status: str  # exported | excluded
    exclusion: str | None  # metal | blur
    metal_fraction: float
    blur_score: float
    path: str | None
    sha256: str | None
    transform: dict[str, Any]
    transform_digest: str
    source_sha256: str
    rows: int
    cols: int
    frames: int
    frame_index: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RenderResult:
    """What render_png wrote: the PNG (its size and hash) and what was read to make it."""

    path: str
    rows: int
    cols: int
    width: int
    height: int
    photometric: str
    frames: int
    frame_index: int
    transfer_syntax: str
    bits_stored: int
    window: dict[str, Any]
    sha256: str
    source_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _png_bytes(img: Image.Image, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """PNG with only IHDR/IDAT/IEND: no text, time, gamma or dpi chunks (no identifier can leak)."""
    buf = io.BytesIO()
    img.info = {}
    img.save(buf, format="PNG", compress_level=compress_level, optimize=False)
    return buf.getvalue()


def canonical_digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return sha256_bytes(text.encode("ascii"))


def _versions() -> dict[str, str]:
    return {
        "osteo_imaging": ALGORITHM_VERSION,
        "pydicom": pydicom.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def render_size(cols: int, rows: int, max_size: int = 0) -> tuple[int, int]:
    """(width, height) of a render whose long side is at most max_size (0: the full size)."""
    if max_size <= 0 or max(cols, rows) <= max_size:
        return cols, rows
    scale = max_size / max(cols, rows)
    return max(1, math.floor(cols * scale + 0.5)), max(1, math.floor(rows * scale + 0.5))


@quiet_reads()  # the values read after parsing are converted (and warned about) here
def render_png(dicom_path: Any, out_png: str | PathLike[str], *, max_size: int = 0) -> RenderResult:
    """The whole first frame through the export's normalisation, as an 8-bit PNG (atomic); with
    `max_size`, downscaled (Lanczos) so that its long side is at most that many pixels."""
    ds, data = load_dicom(dicom_path)
    dm = prepare_display(ds)
    img = Image.fromarray(dm.display_u8())
    width, height = render_size(dm.shape[1], dm.shape[0], max_size)
    if (width, height) != img.size:
        img = img.resize((width, height), resample=_RESAMPLE)
    png = _png_bytes(img, RENDER_COMPRESS_LEVEL)
    atomic_write_bytes(out_png, png)
    return RenderResult(path=str(out_png), rows=dm.shape[0], cols=dm.shape[1], width=width, height=height,
                        photometric=dm.photometric, frames=dm.frames, frame_index=dm.frame_index,
                        transfer_syntax=dm.info["transfer_syntax"], bits_stored=dm.info["bits_stored"],
                        window=dm.window, sha256=sha256_bytes(png), source_sha256=sha256_bytes(data))


def _clip_box(box: Any, rows: int, cols: int) -> tuple[int, int, int, int]:
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise ExportError("invalid_box", f"box must be four numbers, got {box!r}") from exc
    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
        raise ExportError("invalid_box", f"box has non-finite coordinates {box!r}")
    if xmax <= xmin or ymax <= ymin:
        raise ExportError("empty_box", f"box {box!r} has no area")
    x0, y0 = max(0, math.floor(xmin)), max(0, math.floor(ymin))
    x1, y1 = min(cols, math.ceil(xmax)), min(rows, math.ceil(ymax))
    if x1 <= x0 or y1 <= y0:
        raise ExportError("box_outside_image", f"box {box!r} does not overlap the {cols}x{rows} image")
    if x1 - x0 < 3 or y1 - y0 < 3:
        raise ExportError("box_too_small", f"box {box!r} clipped to the image is under 3x3 pixels")
    return x0, y0, x1, y1


def crop_rect(box: tuple[int, int, int, int], margin: float, rows: int, cols: int) -> tuple[int, int, int, int]:
    """The crop around a (clipped) box: `margin` x its size on each side, clipped to the image."""
    x0, y0, x1, y1 = box
    mx, my = int(math.floor(margin * (x1 - x0) + 0.5)), int(math.floor(margin * (y1 - y0) + 0.5))
    return max(0, x0 - mx), max(0, y0 - my), min(cols, x1 + mx), min(rows, y1 + my)


def neck_image(pix: np.ndarray, flip: bool, size: int) -> Image.Image:
    """The crop's pixels (uint8) as the classifier's size x size input: right femurs mirrored."""
    if flip:
        pix = pix[:, ::-1]
    img = Image.fromarray(np.ascontiguousarray(pix))
    return img if img.size == (size, size) else img.resize((size, size), resample=_RESAMPLE)


def box_quality(dm: Any, box: Any) -> dict[str, float]:
    """The metal and blur measures of a box (clipped to the image) of a DisplayMap, as export_roi measures
    them: on the box itself, no margin. ExportError for a box that cannot be cropped."""
    x0, y0, x1, y1 = _clip_box(box, *dm.shape)
    region = (slice(y0, y1), slice(x0, x1))
    return measure_quality(dm.unit(region), dm.display(region))


def neck_crop(display: np.ndarray, box: Any, side: str, *, size: int = 256, margin: float = 0.15) -> np.ndarray:
    """The femoral-neck crop of a whole display image (uint8), exactly as export_roi writes it
    (the classifier's pyfunc and the service crop with this)."""
    return np.asarray(neck_image(display[_neck_window(box, display.shape, margin)], side == "R", size))


def neck_crop_of(dm: Any, box: Any, side: str, *, size: int = 256, margin: float = 0.15) -> np.ndarray:
    """neck_crop of a DisplayMap, mapping only the crop's pixels to grey levels (as export_roi does): the same
    array as neck_crop(dm.display_u8(), ...) without mapping the whole image."""
    return np.asarray(neck_image(dm.display_u8(_neck_window(box, dm.shape, margin)), side == "R", size))


def _neck_window(box: Any, shape: tuple[int, ...], margin: float) -> tuple[slice, slice]:
    """The rows and columns of a box's crop: clipped to the image, widened by the margin."""
    rows, cols = shape[0], shape[1]
    x0, y0, x1, y1 = crop_rect(_clip_box(box, rows, cols), margin, rows, cols)
    return slice(y0, y1), slice(x0, x1)


def roi_transform(dm: Any, box: Any, clipped: tuple[int, int, int, int], crop: tuple[int, int, int, int], side: str,
                  *, size: int, margin: float, metal_threshold: float, blur_threshold: float) -> dict[str, Any]:
    """The export's transform record (its digest keys the export): the box as asked and as clipped, the crop,
    the flip and resize, the grey-level mapping, the quality rule and the library versions."""
    return {
        "op": "export_roi",
        "box": list(clipped),
        "box_requested": [float(v) for v in box],
        "crop": list(crop),
        "margin": float(margin),
        "size": size,
        "flip_horizontal": side == "R",
        "laterality": side,
        "frame_index": dm.frame_index,
        "photometric": dm.photometric,
        "window": dm.window,
        "resample": "lanczos",
        "png": {"mode": "L", "bits": 8, "compress_level": PNG_COMPRESS_LEVEL},
        "quality": {
            "metal_level": METAL_LEVEL,
            "metal_threshold": float(metal_threshold),
            "blur_threshold": float(blur_threshold),
            "blur": "std(4-neighbour laplacian(display*255)) on the box",
        },
        "versions": _versions(),
    }


@quiet_reads()  # the values read after parsing are converted (and warned about) here
def export_roi(
    dicom_path: Any,
    box: tuple[float, float, float, float],
    laterality: str,
    out_png: str | PathLike[str],
    *,
    size: int = 256,
    margin: float = 0.15,
    metal_threshold: float = 0.005,
    blur_threshold: float = 6.0,
) -> ExportResult:
    """Quality-check the boxed femoral neck and, unless excluded, write its size x size PNG.

    Exclusion: 'metal' if metal_fraction > metal_threshold, elif 'blur' if blur_score <
    blur_threshold (both measured on the box itself, no margin). Exported crops are the box
    plus `margin` x box size on each side (clipped to the image), flipped left-right for
    right femurs, resized with Lanczos to size x size, written atomically as a metadata-free
    8-bit PNG. Raises ExportError for bad input.
    """
    side = _LATERALITY.get(str(laterality).strip().upper())
    if side is None:
        raise ExportError("invalid_laterality", f"laterality must be 'L' or 'R', got {laterality!r}")
    size = int(size)
    if size < 1:
        raise ValueError("size must be positive")
    ds, data = load_dicom(dicom_path)
    dm = prepare_display(ds)
    rows, cols = dm.shape
    x0, y0, x1, y1 = _clip_box(box, rows, cols)
    region = (slice(y0, y1), slice(x0, x1))
    quality = measure_quality(dm.unit(region), dm.display(region))
    exclusion = exclusion_of(quality, metal_threshold, blur_threshold)
    crop = crop_rect((x0, y0, x1, y1), margin, rows, cols)
    transform = roi_transform(dm, box, (x0, y0, x1, y1), crop, side, size=size, margin=margin,
                              metal_threshold=metal_threshold, blur_threshold=blur_threshold)
    path = png_sha256 = None
    if not exclusion:
        img = neck_image(dm.display_u8((slice(crop[1], crop[3]), slice(crop[0], crop[2]))), side == "R", size)
        png = _png_bytes(img)
        atomic_write_bytes(out_png, png)
        path, png_sha256 = str(out_png), sha256_bytes(png)
    return ExportResult(status="excluded" if exclusion else "exported", exclusion=exclusion,
                        metal_fraction=quality["metal_fraction"], blur_score=quality["blur_score"], path=path,
                        sha256=png_sha256, transform=transform, transform_digest=canonical_digest(transform),
                        source_sha256=sha256_bytes(data), rows=rows, cols=cols, frames=dm.frames,
                        frame_index=dm.frame_index)
