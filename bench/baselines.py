"""Plain baselines for `osteo bench`: the simplest honest code a user would write for each step."""

from __future__ import annotations

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels.processing import apply_voi_lut


def plain_export(dicom_path, out_png) -> None:
    """Decode, window, save: pydicom.dcmread -> pixel_array -> apply_voi_lut -> min/max to uint8 -> PNG."""
    ds = pydicom.dcmread(dicom_path)
    arr = ds.pixel_array
    if arr.ndim == 3:  # multi-frame: the first frame
        arr = arr[0]
    arr = apply_voi_lut(arr, ds).astype(np.float64)
    lo, hi = arr.min(), arr.max()
    arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = 255.0 - arr
    Image.fromarray(arr.astype(np.uint8)).save(out_png)
