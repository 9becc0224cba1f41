"""AP hip radiograph phantom.

Everything is drawn analytically in a canonical frame of a LEFT hip (femoral
head on the image left, greater trochanter on the right, shaft going down) and
evaluated on the output pixel grid through an inverse rigid transform, so
rotation and translation cost no interpolation.  Right hips are the horizontal
mirror image of the left-hip rendering.

The label signal is in the bone: the trabecular pattern (spacing, bone volume
fraction, strand thickness, loss of the secondary "tensile" group, loss of
connectivity) and the cortical thickness follow the BMD.  The texture is made
mean-preserving over the femoral-neck box, and exposure/contrast/gamma, soft
tissue, noise and position vary per image, so that the mean brightness of the
neck box carries almost no information on the label.

Position, scale and rotation vary widely (neck width 7.5-14% of min(rows, cols), head centre over
22-55% of the width and 20-50% of the height, plus a translation); the translation is clamped so the
whole neck box stays BOX_MARGIN px inside the image.  An AP pelvis (pelvis.py) is two such hips
sharing one exposure "look" (draw_look).

Output: a float display-polarity image ("bright = dense") already mapped to the
fraction of the stored range (anatomy within [0.05, 0.80]), a metal mask, and
the tight femoral-neck box per patient side in pixel coordinates of the returned image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

ANATOMY_LO = 0.05
ANATOMY_HI = 0.80
METAL_LO = 0.975
METAL_HI = 0.995

BMD_LO, BMD_HI = 0.35, 1.10  # g/cm2 range mapped to the texture quality q in [0, 1]


@dataclass
class Rendered:
    frac: np.ndarray  # float32 (rows, cols), display polarity, fraction of stored range
    metal: np.ndarray  # bool (rows, cols)
    boxes: dict[str, tuple[int, int, int, int]]  # patient side -> xmin, ymin, xmax, ymax (tight neck box, inclusive)


BOX_MARGIN = 4  # px the whole neck box keeps from every image edge


def draw_look(rng: np.random.Generator, centred: bool = False) -> dict[str, float]:
    """Exposure, gamma, noise and soft-tissue parameters of one image (label-independent); the two
    halves of an AP pelvis share one look, so the midline shows no step."""
    look = {"gamma": rng.uniform(0.75, 1.35)}
    if centred:  # anatomy centred on the middle of the stored range (symmetric VOI windows)
        look["lo"], look["hi"] = rng.uniform(0.18, 0.28), rng.uniform(0.72, ANATOMY_HI)
    else:
        look["lo"], look["hi"] = rng.uniform(ANATOMY_LO, 0.14), rng.uniform(0.55, ANATOMY_HI)
    look["noise"] = rng.uniform(0.005, 0.012) * (look["hi"] - look["lo"]) / 0.6
    look["st_base"] = rng.uniform(0.16, 0.30)
    look["skin_x"], look["skin_k"] = rng.uniform(0.90, 1.05), rng.uniform(2.5, 5.0)
    look["grad_u"], look["grad_v"] = rng.uniform(-0.25, 0.25), rng.uniform(-0.2, 0.2)
    return {k: float(v) for k, v in look.items()}


def _smooth_inside(sdf: np.ndarray, edge: float = 1.2) -> np.ndarray:
    """Soft mask from a signed distance (negative inside)."""
    return np.clip(0.5 - sdf / (2.0 * edge), 0.0, 1.0)


def _sdf_capsule(u, v, a, b, r):
    """Signed distance to a capsule from point a to point b with radius r (r may be an array)."""
    ax, ay = float(a[0]), float(a[1])
    bx, by = float(b[0]), float(b[1])
    pax, pay = u - ax, v - ay
    bax, bay = bx - ax, by - ay
    h = np.clip((pax * bax + pay * bay) / (bax * bax + bay * bay), 0.0, 1.0)
    dx, dy = pax - bax * h, pay - bay * h
    return np.sqrt(dx * dx + dy * dy) - r


def _sdf_ellipse(u, v, c, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (good near the edge)."""
    x, y = (u - float(c[0])) / float(rx), (v - float(c[1])) / float(ry)
    k = np.sqrt(x * x + y * y)
    return (k - 1.0) * min(rx, ry)


