"""Image-quality measures of a crop: metal (implant) share and blur (Laplacian spread)."""

from __future__ import annotations

import numpy as np

METAL_LEVEL = 0.95  # unit value at or above which a pixel counts as metal


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


def exclusion_of(quality: dict[str, float], metal_threshold: float, blur_threshold: float) -> str | None:
    """Why a crop is not used: 'metal' when metal_fraction > metal_threshold, elif 'blur' when
    blur_score < blur_threshold, else None (the export and the screening judge alike)."""
    if quality["metal_fraction"] > metal_threshold:
        return "metal"
    return "blur" if quality["blur_score"] < blur_threshold else None
