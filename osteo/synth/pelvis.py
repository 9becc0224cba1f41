"""AP pelvis phantom: both hips on one canvas, in standard radiological orientation.

The patient's RIGHT hip is on the image's LEFT half (a mirrored left-hip rendering, head towards the
midline) and the patient's LEFT hip on the RIGHT half; PatientOrientation is then L\\F (moving right
across columns goes towards the patient's left).  Some images are stored mirrored (columns reversed,
PatientOrientation R\\F).  The halves are two renderings of phantom.render_hip sharing the patient's
BMD, one exposure/gamma/noise/soft-tissue look (so the midline shows no step in brightness), and
nearly the same hip size and head position.

A pelvis image never carries an implant or motion blur (its exclusions are always "none").
"""

from __future__ import annotations

import numpy as np

from osteo.synth.phantom import Rendered, draw_look, render_hip


def _mirror_box(b: tuple[int, int, int, int], cols: int) -> tuple[int, int, int, int]:
    return (cols - 1 - b[2], b[1], cols - 1 - b[0], b[3])


def render_pelvis(
    rng: np.random.Generator,
    *,
    rows: int,
    cols: int,
    bmd: float,
    rotation_deg: float,
    mirrored: bool = False,
    centred: bool = False,
) -> Rendered:
    """Both hips; boxes {"R": ..., "L": ...} in the stored image's pixel coordinates (after mirroring)."""
    look = draw_look(rng, centred)
    # one patient: nearly the same hip size and head position on both sides
    neck, hx, hy = rng.uniform(0.075, 0.14), rng.uniform(0.24, 0.50), rng.uniform(0.22, 0.48)
    fade = 0.12 * cols / 2  # the pelvic bones fade out towards the midline, where the halves meet
    sides = [{"neck_frac": neck * rng.uniform(0.97, 1.03), "head_x": hx + rng.uniform(-0.03, 0.03),
              "head_y": hy + rng.uniform(-0.02, 0.02), "medial_fade": fade} for _ in range(2)]
    w_r = cols // 2  # the image's left half: the patient's right hip
    w_l = cols - w_r
    # the right hip is the mirror of a left-hip rendering, so its rotation is mirrored too: both
    # halves then turn the same way on the image
    right = render_hip(rng, rows=rows, cols=w_r, bmd=bmd, laterality="R", rotation_deg=-rotation_deg, look=look,
                       **sides[0])
    left = render_hip(rng, rows=rows, cols=w_l, bmd=bmd, laterality="L", rotation_deg=rotation_deg, look=look,
                      **sides[1])
    frac = np.concatenate([right.frac, left.frac], axis=1)
    xb = left.boxes["L"]
    boxes = {"R": right.boxes["R"], "L": (xb[0] + w_r, xb[1], xb[2] + w_r, xb[3])}
    if mirrored:
        frac = frac[:, ::-1].copy()
        boxes = {side: _mirror_box(b, cols) for side, b in boxes.items()}
    return Rendered(frac=frac, metal=np.zeros(frac.shape, dtype=bool), boxes=boxes)
