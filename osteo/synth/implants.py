"""Metal in the hip as it is seen on films: a hip arthroplasty (stem, head and cup), a dynamic hip
screw (lag screw, barrel and side plate with cortical screws) and cannulated screws, placed on the
femur's own axes so that they sit in the neck and shaft where a surgeon puts them."""

from __future__ import annotations

import numpy as np

from osteo.synth.anatomy import Femur
from osteo.synth.raycast import Body, Solid, frame_from_axis


def _rod(a, b, r: float, r2: float | None = None) -> Solid:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    half = float(np.linalg.norm(b - a)) / 2
    return Solid("cylinder", tuple((a + b) / 2), (float(r), float(r if r2 is None else r2), 1.0),  # type: ignore[arg-type]
                 frame_from_axis(b - a), (-half, half))


def _ball(c, r: float, planes=()) -> Solid:
    return Solid("ellipsoid", tuple(float(v) for v in c), (r, r, r), np.eye(3), (0.0, 0.0), tuple(planes))  # type: ignore[arg-type]


def implant_bodies(rng: np.random.Generator, kind: str, f: Femur) -> list[Body]:
    """Metal bodies for ``kind``: "stem" (arthroplasty) or "screw" (a dynamic hip screw or, on some
    films, three cannulated screws)."""
    n, down = f.neck_dir, f.shaft_dir
    lat = np.cross(down, np.cross(n, down))
    lat = -lat / np.linalg.norm(lat) if lat @ n > 0 else lat / np.linalg.norm(lat)
    if kind == "stem":
        head = _ball(f.head, f.radius * rng.uniform(0.85, 0.95))
        neck = _rod(f.head, f.base + down * 5, 6.0, 4.5)
        stem = _rod(f.base - n * 5 + down * 5, f.base + down * rng.uniform(120, 160), 8.0, 6.5)
        cup_r = f.radius + 3.0
        cup = Body((_ball(f.head, cup_r + 2.5, [((0.0, 1.0, 0.0), float(f.head[1]) + 4.0)]),),
                   (_ball(f.head, cup_r),))
        return [Body((head,)), Body((neck, stem)), cup]
    exit_pt = f.head - n * (f.neck_len + 18.0)  # through the lateral cortex below the greater trochanter
    if rng.random() < 0.6:  # dynamic hip screw
        lag = _rod(f.head + n * 0.55 * f.radius, exit_pt, 6.0)
        barrel = _rod(exit_pt + n * 30.0, exit_pt - n * 4.0, 9.5)
        plate_top = exit_pt - lat * 2.0
        plate = _rod(plate_top, plate_top + down * rng.uniform(80, 120), 9.0, 3.0)
        screws = [_rod(plate_top + down * (25 + 22 * k) - lat * 4, plate_top + down * (25 + 22 * k) + lat * 32, 2.4)
                  for k in range(int(rng.integers(2, 5)))]
        return [Body((lag,)), Body((barrel,)), Body((plate,)), *(Body((s,)) for s in screws)]
    across = f.neck_frame[:, 0]
    front = f.neck_frame[:, 1]
    offsets = [across * 6.5, -across * 6.5 + front * 5.0, -across * 6.5 - front * 5.0]
    return [Body((_rod(f.head + n * 0.6 * f.radius + o, exit_pt + o, 3.3),)) for o in offsets]
