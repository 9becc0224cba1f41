"""Radiographs that are not of the hip, from the same physics (raycast.py, film.py): an AP chest, an
AP knee, an abdomen (kidneys-ureters-bladder view, diaphragm to iliac crests, no hip joint) and an
AP lumbar spine. They are what a localiser must refuse: anything but a femoral neck gets no
confident box.

    frac = render_nonhip("chest", rng, rows, cols)   # float32 in [0, 1], bright = dense
"""

from __future__ import annotations

import numpy as np

from osteo.synth.anatomy import Bone
from osteo.synth.film import expose, process, wide_blur
from osteo.synth.raycast import Body, Camera, accumulate, cyl, ell, frame_from_axis, path_image, rotation

KINDS = ("chest", "knee", "abdomen", "lumbar")
MU_W, MU_B, MU_M = 0.0206, 0.0600, 0.0190


def _vertebra(yc: float, h: float, w: float, zc: float) -> Bone:
    from osteo.synth.raycast import Solid

    vb = Solid("cylinder", (0.0, yc, zc), (w, 0.7 * w, 1.0), frame_from_axis(np.array([0.0, 1.0, 0.0])),
               (-h / 2, h / 2))
    ped = [cyl((s * 0.6 * w, yc - h * 0.18, zc + 0.6 * w), (s * 0.62 * w, yc - h * 0.18, zc + 1.4 * w), 4.0, 6.0,
                up=np.array([0.0, 1.0, 0.0])) for s in (1.0, -1.0)]
    tps = [cyl((s * 0.5 * w, yc - 2, zc + 1.2 * w), (s * 1.9 * w, yc - 4, zc + 1.3 * w), 4.5, 4.0)
           for s in (1.0, -1.0)]
    spin = ell((0.0, yc + 8, zc + 2.2 * w), (3.5, 11.0, 13.0))
    outer = Body((vb, *ped, *tps, spin))
    inner = Body((vb.shrunk(1.0, 1.0), *(p.shrunk(1.0) for p in ped), *(p.shrunk(1.0) for p in tps), spin.shrunk(1.0)))
    return Bone("vertebra", outer, inner)


def _spine(y_top: float, y_bottom: float, w: float, zc: float, rng) -> list[Bone]:
    bones, y = [], y_top
    while y < y_bottom:
        h = rng.uniform(22.0, 28.0) * w / 25.0
        bones.append(_vertebra(y + h / 2, h, w, zc))
        y += h + rng.uniform(6.0, 10.0)
    return bones


def _chest(rng) -> tuple[list[Bone], Body, list[Body]]:
    hw, hd = rng.uniform(150, 190), rng.uniform(100, 130)
    body = Body((cyl((0.0, -320.0, 0.0), (0.0, 320.0, 0.0), hw, hd, up=np.array([0.0, 0.0, 1.0])),))
    lungs = [Body((ell((s * hw * 0.45, -20.0, 0.0), (hw * 0.38, 150.0, hd * 0.7)),)) for s in (1.0, -1.0)]
    bones = _spine(-230.0, 230.0, rng.uniform(17, 21), 0.55 * hd, rng)
    for k in range(11):  # ribs: arcs of short cylinders around the chest
        y0 = -190.0 + k * 33.0
        for s in (1.0, -1.0):
            pts = [np.array([s * hw * 0.9 * np.sin(a), y0 + 40 * np.sin(a) ** 2 + 10 * a, hd * 0.85 * np.cos(a) + 5])
                   for a in np.linspace(0.15, 2.8, 7)]
            bones += [Bone("rib", Body((cyl(a, b, 5.5, 3.5),)), Body((cyl(a, b, 4.3, 2.3),)))
                      for a, b in zip(pts[:-1], pts[1:], strict=True)]
    for s in (1.0, -1.0):
        a, b = (s * 15.0, -230.0, -hd * 0.8), (s * hw * 0.85, -250.0, -hd * 0.2)
        bones.append(Bone("clavicle", Body((cyl(a, b, 7, 6),)), Body((cyl(a, b, 5, 4),))))
    heart = Body((ell((rng.uniform(10, 35), 60.0, -20.0), (rng.uniform(55, 75), 65.0, 55.0)),))
    return bones, body, [*lungs, heart]


