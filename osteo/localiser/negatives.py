"""Negative views for the localiser's presence head: what a femoral neck is not.

On real films the demo localiser put confident boxes on the sacroiliac joints: it had only ever
seen hip views, so it found the most neck-like thing in whatever it was shown. It now also learns
from views with no neck, made here (layer osteo: osteo_model gets plain arrays):

- crops of the training films away from the neck (a box's visible share at most
  ``MAX_VISIBLE``): of an AP pelvis the middle (sacrum, symphysis) and random windows (ilium,
  sacroiliac joints, the lumbar spine where a film shows it, the shafts), of a hip film random
  windows;
- other radiographs: chest, knee, abdomen and lumbar spine films from the simulator
  (``osteo.synth.nonhip.render_nonhip``) when it is installed;
- noise, blanks and text are made on the torch side (osteo_model.roi_augment).

Each negative is a whole "hip view" of its crop (mirrored or not at random), letterboxed like any
view, so it looks exactly like what a wrong hypothesis shows the localiser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

NEG_VERSION = "neg-v1"  # part of the dataset digest: bump when the recipe changes
NONHIP_KINDS = ("chest", "knee", "abdomen", "lumbar")
MAX_VISIBLE = 0.2  # a crop may show at most this share of any neck box
CROPS = {"B": 3, "L": 1, "R": 1}  # away-from-the-neck crops per film (an AP pelvis: its middle + 2)


def nonhip_renderer() -> Callable[..., np.ndarray] | None:
    """``render_nonhip(kind, rng, rows, cols)`` of the simulator, or None where it is not installed."""
    try:
        from osteo.synth.nonhip import render_nonhip
    except ImportError:
        return None
    return render_nonhip


def visible_share(box: Sequence[float], window: tuple[int, int, int, int]) -> float:
    """Share of ``box`` (x0, y0, x1, y1) inside ``window`` (x0, y0, x1, y1)."""
    bx0, by0, bx1, by1 = (float(v) for v in box)
    wx0, wy0, wx1, wy1 = window
    inside = max(0.0, min(bx1, wx1) - max(bx0, wx0)) * max(0.0, min(by1, wy1) - max(by0, wy0))
    return inside / max(1e-9, (bx1 - bx0) * (by1 - by0))


def away_windows(rows: int, cols: int, boxes: Sequence[Sequence[float]], rng: np.random.Generator, n: int,
                 pelvis: bool) -> list[tuple[int, int, int, int]]:
    """Up to ``n`` windows of the film that show no neck: a pelvis's middle (between its two boxes)
    first, then random windows (20-90 % of the rows, 20-70 % of the columns), 40 tries each."""
    out: list[tuple[int, int, int, int]] = []
    if pelvis and len(boxes) == 2 and n:
        first, second = sorted(boxes, key=lambda b: b[0])
        lo, hi = int(np.ceil(first[2])), int(second[0])
        if hi - lo >= 0.12 * cols:
            out.append((lo, 0, hi, rows))
    for _ in range(40 * n):
        if len(out) >= n:
            break
        h, w = int(rng.uniform(0.2, 0.9) * rows), int(rng.uniform(0.2, 0.7) * cols)
        if h < 16 or w < 16:
            continue
        y0, x0 = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
        window = (x0, y0, x0 + w, y0 + h)
        if all(visible_share(b, window) <= MAX_VISIBLE for b in boxes):
            out.append(window)
    return out


def crop_view(display: np.ndarray, window: tuple[int, int, int, int], flip: bool, size: int) -> np.ndarray:
    """The size x size view input of one window of a film, as if it were a whole hip image."""
    from osteo_model.roi import HipView, view_input

    x0, y0, x1, y1 = window
    crop = display[y0:y1, x0:x1]
    return view_input(crop, HipView("L", 0, crop.shape[1], crop.shape[0], flip), size)


def film_negatives(display: np.ndarray, laterality: str, boxes: Sequence[Sequence[float]], size: int,
                   seed: Sequence[int]) -> list[np.ndarray]:
    """The away-from-the-neck views of one boxed film (seeded by ``seed``: the same views every time)."""
    rng = np.random.default_rng(list(seed))
    rows, cols = display.shape
    windows = away_windows(rows, cols, boxes, rng, CROPS.get(laterality, 1), laterality == "B")
    return [crop_view(display, w, bool(rng.integers(0, 2)), size) for w in windows]


def nonhip_negatives(n: int, size: int, seed: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """``n`` views of other radiographs (each kind in turn; portrait, landscape or square), and
    their kinds; none where the simulator has no ``render_nonhip``."""
    render = nonhip_renderer()
    if render is None or n <= 0:
        return np.zeros((0, size, size), np.float32), []
    rng = np.random.default_rng(list(seed))
    views, kinds = [], []
    for i in range(n):
        kind = NONHIP_KINDS[i % len(NONHIP_KINDS)]
        long = int(rng.integers(200, 280))  # the view is 160 px: a bigger film only costs time
        short = int(long * rng.uniform(0.7, 1.0))
        rows, cols = (long, short) if rng.random() < 0.5 else (short, long)
        img = np.clip(np.asarray(render(kind, rng, rows, cols), dtype=np.float32), 0, 1)
        views.append(crop_view(img, (0, 0, img.shape[1], img.shape[0]), bool(rng.integers(0, 2)), size))
        kinds.append(kind)
    return np.stack(views), kinds
