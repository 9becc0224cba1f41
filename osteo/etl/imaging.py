"""DICOM pixels -> display values, femoral-neck ROI export and image-quality checks.

Plain functions (no Prefect, MLflow or database): the export task calls them from a
process pool with paths and gets small dicts back. Hot path, so:

* the file is read once (bytes -> hash -> pydicom), only the first frame is decoded;
* every grey-level mapping (modality LUT / rescale, MONOCHROME1 inversion, VOI LUT or
  window, robust percentiles) is evaluated once on the 2**BitsAllocated possible stored
  codes (<= 65536 values) and then applied to pixels by a single table look-up, so no
  float64 image is ever built and an ROI export only maps the pixels of its crop;
* percentiles come from a histogram of the codes (np.bincount), not a sort of the image.

Conventions
-----------
``unit``    modality (rescale / Modality LUT) values in display polarity, scaled to [0, 1]
            over the whole stored range [smin, smax] (signed PixelRepresentation handled)
            mapped through the modality transform; MONOCHROME1 is inverted. float32.
``display`` the VOI LUT Sequence (first item) when present, else the first Window
            Center/Width (VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID), else the
            0.5/99.5 percentiles of the frame's modality values; [0, 1] float32, bright = dense.
Boxes are (xmin, ymin, xmax, ymax) in 0-based pixel coordinates, max exclusive (numpy slices).
"""

from __future__ import annotations

import io
import json
import math
import struct
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import PIL
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from osteo.etl.errors import InputError
from osteo_common.files import atomic_write_bytes, sha256_bytes, sha256_file
from osteo.etl.quiet import unvalidated_reads

__all__ = [
    "ALGORITHM_VERSION",
    "DisplayMap",
    "ExportError",
    "atomic_write_bytes",
    "canonical_digest",
    "export_roi",
    "load_dicom",
    "measure_quality",
    "prepare_display",
    "read_dicom",
    "render_png",
    "sha256_file",
    "to_display",
]

# Bump when anything that changes exported pixels or decisions changes (it is in every transform).
ALGORITHM_VERSION = "1"

METAL_LEVEL = 0.95  # unit value at or above which a pixel counts as metal
PERCENTILES = (0.5, 99.5)  # robust display range when the file has no VOI
HISTOGRAM_SAMPLES = 1_000_000  # pixels sampled (at least) for the percentile histogram
# zlib level of the PNGs, fixed (part of what makes the bytes deterministic): level 1 encodes
# 2-3x faster than 6 for files ~10% bigger.
PNG_COMPRESS_LEVEL = 1
RENDER_COMPRESS_LEVEL = 1
_RESAMPLE = Image.Resampling.LANCZOS

_REQUIRED_PIXEL_TAGS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
)
_MONO = ("MONOCHROME1", "MONOCHROME2")
_UNDEFINED_LENGTH = 0xFFFFFFFF
_LATERALITY = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}
_EOF_WARNINGS = ("end of file", "before delimiter", "unexpected end")


class ExportError(InputError):
    """Bad input for render/export: quarantine it with `reason` (a short code) and go on.

    Reasons: file_not_found, unreadable_file, not_dicom, truncated, unreadable_dicom,
    missing_tag:<Keyword>, no_pixels, unsupported_pixel_format, unsupported_photometric,
    unsupported_bits, invalid_bits, unsupported_transfer_syntax, undecodable_pixels,
    invalid_modality_lut, invalid_voi_lut, invalid_laterality, invalid_box, empty_box,
    box_outside_image, box_too_small.
    """

    def __reduce__(self):  # survives the trip back from a process-pool worker
        return (type(self), (self.reason, self.detail))


# --------------------------------------------------------------------------- reading


def _read_source(src: str | PathLike[str] | bytes | bytearray | memoryview | BinaryIO) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if hasattr(src, "read"):
        return src.read()  # type: ignore[union-attr]
    try:
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
    raw = ds.get_item(keys[-1])
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
    with unvalidated_reads(), warnings.catch_warnings(record=True) as caught:
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
        except Exception as exc:  # noqa: BLE001 - any parser failure is a quarantine reason
            raise ExportError("unreadable_dicom", f"{type(exc).__name__}: {exc}") from exc
    _check_complete(ds, len(data), caught)
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
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ExportError("unsupported_pixel_format", "float pixel data is not a radiograph")
        raise ExportError("no_pixels", "the file has no Pixel Data element")
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
    if _tag_int(ds, "Rows") < 1 or _tag_int(ds, "Columns") < 1:
        raise ExportError("undecodable_pixels", "Rows/Columns is zero")