def _smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


@lru_cache(maxsize=8)
def _freq_grid(rows: int, cols: int):
    fy = sp_fft.fftfreq(rows).astype(np.float32)[:, None]
    fx = sp_fft.rfftfreq(cols).astype(np.float32)[None, :]
    fr = np.sqrt(fx * fx + fy * fy) + np.float32(1e-6)
    phi = np.arctan2(fy, fx)
    return np.log(fr), phi


def _band(logfr, phi, period, theta, ang_sharp, bw):
    """Log-radial band around 1/period; angular selectivity for strands running along theta."""
    radial = np.exp(-0.5 * ((logfr + np.float32(np.log(period))) / np.float32(bw)) ** 2)
    if ang_sharp <= 0:
        return radial
    c = np.abs(np.cos(phi - np.float32(theta + np.pi / 2)))
    return radial * c**ang_sharp


def _texture_fields(rng, shape, period, theta_c, w2):
    """Two trabecular groups (compressive along theta_c, tensile across) and a break-up field,
    all from one white-noise spectrum (the bands barely overlap)."""
    logfr, phi = _freq_grid(*shape)
    n = rng.standard_normal(shape, dtype=np.float32)
    f = sp_fft.rfft2(n)
    b1 = _band(logfr, phi, period, theta_c, 8, 0.35)
    b2 = _band(logfr, phi, period * 1.1, theta_c + np.pi / 2, 8, 0.35)
    e1, e2 = float(np.sqrt((b1 * b1).mean())), float(np.sqrt((b2 * b2).mean()))
    filt = b1 / e1 + np.float32(w2) * b2 / e2
    g = sp_fft.irfft2(f * filt, s=shape)
    g /= g.std() + 1e-9
    bb = _band(logfr, phi, period * 2.5, 0.0, 0, 0.5)
    brk = sp_fft.irfft2(f * bb, s=shape)
    brk /= brk.std() + 1e-9
    return g.astype(np.float32), brk.astype(np.float32)


def _shift(t: float, lo: float, hi: float, size: int) -> float:
    """The translation nearest ``t`` that keeps [lo + t, hi + t] within [BOX_MARGIN, size - 1 - BOX_MARGIN]."""
    a, b = BOX_MARGIN - lo, size - 1 - BOX_MARGIN - hi
    return float(np.clip(t, a, b)) if a <= b else (a + b) / 2.0


def bmd_quality(bmd: float) -> float:
    return float(np.clip((bmd - BMD_LO) / (BMD_HI - BMD_LO), 0.0, 1.0))


