"""Tiny synthetic femur-like PNGs for the osteo_model tests (not a test module).

Label signal = texture contrast (class 1 = weaker "trabecular" contrast); the mean intensity
(exposure) is random and independent of the label, so only a model that looks at the bone
texture can separate the classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def toy_image(label: int, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    v, u = np.mgrid[0:size, 0:size] / size
    tex = np.zeros((size, size))
    for _ in range(5):
        theta = rng.uniform(0, np.pi)
        f = rng.uniform(6, 14)
        tex += np.cos(2 * np.pi * f * (u * np.cos(theta) + v * np.sin(theta)) + rng.uniform(0, 6.3))
    tex /= 5 ** 0.5
    contrast = 34.0 if label == 0 else 14.0
    exposure = rng.uniform(90, 165)
    img = exposure + contrast * tex + rng.normal(0, 6, (size, size))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def toy_manifest(
    root: Path,
    n_patients: int = 60,
    *,
    seed: int = 0,
    years=(2018, 2019, 2020, 2021, 2022, 2023),
    size: int = 256,
    write: bool = True,
    p_pos: float = 0.35,
) -> pd.DataFrame:
    """A manifest like the export's: 1-3 images per patient, both sides, several years."""
    rng = np.random.default_rng(seed)
    rows = []
    mid = 0
    for p in range(n_patients):
        label = int(rng.uniform() < p_pos)
        for _ in range(int(rng.integers(1, 4))):
            mid += 1
            lat = "L" if rng.uniform() < 0.55 else "R"
            year = int(rng.choice(years))
            path = root / f"m{mid}.png"
            if write:
                write_png(path, toy_image(label, rng, size))
            rows.append(dict(member_id=mid, path=str(path), label=label,
                             patient_key=f"P{p:04d}", laterality=lat, study_year=year))
    return pd.DataFrame(rows)


def toy_set(root: Path, n: int, *, seed: int = 0, size: int = 64) -> tuple[list[str], list[int]]:
    """n PNGs with alternating labels: (paths, labels)."""
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for i in range(n):
        y = i % 2
        paths.append(str(write_png(root / f"t{i}.png", toy_image(y, rng, size))))
        labels.append(y)
    return paths, labels
