"""One AP hip or AP pelvis film of an anatomy (anatomy.py), exposed as a radiograph is.

The physics, in order: the cone-beam line integral of linear attenuation through soft tissue, fat,
bowel gas, cortical and trabecular bone and metal (raycast.py; coefficients at an effective energy
near 60 keV, scaled by the tube voltage); Beer-Lambert; the anode heel effect; scatter (a wide blur
of the primary, less behind a grid); quantum noise (Poisson, as a Gaussian of the photon count);
the detector's blur (CR wider than DX); the log signal; then the vendor's processing that makes a
film look like one (dynamic-range compression, edge enhancement, a tone curve). On top: collimator
edges, grid lines, lead L/R markers, and on some films a viewer's text and scale bar.

The femoral neck's trabecular bone is an oriented texture: the compressive group from the calcar to
the weight-bearing head, the tensile group arching from the lateral cortex to the inferior head,
Ward's triangle between them; with low BMD the tensile group fades first and Ward's triangle
empties (Singh's index), the strands thin, and the cortex thins (anatomy.py). The image's brightness
is set by exposure and processing, never by the label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from osteo.synth.anatomy import Anatomy, Femur, build_anatomy
from osteo.synth.implants import implant_bodies
from osteo.synth.overlay import burn_text, lead_marker
from osteo.synth.raycast import Camera, accumulate, path_image, rotation, smooth_path

ANATOMY_LO, ANATOMY_HI = 0.05, 0.80  # display fractions of the stored range for anatomy
METAL_LO, METAL_HI = 0.975, 0.995
BOX_MARGIN = 4  # px every truth box keeps from the image's edges

MU_WATER, MU_FAT, MU_MARROW, MU_BONE = 0.0206, 0.0180, 0.0190, 0.0600  # per mm, ~60 keV
MU_METAL = 1.2


@dataclass
class Rendered:
    frac: np.ndarray  # float32 (rows, cols), display polarity, fraction of the stored range
    metal: np.ndarray  # bool (rows, cols)
    boxes: dict[str, tuple[int, int, int, int]]  # patient side -> (xmin, ymin, xmax, ymax), inclusive
    burned_text: bool = False  # a viewer's text or scale bar is in the pixels


def _oriented(rng, shape, period: float, theta: float, sharp: float = 16.0) -> np.ndarray:
    """Zero-mean unit-variance noise of strands running along ``theta`` (radians, image axes)."""
    fy = sp_fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = sp_fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    fr = np.sqrt(fx * fx + fy * fy) + np.float32(1e-6)
    radial = np.exp(-0.5 * ((np.log(fr) + np.float32(np.log(period))) / np.float32(0.3)) ** 2)
    ang = np.abs(np.cos(np.arctan2(fy, fx) - np.float32(theta + np.pi / 2))) ** sharp if sharp > 0 else 1.0
    # np.asarray: scipy.fft is typed as returning its dispatchables; it returns the arrays, not copied here
    spectrum = np.asarray(sp_fft.rfft2(rng.standard_normal(shape, dtype=np.float32)))
    g = np.asarray(sp_fft.irfft2(spectrum * (radial * ang), s=shape))
    return ((g - g.mean()) / (g.std() + 1e-9)).astype(np.float32)


def _tube(shape, pts: np.ndarray, width: float) -> np.ndarray:
    """exp(-d^2 / 2 w^2) of each pixel's distance d to the polyline ``pts`` (n, 2) as (col, row)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    best = np.full(shape, np.inf, dtype=np.float32)
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        ab = b - a
        t = np.clip(((xx - a[0]) * ab[0] + (yy - a[1]) * ab[1]) / max(float(ab @ ab), 1e-6), 0, 1)
        best = np.minimum(best, (xx - a[0] - t * ab[0]) ** 2 + (yy - a[1] - t * ab[1]) ** 2)
    return np.exp(-best / (2 * width * width))


def _bezier(a, c, b, n: int = 12) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t * t * b


