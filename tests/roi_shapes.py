"""Tiny stand-in radiographs for the localiser's tests: a stick femur (head, neck, greater
trochanter, shaft) on soft tissue, a hip film, an AP pelvis of any shape, and films that are not a
hip (chest, knee, noise, text, gradients) when the simulator's ``osteo.synth.nonhip`` is missing.

Display polarity (bright = bone), uint8. A left hip in the radiological convention: the femoral
head towards the image's left, the trochanter to its right; a right hip is the mirror image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def _soft_tissue(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:cols]
    body = (((xx - cols / 2) / (0.55 * cols)) ** 2 + ((yy - rows / 2) / (0.7 * rows)) ** 2) < 1
    return 25 + 45 * body + rng.normal(0, 6, (rows, cols))


def draw_femur(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, scale: float,
               mirrored: bool = False) -> tuple[float, float, float, float]:
    """Draw a left femur (``mirrored``: a right one) whose head centre is (cx, cy), head radius
    ``scale``; return its neck box (x0, y0, x1, y1)."""
    r = scale
    tx, ty = cx + 2.6 * r, cy + 1.3 * r  # greater trochanter
    pts = {"head": (cx, cy), "neck0": (cx + 0.8 * r, cy + 0.3 * r), "neck1": (tx - 0.5 * r, ty - 0.4 * r),
           "troch": (tx, ty - 0.3 * r), "shaft0": (tx - 0.6 * r, ty + 0.8 * r),
           "shaft1": (tx - 0.2 * r, img.shape[0] + 10)}
    if mirrored:
        pts = {k: (2 * cx - x, y) for k, (x, y) in pts.items()}
    canvas = Image.new("L", (img.shape[1], img.shape[0]), 0)
    d = ImageDraw.Draw(canvas)
    (hx, hy) = pts["head"]
    d.ellipse((hx - r, hy - r, hx + r, hy + r), fill=200)
    d.line([pts["neck0"], pts["neck1"]], fill=190, width=max(2, int(1.1 * r)))
    d.ellipse((pts["troch"][0] - 0.6 * r, pts["troch"][1] - 0.6 * r, pts["troch"][0] + 0.6 * r,
               pts["troch"][1] + 0.6 * r), fill=185)
    d.line([pts["shaft0"], pts["shaft1"]], fill=195, width=max(2, int(1.2 * r)))
    bone = np.asarray(canvas, dtype=np.float64)
    np.maximum(img, bone * rng.uniform(0.85, 1.0) + (bone > 0) * rng.normal(0, 5, img.shape), out=img)
    x0, x1 = cx + 0.3 * r, tx - 0.1 * r
    if mirrored:
        x0, x1 = 2 * cx - x1, 2 * cx - x0
    return (x0, cy - 0.9 * r, x1, ty + 0.5 * r)


def hip_film(rng: np.random.Generator, rows: int, cols: int, side: str = "L") -> tuple[np.ndarray, tuple]:
    """A hip film of one side (the radiological convention) and its neck box."""
    img = _soft_tissue(rng, rows, cols)
    r = rng.uniform(0.07, 0.1) * min(rows, cols)
    cx = rng.uniform(0.3, 0.45) * cols
    cy = rng.uniform(0.25, 0.45) * rows
    if side == "R":
        cx = cols - cx
    box = draw_femur(img, rng, cx, cy, r, mirrored=side == "R")
    return np.clip(img, 0, 255).astype(np.uint8), box


def pelvis_film(rng: np.random.Generator, rows: int, cols: int) -> tuple[np.ndarray, dict[str, tuple]]:
    """An AP pelvis (the patient's right hip on the image's left), hips near 0.2 and 0.8 of the width."""
    img = _soft_tissue(rng, rows, cols)
    r = rng.uniform(0.035, 0.045) * cols
    cy = rng.uniform(0.35, 0.5) * rows
    gap = rng.uniform(0.27, 0.31) * cols  # from the midline to each head
    boxes = {"R": draw_femur(img, rng, cols / 2 - gap, cy, r, mirrored=True),
             "L": draw_femur(img, rng, cols / 2 + gap, cy, r)}
    # the sacrum and the iliac wings: bright, above and between the hips
    yy, xx = np.mgrid[0:rows, 0:cols]
    sacrum = (((xx - cols / 2) / (0.08 * cols)) ** 2 + ((yy - 0.2 * rows) / (0.15 * rows)) ** 2) < 1
    img += 60 * sacrum
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def not_a_hip(kind: str, rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A film with no hip, uint8: the simulator's chest/knee/abdomen/lumbar where it has them, else
    a stand-in (chest: ribs and lungs; knee: two long bones end to end), or noise, text, gradient."""
    if kind in ("chest", "knee", "abdomen", "lumbar"):
        try:
            from osteo.synth.nonhip import render_nonhip
        except ImportError:
            render_nonhip = None
        if render_nonhip is not None:
            return (np.clip(render_nonhip(kind, rng, rows, cols), 0, 1) * 255).astype(np.uint8)
    img = _soft_tissue(rng, rows, cols)
    canvas = Image.new("L", (cols, rows), 0)
    d = ImageDraw.Draw(canvas)
    if kind == "chest":
        for k in range(9):
            y = rows * (0.15 + 0.08 * k)
            d.arc((0.1 * cols, y - 0.1 * rows, 0.9 * cols, y + 0.2 * rows), 200, 340, fill=170, width=4)
        d.line([(cols / 2, 0), (cols / 2, rows)], fill=200, width=int(0.06 * cols))
    elif kind == "knee":
        d.rectangle((0.4 * cols, 0, 0.6 * cols, 0.45 * rows), fill=190)
        d.ellipse((0.33 * cols, 0.38 * rows, 0.67 * cols, 0.5 * rows), fill=200)
        d.rectangle((0.38 * cols, 0.53 * rows, 0.62 * cols, rows), fill=190)
    elif kind == "text":
        img[:] = 10
        for k in range(8):
            d.text((rng.uniform(0, 0.5) * cols, k * rows / 8), "PATIENT 0042 AP 2021-03-12", fill=230)
    elif kind == "gradient":
        img = np.linspace(20, 220, cols)[None, :].repeat(rows, 0)
    elif kind == "noise":
        return rng.integers(0, 256, (rows, cols)).astype(np.uint8)
    bone = np.asarray(canvas, dtype=np.float64)
    return np.clip(np.maximum(img, bone), 0, 255).astype(np.uint8)
