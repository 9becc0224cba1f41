"""What films carry besides anatomy: the radiographer's lead L/R marker (exposed with the patient),
and a viewer's burned-in text and scale bar on some exports. No text names a patient."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

VIEWER_TEXT = ("AP", "SUPINE", "PELVIS AP", "HIP AP", "STANDING", "PORTABLE", "W:4095 L:2048", "100%", "1:1",
               "Se: 1", "Im: 1", "DR", "CR")


def _text_mask(text: str, height_px: int) -> np.ndarray:
    font = ImageFont.load_default(size=max(6, int(height_px)))
    box = tuple(int(v) for v in font.getbbox(text))  # whole pixels (typed float: fonts of any kind)
    w, h = box[2] - box[0] + 4, box[3] - box[1] + 4
    img = Image.new("L", (max(w, 1), max(h, 1)), 0)
    ImageDraw.Draw(img).text((2 - box[0], 2 - box[1]), text, fill=255, font=font)
    return np.asarray(img, dtype=np.float32) / 255.0


def lead_marker(rng: np.random.Generator, rows: int, cols: int, spacing: float, side: str,
                mirrored: bool = False) -> np.ndarray:
    """A lead letter (L or R, 12-20 mm) in the upper lateral corner of the patient's ``side``
    (standard AP: the patient's right is on the image's left)."""
    out = np.zeros((rows, cols), dtype=np.float32)
    m = _text_mask(side, int(rng.uniform(12, 20) / spacing))
    if rng.random() < 0.5:  # a marker in a holder: a frame around the letter
        m = np.pad(m, 3)
        m[:2], m[-2:], m[:, :2], m[:, -2:] = 1, 1, 1, 1
    h, w = m.shape
    if h >= rows // 3 or w >= cols // 3:
        return out
    on_left = (side == "R") != mirrored
    x = int(rng.uniform(0.03, 0.12) * cols) if on_left else cols - w - int(rng.uniform(0.03, 0.12) * cols)
    y = int(rng.uniform(0.03, 0.2) * rows)
    out[y:y + h, x:x + w] = m
    return out


def burn_text(rng: np.random.Generator, disp: np.ndarray, spacing: float) -> np.ndarray:
    """A viewer's annotations burned into the pixels: a few words in the corners, on some a scale bar."""
    rows, cols = disp.shape
    out = disp.copy()
    level = float(rng.uniform(0.9, 1.0))
    for _ in range(int(rng.integers(1, 4))):
        text = VIEWER_TEXT[int(rng.integers(len(VIEWER_TEXT)))]
        m = _text_mask(text, int(rng.uniform(0.018, 0.03) * rows))
        h, w = m.shape
        if h >= rows // 4 or w >= cols // 2:
            continue
        dy, dx = int(rng.uniform(0.01, 0.06) * rows), int(rng.uniform(0.01, 0.05) * cols)
        y = dy if rng.random() < 0.5 else rows - h - dy
        x = dx if rng.random() < 0.5 else cols - w - dx
        region = out[y:y + h, x:x + w]
        out[y:y + h, x:x + w] = region * (1 - m) + level * m
    if rng.random() < 0.5:  # a 10 cm scale bar with 1 cm ticks
        n = int(round(100 / spacing))
        if n < cols * 0.6:
            y = rows - int(rng.uniform(0.04, 0.09) * rows)
            x = int(rng.uniform(0.05, 0.3) * cols)
            out[y:y + 2, x:x + n] = level
            for k in range(11):
                xt = x + int(round(k * n / 10))
                out[y - (6 if k % 5 == 0 else 3):y, xt:xt + 1] = level
    return out