def femur_bvtv(rng, cam: Camera, f: Femur, p: dict[str, float]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Bone volume fraction of the femur's trabecular bone over a window around its proximal end."""
    q, bv = p["q"], p["bvtv"]
    px = {k: cam.project(v[None])[0] for k, v in f.landmarks.items()}
    head = cam.project(f.head[None])[0]
    mm = cam.spacing / cam.magnification(0.0)  # mm in the patient per pixel
    rad = 3.6 * f.radius / mm
    c0, c1 = int(max(0, head[0] - rad)), int(min(cam.cols, head[0] + rad))
    r0, r1 = int(max(0, head[1] - rad * 0.8)), int(min(cam.rows, head[1] + rad * 1.6))
    shape = (max(r1 - r0, 8), max(c1 - c0, 8))
    off = np.array([c0, r0], dtype=np.float64)
    period = (1.2 + 3.0 * (1 - q)) / mm * rng.uniform(0.94, 1.06)  # strands thin and far apart at low BMD
    comp_dir = px["head_top"] - px["calcar"]
    tens_dir = px["head_bottom"] - px["lateral"]
    comp = _oriented(rng, shape, period, float(np.arctan2(comp_dir[1], comp_dir[0])))
    tens = _oriented(rng, shape, period * 1.1, float(np.arctan2(tens_dir[1], tens_dir[0])))
    w = f.radius / mm
    w_comp = _tube(shape, np.stack([px["calcar"], px["head_top"]]) - off, 0.55 * w)
    arch = _bezier(px["lateral"], (px["troch"] + px["head_top"]) / 2 - 0.2 * (px["calcar"] - px["troch"]),
                   px["head_bottom"])
    w_tens = _tube(shape, arch - off, 0.45 * w)
    w_head = _tube(shape, np.stack([head, head]) - off, 0.8 * w)
    w2 = 0.05 + 0.95 * q  # the tensile group is lost first
    g = (0.35 + w_comp + 0.5 * w_head) * comp + w2 * w_tens * tens
    g = g + 0.5 * _oriented(rng, shape, period * 1.3, 0.0, sharp=0)
    ward = _tube(shape, np.stack([px["ward"], px["ward"]]) - off, 0.45 * w)
    g = g - (1.0 - q) * 2.0 * ward  # Ward's triangle empties
    frac_on = float(np.clip(bv * 1.6, 0.08, 0.7))
    thr = float(np.quantile(g[::3, ::3], 1.0 - frac_on))
    strands = 1.0 / (1.0 + np.exp(-(2.0 + 2.0 * q) * (g - thr) / 0.35))
    # a dense connected network projects as a contrasted pattern; a sparse one fades
    bvtv = bv * (1 + (0.25 + 0.85 * q) * (strands / max(float(strands.mean()), 1e-6) - 1))
    return bvtv.astype(np.float32), (r0, r0 + shape[0], c0, c0 + shape[1])


def draw_camera(rng, anat: Anatomy, view: str, side: str, rows: int, cols: int, spacing: float,
                rotation_deg: float) -> Camera:
    p = anat.params
    z_det = p["z_body"] + p["half_d"] + rng.uniform(40.0, 70.0)
    sid = rng.uniform(1000.0, 1150.0)
    mag = sid / (sid - z_det)
    if view == "pelvis":
        fov_h = rows * spacing
        top = -150.0 * mag - rng.uniform(10.0, 35.0)  # the iliac crests in the field, often L4-L5
        cy = top + fov_h / 2 if fov_h < 400 else rng.uniform(10.0, 45.0)
        cx = rng.uniform(-15.0, 15.0)
    else:
        s = 1.0 if side == "L" else -1.0
        cx = s * (p["hip_half"] + rng.uniform(-5.0, 25.0)) * mag
        cy = rng.uniform(20.0, 55.0) * mag
    pose = rotation(rx=rng.uniform(-8.0, 8.0), ry=rng.uniform(-7.0, 7.0), rz=rotation_deg)
    return Camera(source=(float(cx), float(cy), float(z_det - sid)), z_det=float(z_det),
                  x0=float(cx - (cols - 1) / 2 * spacing), y0=float(cy - (rows - 1) / 2 * spacing),
                  spacing=float(spacing), rows=int(rows), cols=int(cols), pose=pose,
                  pivot=(float(cx / mag), float(cy / mag), 0.0))


def _fit_boxes(cam: Camera, anat: Anatomy, sides: list[str]) -> tuple[Camera, dict[str, tuple[float, ...]]]:
    """Shift the detector (the patient lies a little off centre) until every truth box is inside."""
    for _ in range(3):
        boxes = {}
        for s in sides:
            uv = cam.project(anat.femora[s].neck_region())
            boxes[s] = (uv[:, 0].min() + 0.5, uv[:, 1].min() + 0.5, uv[:, 0].max() + 0.5, uv[:, 1].max() + 0.5)
        lo_x = min(b[0] for b in boxes.values())
        hi_x = max(b[2] for b in boxes.values())
        lo_y = min(b[1] for b in boxes.values())
        hi_y = max(b[3] for b in boxes.values())
        dx = max(0.0, BOX_MARGIN + 2 - lo_x) - max(0.0, hi_x - (cam.cols - 1 - BOX_MARGIN - 2))
        dy = max(0.0, BOX_MARGIN + 2 - lo_y) - max(0.0, hi_y - (cam.rows - 1 - BOX_MARGIN - 2))
        if dx == 0 and dy == 0:
            return cam, boxes
        cam = Camera(cam.source, cam.z_det, cam.x0 - dx * cam.spacing, cam.y0 - dy * cam.spacing, cam.spacing,
                     cam.rows, cam.cols, cam.pose, cam.pivot)
    return cam, boxes


def line_integrals(rng, cam: Camera, anat: Anatomy, kv: float) -> np.ndarray:
    """Sum of mu * path over every tissue, per pixel (before any implant)."""
    p = anat.params
    mu = np.zeros((cam.rows, cam.cols), dtype=np.float32)
    mw, mf = MU_WATER * kv, MU_FAT * kv
    # soft tissue with a little texture (fascial planes, muscle bundles)
    tex = 1.0 + 0.015 * np.asarray(ndimage.zoom(rng.standard_normal((cam.rows // 8 + 2, cam.cols // 8 + 2))
                                                .astype(np.float32), 8, order=1))[:cam.rows, :cam.cols]
    mu += smooth_path(cam, anat.soft) * np.float32(mf)
    mu += smooth_path(cam, anat.muscle) * (mw - mf) * tex
    for g in anat.gas:
        mottled = rng.random() < 0.5
        lp, win = path_image(cam, g)
        if win is None:
            continue
        r0, r1, c0, c1 = win
        k = np.float32(mw)
        if mottled:  # stool: gas bubbles in a solid mass
            k = k * np.clip(0.55 + 0.45 * ndimage.gaussian_filter(rng.standard_normal(lp.shape), 1.5) * 3, 0, 1)
        mu[r0:r1, c0:c1] -= lp * k
    bone_k = kv ** 2.2  # bone contrast falls faster with tube voltage than water's
    mb, mm_ = MU_BONE * bone_k, MU_MARROW * kv
    bv_other = p["bvtv_other"]
    for bone in anat.bones:
        win = cam.window(*bone.outer.bound())
        if win is None:
            continue
        lo, _ = path_image(cam, bone.outer, win)
        r0, r1, c0, c1 = win
        if bone.inner is None:
            mu[r0:r1, c0:c1] += lo * (mb - mw)
            continue
        li, _ = path_image(cam, bone.inner, win)
        if bone.name.startswith("femur"):
            f = anat.femora[bone.side]
            bv_map, (a0, a1, b0, b1) = femur_bvtv(rng, cam, f, p)
            bv = np.full(lo.shape, 0.04, dtype=np.float32)  # the shaft's medullary canal
            # proximal trabecular bone: the window around the neck, fading into the canal
            if min(a1, r1) - max(a0, r0) < 2 or min(b1, c1) - max(b0, c0) < 2:  # that femur's neck is off the film
                bv = np.float32(bv_other)
                cortex = np.maximum(lo - li, 0)
                mu[r0:r1, c0:c1] += cortex * (mb - mw) + li * (mm_ + bv * (mb - mm_) - mw)
                continue
            ys = slice(max(a0, r0) - r0, min(a1, r1) - r0)
            xs = slice(max(b0, c0) - c0, min(b1, c1) - c0)
            sub = bv_map[max(a0, r0) - a0:min(a1, r1) - a0, max(b0, c0) - b0:min(b1, c1) - b0]
            fade = _fade_down(cam, f, (max(a0, r0), min(a1, r1), max(b0, c0), min(b1, c1)))
            bv[ys, xs] = sub * fade + 0.04 * (1 - fade)
        else:
            bv = np.float32(bv_other)
        cortex = np.maximum(lo - li, 0)
        mu[r0:r1, c0:c1] += cortex * (mb - mw) + li * (mm_ + bv * (mb - mm_) - mw)
    return mu


def _fade_down(cam: Camera, f: Femur, win: tuple[int, int, int, int]) -> np.ndarray:
    """1 above the lesser trochanter, 0 in the diaphysis (the trabecular bone ends there)."""
    r0, r1, c0, c1 = win
    a = cam.project((f.base + f.shaft_dir * 45)[None])[0]
    b = cam.project((f.base + f.shaft_dir * 85)[None])[0]
    d = b - a
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    t = ((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / max(float(d @ d), 1e-6)
    return np.clip(1 - t, 0, 1).astype(np.float32)


def expose(rng, mu: np.ndarray, cam: Camera, modality: str) -> np.ndarray:
    """Detector signal (log exposure, larger = more attenuation) of the line integrals."""
    rows, cols = mu.shape
    primary = np.exp(-mu.astype(np.float64))
    heel = rng.uniform(-0.15, 0.15)
    axis = np.linspace(-0.5, 0.5, rows)[:, None] if rng.random() < 0.8 else np.linspace(-0.5, 0.5, cols)[None, :]
    primary = primary * (1 + heel * axis)
    spr = rng.uniform(0.25, 1.2)
    total = primary + spr * wide_blur(primary, rng.uniform(40, 80) / cam.spacing)
    # the detector's blur spreads the signal; the quantum noise of the absorbed photons stays fine-grained
    blur = rng.uniform(0.5, 0.9) if modality == "CR" else rng.uniform(0.3, 0.6)
    total = ndimage.gaussian_filter(total, blur)
    n0 = 10 ** rng.uniform(4.5, 5.2)  # photons per pixel unattenuated
    counts = rng.poisson(np.clip(total * n0, 0, 1e9)).astype(np.float64) + rng.normal(0, 2.0, total.shape)
    return (-np.log(np.clip(counts, 1.0, None) / n0)).astype(np.float32)


def wide_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """A wide Gaussian blur, computed on a smaller copy when the kernel is wide (same result to the eye)."""
    f = int(max(1, min(8, sigma_px // 4)))
    if f == 1:
        return ndimage.gaussian_filter(img, sigma_px, mode="nearest")
    small = np.asarray(ndimage.zoom(img, 1 / f, order=1))  # np.asarray: the arrays scipy returns, typed loosely
    small = np.asarray(ndimage.gaussian_filter(small, sigma_px / f, mode="nearest"))
    out = np.asarray(ndimage.zoom(small, (img.shape[0] / small.shape[0], img.shape[1] / small.shape[1]), order=1))
    return out[: img.shape[0], : img.shape[1]]


def process(rng, sig: np.ndarray, body: np.ndarray, spacing: float) -> np.ndarray:
    """Vendor-style multi-scale processing to a display image in [0, 1] (bright = dense): the body's
    range normalised, the widest scales compressed (a thin thigh and a thick pelvis both readable),
    bone-sized detail kept, fine edges enhanced, then a tone curve."""
    vals = sig[body] if body.any() else sig.ravel()
    lo, hi = np.percentile(vals[:: max(1, vals.size // 20000)], [0.5, 99.7])
    s = (sig - lo) / max(hi - lo, 1e-6)
    low = wide_blur(s, rng.uniform(25, 50) / spacing)
    mid = wide_blur(s, rng.uniform(2.5, 5.0) / spacing)
    s = (rng.uniform(0.1, 0.3) * (low - float(np.median(low[body]) if body.any() else low.mean()))
         + rng.uniform(0.9, 1.2) * (mid - low) + rng.uniform(1.2, 2.0) * (s - mid))
    ref = (s[body] if body.any() else s.ravel())[:: max(1, int(body.sum()) // 20000)]
    lo, hi = np.percentile(ref, [1.0, 99.5])
    lin = np.clip((s - lo) / max(hi - lo, 1e-6), 0, 1)
    # the look-up table: partly the body's own histogram (every tissue gets grey levels), partly linear
    grid = np.sort(ref)
    eq = np.interp(s, grid, np.linspace(0, 1, grid.size))
    a = rng.uniform(0.35, 0.7)
    out = a * eq + (1 - a) * lin
    k = rng.uniform(1.5, 3.5)
    m = rng.uniform(0.45, 0.55)
    out = (np.tanh(k * (out - m)) - np.tanh(-k * m)) / (np.tanh(k * (1 - m)) - np.tanh(-k * m))
    return np.clip(out, 0, 1).astype(np.float32) ** np.float32(rng.uniform(0.85, 1.2))


def render_film(rng: np.random.Generator, *, view: str, laterality: str, rows: int, cols: int, spacing: float,
                bmd: float, sex: str = "F", modality: str = "DX", rotation_deg: float = 0.0,
                implant: str | None = None, blur_sigma: float = 0.0, centred: bool = False,
                mirrored: bool = False, extras: bool = True) -> Rendered:
    """One film. ``view`` "pelvis" (both hips; boxes R and L) or "hip" (``laterality`` L or R)."""
    anat = build_anatomy(rng, sex=sex, bmd=bmd)
    sides = ["L", "R"] if view == "pelvis" else [laterality]
    cam = draw_camera(rng, anat, view, laterality, rows, cols, spacing, rotation_deg)
    cam, fboxes = _fit_boxes(cam, anat, sides)
    kv = rng.uniform(0.88, 1.12)
    mu = line_integrals(rng, cam, anat, kv)
    metal_len = np.zeros_like(mu)
    if implant:
        for b in implant_bodies(rng, implant, anat.femora[laterality]):
            accumulate(metal_len, cam, b, 1.0)
    mu += metal_len * MU_METAL
    marker_side = laterality if view == "hip" else ("L" if rng.random() < 0.5 else "R")
    marker = lead_marker(rng, rows, cols, spacing, marker_side) if extras and rng.random() < 0.8 else None
    if marker is not None:
        mu += marker * 4.0
    sig = expose(rng, mu, cam, modality)
    body = mu > 1.2  # thicker than about 6 cm of water: tissue, not the skin edge or air
    disp = process(rng, sig, body, spacing)
    burned = False
    if extras:
        disp = _collimate(rng, disp)
        if rng.random() < 0.3:
            disp = _grid_lines(rng, disp)
        if rng.random() < 0.35:
            disp = burn_text(rng, disp, spacing)
            burned = True
    if centred:
        lo, hi = rng.uniform(0.18, 0.28), rng.uniform(0.72, ANATOMY_HI)
    else:
        lo, hi = rng.uniform(ANATOMY_LO, 0.14), rng.uniform(0.55, ANATOMY_HI)
    frac = (lo + (hi - lo) * disp).astype(np.float32)
    if blur_sigma > 0:
        frac = ndimage.gaussian_filter(frac, blur_sigma)
    frac = np.clip(frac, ANATOMY_LO, ANATOMY_HI).astype(np.float32)
    metal = metal_len > 0.5
    if metal.any():
        frac[metal] = rng.uniform(METAL_LO, METAL_HI - 0.004) + rng.uniform(0, 0.004, int(metal.sum()))
    boxes = {s: _int_box(b, cols, rows) for s, b in fboxes.items()}
    if mirrored:
        frac, metal = frac[:, ::-1].copy(), metal[:, ::-1].copy()
        boxes = {s: (cols - 1 - b[2], b[1], cols - 1 - b[0], b[3]) for s, b in boxes.items()}
    return Rendered(frac=frac, metal=metal, boxes=boxes, burned_text=burned)


def _int_box(b, cols: int, rows: int) -> tuple[int, int, int, int]:
    return (int(np.clip(round(b[0]), 0, cols - 1)), int(np.clip(round(b[1]), 0, rows - 1)),
            int(np.clip(round(b[2]), 0, cols - 1)), int(np.clip(round(b[3]), 0, rows - 1)))


def _collimate(rng, disp: np.ndarray) -> np.ndarray:
    """Collimator blades on some films: outside the field only scatter reaches the plate (bright)."""
    if rng.random() < 0.45:
        return disp
    rows, cols = disp.shape
    t, b = (rng.uniform(0, 0.05, 2) * rows).astype(int)
    left, right = (rng.uniform(0, 0.06, 2) * cols).astype(int)
    out = disp.copy()
    level = rng.uniform(0.85, 1.0)
    out[:t] = level
    out[rows - b:] = level
    out[:, :left] = level
    out[:, cols - right:] = level
    return out


def _grid_lines(rng, disp: np.ndarray) -> np.ndarray:
    """A stationary grid aliased to a fine stripe pattern (vertical or horizontal)."""
    rows, cols = disp.shape
    period = rng.uniform(2.2, 6.0)
    amp = rng.uniform(0.004, 0.015)
    if rng.random() < 0.7:
        stripe = np.sin(2 * np.pi * np.arange(cols) / period)[None, :]
    else:
        stripe = np.sin(2 * np.pi * np.arange(rows) / period)[:, None]
    return np.clip(disp + amp * stripe, 0, 1).astype(np.float32)
