"""DICOM factories the imaging tests share (make_ds, write, textured, png_chunks, BOX, _reason)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmwrite
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from osteo.etl import imaging as im

PATIENT_ID = "PID-7766554"
PATIENT_NAME = "WANG^XIAO MING"


# --------------------------------------------------------------------------- factories


def make_ds(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    bits_allocated: int = 16,
    signed: bool = False,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple | None = None,
    voi_function: str | None = None,
    frames: int = 1,
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = PATIENT_ID
    ds.PatientName = PATIENT_NAME
    ds.StudyDate = "20210315"
    ds.Modality = "DX"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept or 0.0, "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function:
        ds.VOILUTFunction = voi_function
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}
    ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype[(bits_allocated, signed)]).tobytes()
    return ds


def write(ds: FileDataset, path: Path, ts=ExplicitVRLittleEndian) -> Path:
    if ts in (RLELossless, JPEG2000Lossless):
        ds.compress(ts)
    elif ts == ExplicitVRBigEndian:
        arr = np.frombuffer(ds.PixelData, dtype="<u2" if ds.BitsAllocated == 16 else "u1")
        ds.PixelData = arr.astype(">u2" if ds.BitsAllocated == 16 else "u1").tobytes()
        ds.file_meta.TransferSyntaxUID = ts
        dcmwrite(path, ds, enforce_file_format=True)  # save_as refuses little -> big endian
        return path
    else:
        ds.file_meta.TransferSyntaxUID = ts
    ds.save_as(path, enforce_file_format=True)
    return path


def textured(rows=96, cols=96, lo=600, hi=3000, seed=0) -> np.ndarray:
    """Bone-like texture: smooth blob plus fine stripes and noise, inside [lo, hi]."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    rng = np.random.default_rng(seed)
    base = lo + (hi - lo) * (0.3 + 0.4 * np.exp(-((x - cols / 2) ** 2 + (y - rows / 2) ** 2) / (2 * (rows / 3) ** 2)))
    texture = 0.12 * (hi - lo) * np.sin(x / 1.7) * np.cos(y / 2.3) + rng.normal(0, 0.03 * (hi - lo), (rows, cols))
    return np.clip(base + texture, lo, hi).astype(np.uint16)


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return out


BOX = (24, 24, 72, 72)


def _available(uid) -> bool:
    try:
        return get_encoder(uid).is_available
    except Exception:  # noqa: BLE001
        return False


PYDICOM_FILES = Path(__import__("pydicom").__file__).parent / "data" / "test_files"


def _reason(fn, *args, **kwargs) -> str:
    with pytest.raises(im.ExportError) as info:
        fn(*args, **kwargs)
    assert info.value.detail
    return info.value.reason