def _knee(rng) -> tuple[list[Bone], Body, list[Body]]:
    r = rng.uniform(55, 75)
    body = Body((cyl((0.0, -400.0, 0.0), (0.0, 400.0, 0.0), r, r * 0.95, up=np.array([0.0, 0.0, 1.0])),))
    gap = rng.uniform(4, 7)
    fem = [cyl((0.0, -400.0, 0.0), (0.0, -40.0, 0.0), 14.0, 13.0),
           ell((-20.0, -18.0, 5.0), (20.0, 22.0, 28.0)), ell((20.0, -18.0, 5.0), (20.0, 22.0, 28.0))]
    tib = [ell((0.0, 16.0 + gap, 3.0), (38.0, 14.0, 26.0), planes=[((0.0, -1.0, 0.0), -(gap + 2.0))]),
           cyl((0.0, 20.0, 3.0), (0.0, 400.0, 3.0), 16.0, 14.0)]
    fib = [cyl((32.0, 30.0, 15.0), (30.0, 400.0, 15.0), 7.0, 6.5), ell((32.0, 35.0, 15.0), (10.0, 10.0, 10.0))]
    pat = [ell((0.0, -30.0, -45.0), (22.0, 24.0, 9.0))]
    bones = []
    for name, parts, ct in (("femur", fem, 3.0), ("tibia", tib, 2.5), ("fibula", fib, 2.0), ("patella", pat, 1.5)):
        bones.append(Bone(name, Body(tuple(parts)), Body(tuple(p.shrunk(ct) for p in parts))))
    return bones, body, []


def _abdomen(rng, lumbar: bool) -> tuple[list[Bone], Body, list[Body]]:
    hw, hd = rng.uniform(150, 210), rng.uniform(100, 150)
    body = Body((cyl((0.0, -400.0, 0.0), (0.0, 400.0, 0.0), hw, hd, up=np.array([0.0, 0.0, 1.0])),))
    bones = _spine(-230.0, 120.0, rng.uniform(23, 27), 0.4 * hd, rng)
    for s in (1.0, -1.0):  # the iliac wings at the bottom of the field, never the hip joints
        wing = ell((s * 80.0, 150.0, 0.4 * hd), (55.0, 55.0, 6.0), rotation(ry=s * 40), [((0.0, 1.0, 0.0), 175.0)])
        bones.append(Bone("ilium", Body((wing,)), Body((wing.shrunk(1.3),))))
        for k in range(3):  # the lowest ribs
            a = np.array([s * 25.0, -230.0 + 30 * k, 0.6 * hd])
            b = np.array([s * hw * 0.85, -190.0 + 35 * k, 0.0])
            bones.append(Bone("rib", Body((cyl(a, b, 5.0, 3.5),)), Body((cyl(a, b, 3.8, 2.3),))))
    gas = [] if lumbar and rng.random() < 0.5 else [
        Body((ell((rng.uniform(-130, 130), rng.uniform(-150, 150), rng.uniform(-60, 20)), rng.uniform(8, 30, 3)),))
        for _ in range(int(rng.integers(3, 12)))]
    return bones, body, gas


def render_nonhip(kind: str, rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """One film of ``kind`` (KINDS) on a rows x cols grid: float32 display fractions in [0, 1]."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if kind == "chest":
        bones, body, air = _chest(rng)
        fov = rng.uniform(380, 430)
    elif kind == "knee":
        bones, body, air = _knee(rng)
        fov = rng.uniform(200, 260)
    else:
        bones, body, air = _abdomen(rng, kind == "lumbar")
        fov = rng.uniform(330, 430) if kind == "abdomen" else rng.uniform(250, 330)
    spacing = fov / max(rows, cols)
    z_det = 220.0
    cam = Camera(source=(rng.uniform(-10, 10), rng.uniform(-20, 20), z_det - 1000.0), z_det=z_det,
                 x0=-(cols - 1) / 2 * spacing, y0=-(rows - 1) / 2 * spacing, spacing=spacing, rows=rows, cols=cols,
                 pose=rotation(rx=rng.uniform(-5, 5), ry=rng.uniform(-5, 5), rz=rng.uniform(-8, 8)))
    mu = np.zeros((rows, cols), dtype=np.float32)
    accumulate(mu, cam, body, MU_W)
    for a in air:
        lp, win = path_image(cam, a)
        if win is not None:
            r0, r1, c0, c1 = win
            k = 0.0 if kind == "chest" and a is air[-1] else MU_W  # the heart is soft tissue (no contrast)
            mu[r0:r1, c0:c1] -= lp * np.float32(k * (0.75 if kind == "chest" else 1.0))
    for b in bones:
        lo, win = path_image(cam, b.outer)
        if win is None:
            continue
        r0, r1, c0, c1 = win
        li, _ = path_image(cam, b.inner, win) if b.inner is not None else (np.zeros_like(lo), None)
        mu[r0:r1, c0:c1] += np.maximum(lo - li, 0) * (MU_B - MU_W) + li * (MU_M + 0.22 * (MU_B - MU_M) - MU_W)
    sig = expose(rng, mu, cam, "DX" if rng.random() < 0.5 else "CR")
    body_mask = mu > 0.6 * float(np.percentile(mu, 90))
    return process(rng, sig, body_mask, spacing) if body_mask.any() else wide_blur(sig, 1.0)