def render_hip(
    rng: np.random.Generator,
    *,
    rows: int,
    cols: int,
    bmd: float,
    laterality: str,
    rotation_deg: float,
    implant: str | None = None,
    blur_sigma: float = 0.0,
    centred: bool = False,
    look: dict[str, float] | None = None,
    neck_frac: float | None = None,
    head_x: float | None = None,
    head_y: float | None = None,
    medial_fade: float = 0.0,
) -> Rendered:
    """One hip of side ``laterality`` (L | R) on a rows x cols canvas; ``look`` (draw_look), the neck
    width (fraction of min(rows, cols)) and the canonical head centre (fractions of cols, rows) are
    drawn here unless given. ``medial_fade`` > 0 fades the pelvic bones out over that many px towards
    the medial edge (an AP pelvis half: the two halves meet there). Returns boxes {laterality: box}."""
    q = bmd_quality(bmd)
    H, W = rows, cols
    m = min(H, W)
    if look is None:
        look = draw_look(rng, centred)
    L = m * (rng.uniform(0.075, 0.14) if neck_frac is None else neck_frac)  # neck width in px
    # head centre in the canonical (unrotated) frame
    ox = W * (rng.uniform(0.22, 0.55) if head_x is None else head_x)
    oy = H * (rng.uniform(0.20, 0.50) if head_y is None else head_y)
    rot = float(np.deg2rad(rotation_deg))
    cx, cy = W / 2.0, H / 2.0

    neck_ang = np.deg2rad(rng.uniform(36, 46))  # neck axis below horizontal
    d = np.array([np.cos(neck_ang), np.sin(neck_ang)])
    nrm = np.array([-d[1], d[0]])
    origin = np.array([ox, oy])
    R = L * rng.uniform(0.70, 0.78)  # head radius
    neck_end = origin + 2.2 * L * d
    troch_c = origin + 2.35 * L * d + np.array([0.45 * L, -0.55 * L])
    shaft_top = origin + 2.4 * L * d + np.array([0.05 * L, 0.2 * L])
    shaft_dir = np.array([rng.uniform(0.02, 0.12), 1.0])
    shaft_dir /= np.linalg.norm(shaft_dir)
    shaft_bot = shaft_top + shaft_dir * (H * 1.5)
    shaft_r = 0.62 * L

    # ---- neck box (canonical points of the neck body, rotated about the centre), then a translation
    # that keeps the whole box inside the image with BOX_MARGIN px to spare
    ts = np.linspace(0.62 * L, 1.95 * L, 24)
    ss = np.linspace(-1, 1, 9)
    Tm, Sm = np.meshgrid(ts, ss)
    rad = 0.5 * L * (0.92 + 0.35 * np.clip(Tm / (2.2 * L) - 0.55, 0, None) ** 1.5 * 4)
    Pu = origin[0] + Tm * d[0] + Sm * rad * nrm[0]
    Pv = origin[1] + Tm * d[1] + Sm * rad * nrm[1]
    c2, s2 = np.cos(rot), np.sin(rot)
    Px = c2 * (Pu - cx) - s2 * (Pv - cy) + cx
    Py = s2 * (Pu - cx) + c2 * (Pv - cy) + cy
    tx = _shift(rng.uniform(-0.04, 0.04) * W, float(Px.min()), float(Px.max()), W)
    ty = _shift(rng.uniform(-0.04, 0.04) * H, float(Py.min()), float(Py.max()), H)
    box = [float(Px.min()) + tx, float(Py.min()) + ty, float(Px.max()) + tx, float(Py.max()) + ty]
    bx0, by0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    bx1, by1 = min(W - 1, int(round(box[2]))), min(H - 1, int(round(box[3])))

    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    # inverse transform: output pixel -> canonical coordinates
    px, py = xx - cx - tx, yy - cy - ty
    cr, sr = float(np.cos(-rot)), float(np.sin(-rot))
    u = cr * px - sr * py + cx
    v = sr * px + cr * py + cy
    del px, py

    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731  (keep the grids in float32)
    origin, d, nrm, neck_end, troch_c = f32(origin), f32(d), f32(nrm), f32(neck_end), f32(troch_c)
    shaft_top, shaft_dir, shaft_bot = f32(shaft_top), f32(shaft_dir), f32(shaft_bot)

    # ---- signed distances of the femur parts
    sd_head = np.sqrt((u - origin[0]) ** 2 + (v - origin[1]) ** 2) - R
    # neck radius: narrow waist in the middle, flaring toward the trochanter
    tpar = ((u - origin[0]) * d[0] + (v - origin[1]) * d[1]) / (2.2 * L)
    neck_r = 0.5 * L * (0.92 + 0.35 * np.clip(tpar - 0.55, 0, None) ** 1.5 * 4)
    sd_neck = _sdf_capsule(u, v, origin, neck_end, neck_r)
    sd_troch = _sdf_ellipse(u, v, troch_c, 0.75 * L, 0.95 * L)
    sd_shaft = _sdf_capsule(u, v, shaft_top, shaft_bot, shaft_r)
    lt_c = f32(shaft_top + np.array([-0.7 * L, 0.9 * L]))
    sd_lt = _sdf_ellipse(u, v, lt_c, 0.35 * L, 0.45 * L)
    sd_fem = _smin(sd_neck, sd_head, 0.25 * L)
    sd_fem = _smin(_smin(_smin(sd_fem, sd_troch, 0.5 * L), sd_shaft, 0.6 * L), sd_lt, 0.3 * L)
    fem = _smooth_inside(sd_fem)

    # ---- cortex: thickness follows BMD (neck thin, shaft thick)
    ct_neck = L * (0.035 + 0.085 * q) * rng.uniform(0.9, 1.1)
    ct_shaft = L * (0.14 + 0.20 * q) * rng.uniform(0.9, 1.1)
    along_shaft = (u - shaft_top[0]) * shaft_dir[0] + (v - shaft_top[1]) * shaft_dir[1]
    w_shaft = np.clip(along_shaft / (1.2 * L), 0.0, 1.0)
    ct = ct_neck * (1 - w_shaft) + ct_shaft * w_shaft
    cortex = fem * np.clip(1.0 - (-sd_fem) / ct, 0.0, 1.0) ** 0.7
    # medullary canal in the shaft: little trabecular bone
    medulla = w_shaft * _smooth_inside(sd_shaft + ct_shaft, 2.0)

    # ---- trabecular texture (the label signal)
    period = L * (0.085 + 0.11 * (1.0 - q)) * rng.uniform(0.93, 1.07)
    theta_c = np.arctan2(d[1], d[0]) + rot - np.deg2rad(rng.uniform(55, 70))  # compressive group
    theta_c + np.pi / 2  # tensile group
    w2 = 0.15 + 0.85 * q  # the secondary group is lost first in osteoporosis
    g, brk = _texture_fields(rng, (H, W), period, theta_c, w2)
    # connectivity loss: low-frequency break-up of strands at low BMD
    g = g - np.float32((1.0 - q) * 0.9) * np.clip(brk, 0, None)
    bvtv = 0.22 + 0.33 * q  # bone volume fraction
    thr = float(np.quantile(g[::7, ::7], 1.0 - bvtv))
    sharp = 2.0 + 2.0 * q  # thick smooth vs thin crisp strands
    strands = 1.0 / (1.0 + np.exp(-sharp * (g - thr) / 0.35))
    strands = strands.astype(np.float32)

    # ---- compose the femur so the neck-box mean does not depend on texture or cortex
    tex_w = fem * (1.0 - 0.85 * medulla)
    sl = (slice(by0, by1 + 1), slice(bx0, bx1 + 1))
    tex = strands - float((strands[sl] * tex_w[sl]).sum() / max(tex_w[sl].sum(), 1e-6))
    b_trab = rng.uniform(0.22, 0.34)
    c_amp = rng.uniform(0.30, 0.42)
    t_amp = rng.uniform(0.16, 0.24)
    femur = fem * b_trab + tex_w * t_amp * tex + c_amp * cortex
    target = rng.uniform(0.20, 0.30)  # mean femur density over the box, BMD-independent
    cur = float(femur[sl].mean())
    femur = femur + (target - cur) * fem / max(float(fem[sl].mean()), 1e-6)

    # ---- pelvis: ilium, acetabular roof, pubis/ischium with obturator foramen
    sd_il = _sdf_ellipse(u, v, origin + np.array([-0.4 * L, -2.9 * L]), 3.2 * L, 2.3 * L)
    ilium = _smooth_inside(sd_il, 3.0)
    du, dv = u - origin[0], v - origin[1]
    rr = np.sqrt(du * du + dv * dv)
    # the acetabular roof: the arc above the head, running a little below horizontal laterally
    above = dv < np.float32(0.15) * np.maximum(du, 0)
    roof = _smooth_inside(np.abs(rr - R * 1.22) - 0.16 * L, 1.5) * above
    sd_isch = _sdf_ellipse(u, v, origin + np.array([-1.2 * L, 2.1 * L]), 1.7 * L, 1.4 * L)
    sd_obt = _sdf_ellipse(u, v, origin + np.array([-1.25 * L, 2.15 * L]), 1.0 * L, 0.72 * L)
    isch = _smooth_inside(np.maximum(sd_isch, -sd_obt), 1.5)
    pel_tex = ndimage.uniform_filter(strands, 3) - 0.5
    pelvis = (ilium + isch) * (rng.uniform(0.18, 0.26) + 0.08 * pel_tex) + rng.uniform(0.25, 0.4) * roof

    # ---- soft tissue, with a skin line on the lateral side (air beyond)
    st_base = look["st_base"]
    skin_x = W * look["skin_x"] - (v - H / 2) ** 2 / (H * look["skin_k"])
    body = _smooth_inside(u - skin_x, 6.0)
    grad = 1.0 + look["grad_u"] * (u / W - 0.5) + look["grad_v"] * (v / H - 0.5)
    soft = body * st_base * grad * (1.0 - 0.35 * np.clip((u - skin_x + 0.25 * W) / (0.25 * W), 0, 1))

    if medial_fade > 0:  # the medial edge is column 0 before a right hip is mirrored
        ramp = np.clip(xx[:1] / np.float32(medial_fade), 0.0, 1.0)
        pelvis = pelvis * (ramp * ramp * (3 - 2 * ramp))
    dens = soft + body * (pelvis + femur)
    del u, v, xx, yy

    # ---- exposure: gamma and range mapping (random, label-independent)
    dens = np.clip(dens / 1.25, 0.0, 1.0)
    dens = dens ** np.float32(look["gamma"])
    lo, hi = look["lo"], look["hi"]
    frac = lo + (hi - lo) * dens
    frac = frac + rng.standard_normal(frac.shape).astype(np.float32) * np.float32(look["noise"])
    if blur_sigma > 0:
        frac = ndimage.gaussian_filter(frac, blur_sigma)
    frac = np.clip(frac, ANATOMY_LO, ANATOMY_HI).astype(np.float32)

    # ---- metal implant (placed in output coordinates through the same transform)
    metal = np.zeros((H, W), dtype=bool)
    if implant:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        px, py = xx - cx - tx, yy - cy - ty
        u = cr * px - sr * py + cx
        v = sr * px + cr * py + cy
        if implant == "screw":
            lat_x = shaft_top[0] + shaft_r + 0.15 * L
            t_exit = max((lat_x - origin[0]) / d[0], 2.6 * L)
            a = origin - 0.2 * R * d
            b = origin + t_exit * d
            sd = _sdf_capsule(u, v, a, b, 0.16 * L)
            plate_a = b - shaft_dir * 0.4 * L
            plate_b = plate_a + shaft_dir * 3.2 * L
            sd = np.minimum(sd, _sdf_capsule(u, v, plate_a, plate_b, 0.13 * L))
        else:  # prosthesis stem with a ball in the head
            sd = np.sqrt((u - origin[0]) ** 2 + (v - origin[1]) ** 2) - 0.85 * R
            sd = np.minimum(sd, _sdf_capsule(u, v, origin, neck_end, 0.2 * L))
            sd = np.minimum(sd, _sdf_capsule(u, v, neck_end, shaft_top + shaft_dir * 4.5 * L, 0.3 * L))
        metal = sd < 0
        mv = rng.uniform(METAL_LO, METAL_HI - 0.004)
        frac[metal] = mv + rng.uniform(0, 0.004, int(metal.sum()))

    if laterality == "R":
        frac = frac[:, ::-1].copy()
        metal = metal[:, ::-1].copy()
        box = [W - 1 - box[2], box[1], W - 1 - box[0], box[3]]
    ib = (
        int(np.clip(round(box[0]), 0, W - 1)),
        int(np.clip(round(box[1]), 0, H - 1)),
        int(np.clip(round(box[2]), 0, W - 1)),
        int(np.clip(round(box[3]), 0, H - 1)),
    )
    return Rendered(frac=frac, metal=metal, boxes={laterality: ib})
