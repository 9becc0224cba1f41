"""The seed's augmentation, seeded and reproducible.

The seed project rotated each training image by a random angle in [-20, 20] degrees and, with
probability 0.3, changed its brightness; each image got one augmented copy. We reproduce it:

- rotation: angle ~ U(-20, 20) degrees, about the image centre, bilinear interpolation, same
  canvas size, corners filled with black (0) — the torchvision ``RandomRotation`` default fill;
- brightness: with probability 0.3, factor ~ U(0.7, 1.3) applied with PIL's
  ``ImageEnhance.Brightness`` (pixel * factor, clipped to 0..255). This is what torchvision's
  ``RandomApply([ColorJitter(brightness=0.3)], p=0.3)`` does, the most likely reading of the
  report; the report does not state the range.

Parameters are drawn first (:func:`draw_params`) and applied deterministically
(:func:`apply_params`), so a copy is fully described by its params dict, which is stored with
it for lineage. Offline copies (:func:`materialize_copies`) are the seed's method; the
on-the-fly transform (:class:`SeededAugment`) does the same thing per epoch.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from osteo_common.files import atomic_write_bytes, sha256_bytes, sha256_file

MAX_ROTATION_DEG = 20.0
BRIGHTNESS_P = 0.3
BRIGHTNESS_RANGE = (0.7, 1.3)
AUGMENT_VERSION = "rot20-bright0.3-v1"  # bump when the recipe changes (part of lineage)


def draw_params(rng: np.random.Generator) -> dict:
    """Draw one set of augmentation parameters. Always consumes exactly three draws."""
    angle = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    apply_brightness = bool(rng.uniform() < BRIGHTNESS_P)
    factor = float(rng.uniform(*BRIGHTNESS_RANGE))
    return {"angle": angle, "brightness": factor if apply_brightness else 1.0}


def apply_params(img: Image.Image, params: dict) -> Image.Image:
    """Apply ``params`` to ``img`` (deterministic). Returns an 8-bit grayscale image."""
    img = img.convert("L")
    angle = float(params.get("angle", 0.0))
    if angle:
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=0)
    factor = float(params.get("brightness", 1.0))
    if factor != 1.0:
        img = ImageEnhance.Brightness(img).enhance(factor)
    return img


def copy_seed(seed: int, member_id: int, copy_index: int) -> int:
    """Seed of one copy, derived from (seed, member_id, copy index) only, so it does not
    change when other images join or leave the training set."""
    ss = np.random.SeedSequence([int(seed), int(member_id), int(copy_index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes without metadata (no text chunks, no timestamps): same pixels -> same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _sha256_file(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


COPY_COLUMNS = ("source_member_id", "copy_index", "seed", "params", "augment_version", "path", "sha256", "written")


def write_copy(src_img: Image.Image, rec: dict, member_id: int, out: Path, *, seed: int, copy_index: int) -> dict:
    """Copy `copy_index` of the source row `rec` (member `member_id`, its image `src_img`): drawn with its own
    seed, written unless the file is there with the same bytes; returns the copy's row (see materialize_copies)."""
    s = copy_seed(seed, member_id, copy_index)
    params = draw_params(np.random.default_rng(s))
    data = encode_png(apply_params(src_img, params))
    digest = sha256_bytes(data)
    path = out / f"{member_id}_aug{copy_index}.png"
    written = _sha256_file(path) != digest
    if written:
        atomic_write_bytes(path, data)
    row = {k: v for k, v in rec.items() if k not in ("member_id", "source_member_id")}
    row.update(
        source_member_id=member_id,
        copy_index=copy_index,
        seed=s,
        params=params,
        augment_version=AUGMENT_VERSION,
        path=str(path),
        sha256=digest,
        written=written,
    )
    return row


def materialize_copies(
    train_df: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    seed: int,
    copies: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Write ``copies`` augmented copies of every row of ``train_df`` under ``out_dir``.

    ``train_df`` holds original images (columns member_id, path, label, patient_key and,
    usually, split, fold, laterality, study_year). Copy ``c`` of member ``m`` is
    ``out_dir/m_aug{c}.png``, drawn with ``copy_seed(seed, m, c)``. A file that already exists
    with the expected hash is not rewritten (idempotent); others are written atomically.

    Returns one row per copy: every column of the source row except ``member_id`` (so split,
    fold, label, patient_key, laterality... are inherited), plus ``source_member_id``,
    ``copy_index``, ``seed``, ``params`` (dict), ``augment_version``, ``path`` (str),
    ``sha256`` and ``written`` (False when the file was already there).
    ``progress(done, total)`` is called after each image.
    """
    if "source_member_id" in train_df.columns and train_df["source_member_id"].notna().any():
        raise ValueError("materialize_copies takes original images, not augmented copies")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    total = len(train_df)
    for i, rec in enumerate(train_df.to_dict("records"), start=1):
        member_id = int(rec["member_id"])
        with Image.open(rec["path"]) as src:
            src_img = src.convert("L")
            src_img.load()
        rows.extend(write_copy(src_img, rec, member_id, out, seed=seed, copy_index=c) for c in range(copies))
        if progress is not None:
            progress(i, total)
    cols = [c for c in train_df.columns if c not in ("member_id", "source_member_id")]
    cols = list(dict.fromkeys([*cols, *COPY_COLUMNS]))
    return pd.DataFrame(rows, columns=cols)


class SeededAugment:
    """On-the-fly version of the same augmentation, a torchvision-style callable on PIL images.

    Each call draws its parameters from ``rng`` when given, else from a numpy Generator
    seeded from torch's global RNG (one ``torch.randint`` draw) — which DataLoader seeds per
    worker from its own generator, so a seeded loader gives the same augmentations every run.
    """

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        if rng is None:
            import torch

            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return apply_params(img, draw_params(rng))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(degrees={MAX_ROTATION_DEG}, p_brightness={BRIGHTNESS_P}, "
            f"brightness={BRIGHTNESS_RANGE})"
        )