def _decode_first_frame(ds: Dataset) -> np.ndarray:
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if not ts:
        raise ExportError("missing_tag:TransferSyntaxUID", "no transfer syntax in the file meta")
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise ExportError("unsupported_transfer_syntax", f"{ts} ({getattr(ts, 'name', ts)})") from exc
    if not decoder.is_available:
        raise ExportError("unsupported_transfer_syntax", f"no decoder plugin installed for {ts.name}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr, _ = decoder.as_array(ds, index=0)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - Rust plugins panic with a BaseException
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


# --------------------------------------------------------------------------- grey levels


def _first(value: Any) -> float:
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0]
    return float(value)


def _window(m: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT) and C.11.2.1.3.1 (SIGMOID), to [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (m - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((m - center) / width + 0.5, 0.0, 1.0)
    c, w = center - 0.5, width - 1.0
    if w <= 0:  # width 1: a threshold at the center
        return (m > c).astype(np.float64)
    return np.clip((m - c) / w + 0.5, 0.0, 1.0)


def _voi_lut_sequence(m: np.ndarray, item: Dataset) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        desc = [int(v) for v in item.LUTDescriptor]
        n_entries = desc[0] or 65536
        first, nbits = desc[1], desc[2]
        lut_raw = item.LUTData
        if isinstance(lut_raw, (bytes, bytearray)):
            dtype = "<u1" if nbits <= 8 and len(lut_raw) == n_entries else "<u2"
            lut = np.frombuffer(lut_raw, dtype=dtype).astype(np.float64)
        else:
            lut = np.asarray(lut_raw, dtype=np.float64).ravel()
    except Exception as exc:  # noqa: BLE001
        raise ExportError("invalid_voi_lut", f"VOI LUT Sequence item unusable: {exc}") from exc
    if lut.size == 0:
        raise ExportError("invalid_voi_lut", "VOI LUT Sequence has an empty LUTData")
    if first >= 32768 and m.min() < 0:  # signed data with the first value encoded as US
        first -= 65536
    idx = np.clip(np.floor(m).astype(np.int64) - first, 0, lut.size - 1)
    out_max = max(float(2**nbits - 1), float(lut.max()), 1.0)
    info = {
        "source": "voi_lut_sequence",
        "first_mapped": first,
        "entries": int(lut.size),
        "bits": nbits,
        "lut_sha256": sha256_bytes(np.ascontiguousarray(lut, dtype="<f8").tobytes()),
        "explanation": str(item.get("LUTExplanation", ""))[:64],
    }
    return lut[idx] / out_max, info


@dataclass
class DisplayMap:
    """Grey-level mapping of one decoded frame: container code -> unit / display value."""

    codes: np.ndarray  # (rows, cols) uint8/uint16 raw codes of the frame (a view of the decode)
    unit_lut: np.ndarray  # float32, indexed by code
    display_lut: np.ndarray  # float32, indexed by code
    display_u8_lut: np.ndarray  # uint8 = rint(display * 255), indexed by code
    photometric: str
    window: dict[str, Any]
    frames: int
    frame_index: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape  # type: ignore[return-value]

    # np.take is about twice as fast as lut[codes] for uint16 indices
    def unit(self, region: tuple[slice, slice] | None = None) -> np.ndarray:
        return np.take(self.unit_lut, self.codes if region is None else self.codes[region])

    def display(self, region: tuple[slice, slice] | None = None) -> np.ndarray:
        return np.take(self.display_lut, self.codes if region is None else self.codes[region])

    def display_u8(self, region: tuple[slice, slice] | None = None) -> np.ndarray:
        return np.take(self.display_u8_lut, self.codes if region is None else self.codes[region])


def _histogram_stride(shape: tuple[int, ...]) -> int:
    """Sample every s-th row and column of big frames (>= ~1M samples stay): same percentiles
    to well under 0.01 percentile, 4x less work on a 2500x2000 radiograph."""
    return max(1, int(math.isqrt(int(shape[0]) * int(shape[1]) // HISTOGRAM_SAMPLES)))


def _percentile_window(m: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    stride = _histogram_stride(codes.shape)
    sample = codes if stride == 1 else codes[::stride, ::stride]
    counts = np.bincount(sample.ravel(), minlength=max(1 << (8 * codes.dtype.itemsize), m.size))
    counts = counts.reshape(-1, m.size).sum(axis=0)  # codes differing only above BitsStored are one value
    order = np.argsort(m, kind="stable")
    cum = np.cumsum(counts[order])
    total = float(cum[-1])
    # nearest rank: the smallest value whose cumulative share reaches p
    lo = float(m[order[min(int(np.searchsorted(cum, total * PERCENTILES[0] / 100.0)), m.size - 1)]])
    hi = float(m[order[min(int(np.searchsorted(cum, total * PERCENTILES[1] / 100.0)), m.size - 1)]])
    info: dict[str, Any] = {
        "source": "percentile",
        "percentiles": list(PERCENTILES),
        "histogram_stride": stride,
        "low": lo,
        "high": hi,
    }
    if not hi > lo:  # flat image: fall back to the full modality range
        lo, hi = float(m.min()), float(m.max())
        info["degenerate"] = True
        if not hi > lo:
            return np.zeros_like(m), info
    return np.clip((m - lo) / (hi - lo), 0.0, 1.0), info


def prepare_display(ds: Dataset) -> DisplayMap:
    """Decode the first frame and build its unit/display look-up tables."""
    _check_pixel_module(ds)
    arr = _decode_first_frame(ds)
    ba, bs = int(ds.BitsAllocated), int(ds.BitsStored)
    signed = int(ds.PixelRepresentation) == 1
    codes = _as_codes(arr, ba, signed)
    n = 1 << (8 * codes.dtype.itemsize)

    # Stored value of the codes 0 .. 2**BitsStored-1 (sign extended); codes that differ only in
    # the unused bits above BitsStored map to the same value, so the tables are tiled up to n.
    stored = np.arange(1 << bs, dtype=np.int64)
    if signed:
        stored = np.where(stored >= (1 << (bs - 1)), stored - (1 << bs), stored)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        raise ExportError("invalid_modality_lut", f"{type(exc).__name__}: {exc}") from exc
    if m.shape != stored.shape or not np.isfinite(m).all():
        raise ExportError("invalid_modality_lut", "modality transform gives non-finite values")

    m_lo, m_hi = float(m.min()), float(m.max())
    unit = (m - m_lo) / (m_hi - m_lo) if m_hi > m_lo else np.zeros_like(m)
    pi = str(ds.PhotometricInterpretation).strip().upper()

    window: dict[str, Any] | None = None
    display: np.ndarray | None = None
    voi_seq = ds.get("VOILUTSequence")
    if voi_seq:
        display, window = _voi_lut_sequence(m, voi_seq[0])
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        except (TypeError, ValueError, IndexError):
            center = width = float("nan")
        function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            function = "LINEAR"
        valid = math.isfinite(center) and math.isfinite(width) and width >= (1.0 if function == "LINEAR" else 1e-9)
        if valid:
            display = _window(m, center, width, function)
            window = {"source": "window", "center": center, "width": width, "function": function}
        else:
            window = {"ignored_window": [str(ds.WindowCenter), str(ds.WindowWidth)]}
    if display is None:
        display, pinfo = _percentile_window(m, codes)
        window = {**pinfo, **(window or {})}
    assert window is not None

    if pi == "MONOCHROME1":
        unit = 1.0 - unit
        display = 1.0 - display
    unit32 = unit.astype(np.float32)
    display32 = display.astype(np.float32)
    u8 = np.rint(display32 * np.float32(255.0)).astype(np.uint8)
    reps = n >> bs
    if reps > 1:
        unit32, display32, u8 = np.tile(unit32, reps), np.tile(display32, reps), np.tile(u8, reps)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    info = {
        "rows": int(ds.Rows),
        "cols": int(ds.Columns),
        "bits_allocated": ba,
        "bits_stored": bs,
        "signed": signed,
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        "modality_range": [m_lo, m_hi],
    }
    return DisplayMap(codes, unit32, display32, u8, pi, window, frames, 0, info)


def to_display(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(display, unit) of the first frame, both float32 in [0, 1], bright = dense."""
    dm = prepare_display(ds)
    return dm.display(), dm.unit()


# --------------------------------------------------------------------------- outputs


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


def render_png(dicom_path: Any, out_png: str | PathLike[str]) -> dict[str, Any]:
    """The whole first frame through the export's normalisation, as an 8-bit PNG (atomic)."""
    ds, data = load_dicom(dicom_path)
    dm = prepare_display(ds)
    png = _png_bytes(Image.fromarray(dm.display_u8()), RENDER_COMPRESS_LEVEL)
    atomic_write_bytes(out_png, png)
    return {
        "path": str(out_png),
        "rows": dm.shape[0],
        "cols": dm.shape[1],
        "photometric": dm.photometric,
        "frames": dm.frames,
        "frame_index": dm.frame_index,
        "transfer_syntax": dm.info["transfer_syntax"],
        "bits_stored": dm.info["bits_stored"],
        "window": dm.window,
        "sha256": sha256_bytes(png),
        "source_sha256": sha256_bytes(data),
    }


def measure_quality(unit_crop: np.ndarray, display_crop: np.ndarray) -> dict[str, float]:
    """metal_fraction = share of unit >= 0.95; blur_score = std of the 4-neighbour Laplacian
    of display*255 over the crop's interior (native resolution; 0 for crops under 3x3)."""
    metal = float(np.count_nonzero(unit_crop >= METAL_LEVEL)) / max(unit_crop.size, 1)
    d = np.asarray(display_crop, dtype=np.float32) * np.float32(255.0)
    if d.ndim != 2 or d.shape[0] < 3 or d.shape[1] < 3:
        blur = 0.0
    else:
        lap = d[:-2, 1:-1] + d[2:, 1:-1] + d[1:-1, :-2] + d[1:-1, 2:] - 4.0 * d[1:-1, 1:-1]
        blur = float(lap.std(dtype=np.float64))
    return {"metal_fraction": metal, "blur_score": blur}


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
) -> dict[str, Any]:
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
    if quality["metal_fraction"] > metal_threshold:
        exclusion: str | None = "metal"
    elif quality["blur_score"] < blur_threshold:
        exclusion = "blur"
    else:
        exclusion = None

    bw, bh = x1 - x0, y1 - y0
    mx, my = int(math.floor(margin * bw + 0.5)), int(math.floor(margin * bh + 0.5))
    crop = (max(0, x0 - mx), max(0, y0 - my), min(cols, x1 + mx), min(rows, y1 + my))
    flip = side == "R"
    transform = {
        "op": "export_roi",
        "box": [x0, y0, x1, y1],
        "box_requested": [float(v) for v in box],
        "crop": list(crop),
        "margin": float(margin),
        "size": size,
        "flip_horizontal": flip,
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
    result: dict[str, Any] = {
        "status": "excluded" if exclusion else "exported",
        "exclusion": exclusion,
        **quality,
        "path": None,
        "sha256": None,
        "transform": transform,
        "transform_digest": canonical_digest(transform),
        "source_sha256": sha256_bytes(data),
        "rows": rows,
        "cols": cols,
        "frames": dm.frames,
        "frame_index": dm.frame_index,
    }
    if exclusion:
        return result

    pix = dm.display_u8((slice(crop[1], crop[3]), slice(crop[0], crop[2])))
    if flip:
        pix = pix[:, ::-1]
    img = Image.fromarray(np.ascontiguousarray(pix))
    if img.size != (size, size):
        img = img.resize((size, size), resample=_RESAMPLE)
    png = _png_bytes(img)
    atomic_write_bytes(out_png, png)
    result["path"] = str(out_png)
    result["sha256"] = sha256_bytes(png)
    return result
