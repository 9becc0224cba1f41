"""Domain randomisation of the localiser's views, and the negatives made on the torch side.

SyntheX (Gao et al., Nat Mach Intell 2023) showed that a hip model trained on simulated films
transfers to real ones when the simulated views are randomised far beyond what the simulator
draws. Every training view is redrawn each epoch (:func:`randomise`), all from one seeded
``torch.Generator`` (the same data and seed give the same views):

- geometry: zoom out (a view shows more anatomy, the neck is smaller: a square or portrait pelvis
  halves the neck's share of a view) or in, aspect changes, shifts, and (``rotate``) in-plane turns
  as a hip film placed askew on the detector shows; uncovered borders are black like the letterbox.
  A turned box is the box of the ellipse inscribed in it, turned (a neck is no rectangle; the box
  of the turned rectangle would teach boxes too large by up to 40%). Mirroring is the view
  geometry's job (every view looks like a left hip);
- grey levels: a random window (contrast, brightness), gamma, a low-frequency exposure ramp;
- blur or unsharp masking (CR/DX edge enhancement), fine noise and mottled soft-tissue texture,
  grid lines;
- burned-in text and lead markers, collimation edges (black or white borders).

Polarity is not inverted: the display pipeline already gives bone bright (MONOCHROME1 is inverted
when read), and a model that accepted both polarities would accept more that is not a hip.

Each view also gets a presence target: 1 when at least ``VISIBLE_POS`` of its box is in the view,
0 when at most ``VISIBLE_NEG`` (a crop away from the neck), -1 (no loss) between. A share of hip
views is turned into negatives on purpose: zoomed in away from the neck (``CROP_NEG``) or mirrored
(``MIRROR_NEG``: a right hip where a left one is expected, which is how the headerless hypotheses
tell a left hip from a right one). :func:`synthetic_negatives` draws views with no hip at all:
smooth and white noise, blobs and gradients, pages of text, blanks.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch.nn import functional as F

ZOOM = (0.55, 1.25)  # log-uniform (times the view's strength); < 1 zooms out
LIGHTEST = 0.0  # each view's strength is drawn in [LIGHTEST, 1] x the strength asked for
ASPECT = 0.1  # log of the largest x/y stretch
SHIFT = 0.3  # half-views
CROP_NEG = 0.1  # share of hip views zoomed in away from the neck (negatives)
MIRROR_NEG = 0.05  # share of hip views mirrored (negatives: the wrong side's orientation)
VISIBLE_POS, VISIBLE_NEG = 0.8, 0.2
ZOOM_IN_SHARE, ZOOM_IN_OFFSET = 0.3, 0.08  # the second look: the box's share of the view, centre error
TEXTS = ("L", "R", "AP", "PA", "PELVIS", "HIP", "AP PELVIS", "STANDING", "SUPINE", "PORTABLE", "12/03/2021",
         "2019-07-14", "14:32:07", "kVp 75", "mAs 22", "CR", "DX", "1:1", "ID 0042317", "ACC 88213", "5 cm",
         "W 4095 L 2048", "Im: 1/1", "Se: 2", "R  AP", "L  AP", "LEFT", "RIGHT", "ER", "DR", "MARKER")


def _uniform(gen: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=gen)


def _chance(gen: torch.Generator, p: float, n: int) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


# ---------------------------------------------------------------- geometry
def warp(x: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor,
         angle: torch.Tensor | None = None) -> torch.Tensor:
    """Views [N, 1, S, S] mirrored where ``flip``, zoomed by (sx, sy) about the centre, turned by
    ``angle`` [N] (radians; None: not turned), then moved by ``shift`` [N, 2] (half-views); the
    uncovered border is 0."""
    theta = torch.zeros(len(x), 2, 3, dtype=x.dtype)
    f = torch.where(flip, -1.0, 1.0)
    if angle is None:
        theta[:, 0, 0] = f / sx
        theta[:, 1, 1] = 1 / sy
        theta[:, 0, 2] = -shift[:, 0] / sx * f
        theta[:, 1, 2] = -shift[:, 1] / sy
    else:  # the input point of an output point: mirror . zoom^-1 . turn^-1 (out - shift)
        c, s = torch.cos(angle), torch.sin(angle)
        m = torch.stack([torch.stack([f * c / sx, f * s / sx], 1), torch.stack([-s / sy, c / sy], 1)], 1)
        theta[:, :, :2] = m
        theta[:, :, 2] = -(m @ shift.unsqueeze(-1)).squeeze(-1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_boxes(boxes: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, shift: torch.Tensor,
               flip: torch.Tensor, angle: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised boxes [N, 4] through :func:`warp` (not clamped); a turned box is the box of its
    inscribed ellipse turned."""
    x0, x1 = boxes[:, 0], boxes[:, 2]
    x0, x1 = torch.where(flip, 1 - x1, x0), torch.where(flip, 1 - x0, x1)
    ox, oy = (1 - sx) / 2 + shift[:, 0] / 2, (1 - sy) / 2 + shift[:, 1] / 2
    out = torch.stack([x0 * sx + ox, boxes[:, 1] * sy + oy, x1 * sx + ox, boxes[:, 3] * sy + oy], 1)
    if angle is None:
        return out
    c, s = torch.cos(angle), torch.sin(angle)
    centre = (out[:, :2] + out[:, 2:]) / 2 - 0.5 - shift / 2  # about the view's centre, before the shift
    turned = torch.stack([c * centre[:, 0] - s * centre[:, 1], s * centre[:, 0] + c * centre[:, 1]], 1)
    turned = turned + 0.5 + shift / 2
    a, b = (out[:, 2] - out[:, 0]) / 2, (out[:, 3] - out[:, 1]) / 2
    hx = torch.sqrt((a * c) ** 2 + (b * s) ** 2)
    hy = torch.sqrt((a * s) ** 2 + (b * c) ** 2)
    return torch.stack([turned[:, 0] - hx, turned[:, 1] - hy, turned[:, 0] + hx, turned[:, 1] + hy], 1)


def visible_share(boxes: torch.Tensor) -> torch.Tensor:
    """How much of each normalised box lies inside the view [0, 1]^2."""
    c = boxes.clamp(0, 1)
    inside = (c[:, 2] - c[:, 0]).clamp(min=0) * (c[:, 3] - c[:, 1]).clamp(min=0)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6) * (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    return inside / area


def _geometry(boxes: torch.Tensor, gen: torch.Generator, strength: torch.Tensor, crop_neg: float, mirror_neg: float,
              zoom_in: float = 0.0, rotate: float = 0.0):
    n = len(boxes)
    zoom = torch.exp(_uniform(gen, math.log(ZOOM[0]), math.log(ZOOM[1]), n) * strength)
    aspect = torch.exp(_uniform(gen, -ASPECT, ASPECT, n) * strength)
    sx, sy = zoom * aspect, zoom / aspect
    shift = _uniform(gen, -SHIFT, SHIFT, n, 2) * strength[:, None]
    # crops away from the neck: zoom in (a neck box is ~0.2 of a view, near its middle: only a
    # window under half the view's width clears it) and take the best of 12 windows on the view
    crop = _chance(gen, crop_neg, n)
    z = _uniform(gen, 2.2, 4.0, n)
    cand = _uniform(gen, -1, 1, 12, n, 2) * (z - 1)[None, :, None]
    flat = torch.zeros(n, dtype=torch.bool)
    vis = torch.stack([visible_share(warp_boxes(boxes, z, z, c, flat)) for c in cand])
    best = cand[vis.argmin(0), torch.arange(n)]
    sx, sy = torch.where(crop, z, sx), torch.where(crop, z, sy)
    shift = torch.where(crop[:, None], best, shift)
    if zoom_in > 0:
        sx, sy, shift = _zoom_in(boxes, gen, _chance(gen, zoom_in, n) & ~crop, sx, sy, shift)
    mirror = _chance(gen, mirror_neg, n)
    angle = None
    if rotate > 0:  # drawn only when asked: the views of a recipe without turns are drawn as before
        angle = torch.where(crop, 0.0, _uniform(gen, -1, 1, n) * math.radians(rotate))
    return sx, sy, shift, mirror, angle


def _zoom_in(boxes: torch.Tensor, gen: torch.Generator, chosen: torch.Tensor, sx, sy, shift):
    """The second look's views (osteo_model.roi_train.refine_boxes) on the ``chosen`` views: zoomed
    about the neck so that the box's larger side spans ZOOM_IN_SHARE of the view (x 0.7-1.4), its
    centre off the view's centre by up to ZOOM_IN_OFFSET (the first look's error)."""
    n = len(boxes)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).amax(1).clamp(min=1e-3)
    z = (ZOOM_IN_SHARE * torch.exp(_uniform(gen, math.log(0.7), math.log(1.4), n)) / side).clamp(1.0, 3.0)
    aim = z[:, None] * (1 - 2 * centre) + 2 * _uniform(gen, -ZOOM_IN_OFFSET, ZOOM_IN_OFFSET, n, 2)
    return torch.where(chosen, z, sx), torch.where(chosen, z, sy), torch.where(chosen[:, None], aim, shift)


# ---------------------------------------------------------------- grey levels and texture
def _gauss_kernels(sigma: torch.Tensor, k: int = 7) -> torch.Tensor:
    r = torch.arange(k, dtype=torch.float32) - k // 2
    w = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    return w / w.sum(1, keepdim=True)


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each view [N, 1, S, S] with its own sigma [N] (pixels)."""
    n, _, h, w = x.shape
    k = _gauss_kernels(sigma.clamp(min=0.2))
    y = F.conv2d(F.pad(x.view(1, n, h, w), (3, 3, 0, 0), mode="replicate"), k.view(n, 1, 1, 7), groups=n)
    y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), k.view(n, 1, 7, 1), groups=n)
    return y.view(n, 1, h, w)


def _grey_levels(x: torch.Tensor, gen: torch.Generator, strength: torch.Tensor) -> torch.Tensor:
    n, _, s, _ = x.shape
    shape = (n, 1, 1, 1)
    strength = strength.view(shape)
    lo = _uniform(gen, -0.2, 0.22, *shape) * strength
    hi = 1 + _uniform(gen, -0.28, 0.2, *shape) * strength
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    x = x ** torch.exp(_uniform(gen, -0.5, 0.5, *shape) * strength)
    ramp_angle = _uniform(gen, 0, 2 * math.pi, n)
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, s), torch.linspace(-0.5, 0.5, s), indexing="ij")
    ramp = torch.cos(ramp_angle)[:, None, None] * xx + torch.sin(ramp_angle)[:, None, None] * yy
    return x + (_uniform(gen, -0.2, 0.2, n, 1, 1) * ramp).unsqueeze(1) * strength


def _texture(x: torch.Tensor, gen: torch.Generator, strength: torch.Tensor) -> torch.Tensor:
    n, _, s, _ = x.shape
    strength = strength.view(n, 1, 1, 1)
    soft = blur(x, _uniform(gen, 0.4, 1.8, n))
    kind = torch.rand(n, generator=gen)
    amount = _uniform(gen, 0.3, 2.0, n, 1, 1, 1)
    x = torch.where((kind < 0.3).view(n, 1, 1, 1), soft,
                    torch.where((kind > 0.6).view(n, 1, 1, 1), x + amount * (x - soft), x))
    mottle = F.interpolate(torch.randn(n, 1, 6, 6, generator=gen), size=(s, s), mode="bicubic", align_corners=False)
    x = x + mottle * _uniform(gen, 0, 0.05, n, 1, 1, 1) * strength
    x = x + torch.randn(x.shape, generator=gen) * _uniform(gen, 0, 0.05, n, 1, 1, 1) * strength
    grid = _chance(gen, 0.15, n).view(n, 1, 1, 1)
    period = _uniform(gen, 2.0, 4.5, n, 1, 1, 1)
    lines = torch.sin(2 * math.pi * torch.arange(s, dtype=torch.float32).view(1, 1, 1, s) / period)
    return x + grid * lines * _uniform(gen, 0.01, 0.04, n, 1, 1, 1)


# ---------------------------------------------------------------- text, markers, collimation
@functools.lru_cache(maxsize=4)
def text_bank(height: int) -> tuple[torch.Tensor, ...]:
    """Masks [h, w] in [0, 1] of the strings viewers burn in (and boxed L/R lead markers)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(6, height))
    out = []
    for i, text in enumerate(TEXTS):
        x0, y0, x1, y1 = (int(v) for v in font.getbbox(text))  # whole pixels (typed float: fonts of any kind)
        pad = 2 if i < 2 else 0  # the lone L and R are lead markers: drawn in a frame
        img = Image.new("L", (x1 - x0 + 2 * pad + 1, y1 - y0 + 2 * pad + 1), 0)
        draw = ImageDraw.Draw(img)
        draw.text((pad - x0, pad - y0), text, fill=255, font=font)
        if pad:
            draw.rectangle((0, 0, img.width - 1, img.height - 1), outline=255)
        out.append(torch.as_tensor(np.asarray(img, dtype=np.float32) / 255.0))
    return tuple(out)


def burn_text(x: torch.Tensor, gen: torch.Generator, p: float = 0.4, most: int = 3) -> torch.Tensor:
    """Paste 1..``most`` strings or markers (bright or dark) on a share ``p`` of the views."""
    n, _, s, _ = x.shape
    x = x.clone()
    heights = (max(6, s // 20), max(8, s // 12))
    for i in torch.nonzero(_chance(gen, p, n)).flatten().tolist():
        for _ in range(int(torch.randint(1, most + 1, (1,), generator=gen))):
            bank = text_bank(heights[int(torch.randint(0, 2, (1,), generator=gen))])
            m = bank[int(torch.randint(0, len(bank), (1,), generator=gen))][:s, :s]
            h, w = m.shape
            r = int(torch.randint(0, s - h + 1, (1,), generator=gen))
            c = int(torch.randint(0, s - w + 1, (1,), generator=gen))
            value = float(_uniform(gen, 0.75, 1.0, 1)) if torch.rand(1, generator=gen) < 0.85 else 0.0
            patch = x[i, 0, r:r + h, c:c + w]
            x[i, 0, r:r + h, c:c + w] = patch * (1 - m) + value * m
    return x


def collimate(x: torch.Tensor, boxes: torch.Tensor | None, gen: torch.Generator, p: float = 0.3) -> torch.Tensor:
    """Black or white borders on some sides of a share ``p`` of the views, never over the box."""
    n, _, s, _ = x.shape
    x = x.clone()
    edges = torch.arange(s, dtype=torch.float32) + 0.5
    for i in torch.nonzero(_chance(gen, p, n)).flatten().tolist():
        sides = torch.rand(4, generator=gen) < 0.5
        width = _uniform(gen, 0.03, 0.25, 4) * s
        lim = (boxes[i] * s).tolist() if boxes is not None else [s, s, 0, 0]  # x0, y0, x1, y1 in pixels
        left, top = min(float(width[0]), lim[0] - 1), min(float(width[1]), lim[1] - 1)
        right, bottom = max(s - float(width[2]), lim[2] + 1), max(s - float(width[3]), lim[3] + 1)
        cols = ((edges < left) & sides[0]) | ((edges > right) & sides[2])
        rows = ((edges < top) & sides[1]) | ((edges > bottom) & sides[3])
        mask = rows[:, None] | cols[None, :]
        value = 0.0 if torch.rand(1, generator=gen) < 0.6 else float(_uniform(gen, 0.85, 1.0, 1))
        x[i, 0][mask] = value
    return x


# ---------------------------------------------------------------- the whole recipe
def randomise(x: torch.Tensor, boxes: torch.Tensor, gen: torch.Generator, strength: float = 1.0, *,
              crop_neg: float = CROP_NEG, mirror_neg: float = MIRROR_NEG, zoom_in: float = 0.0, rotate: float = 0.0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hip views [N, 1, S, S] and their normalised boxes [N, 4] -> (randomised views, boxes clamped to
    the view, presence targets [N]: 1 hip, 0 no neck in view, -1 ambiguous). ``strength`` scales
    the zoom, shift, grey-level and texture draws (1: training; > 1: the calibration's heavier
    shift); each view draws its own share of it in [LIGHTEST, 1], so that some views stay close to
    the films (a small set must still be learned in a few hundred steps) and some are far off.
    ``rotate``: the largest in-plane turn (degrees; crops away from the neck are not turned)."""
    shares = strength * _uniform(gen, LIGHTEST, 1.0, len(x))  # each view's strength
    sx, sy, shift, mirror, angle = _geometry(boxes, gen, shares, crop_neg, mirror_neg, zoom_in, rotate)
    x = warp(x, sx, sy, shift, torch.zeros(len(x), dtype=torch.bool), angle)
    moved = warp_boxes(boxes, sx, sy, shift, torch.zeros(len(x), dtype=torch.bool), angle)
    vis = visible_share(moved)
    target = torch.where(vis >= VISIBLE_POS, 1.0, torch.where(vis <= VISIBLE_NEG, 0.0, -1.0))
    target = torch.where(mirror, 0.0, target)
    x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x)
    boxes = moved.clamp(0, 1)
    x = photometric(x, boxes.where((target == 1)[:, None], torch.tensor([1.0, 1.0, 0.0, 0.0])), gen, shares)
    return x, boxes, target


def photometric(x: torch.Tensor, keep: torch.Tensor | None, gen: torch.Generator,
                strength: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Grey levels, texture, text and collimation (never over ``keep``, normalised boxes) of views;
    ``strength``: one number (each view draws its share of it) or one per view."""
    if not isinstance(strength, torch.Tensor):
        strength = strength * _uniform(gen, LIGHTEST, 1.0, len(x))
    x = _texture(_grey_levels(x, gen, strength), gen, strength).clamp(0, 1)
    return collimate(burn_text(x, gen), keep, gen).clamp(0, 1)


def synthetic_negatives(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Views [n, 1, size, size] with no hip: smooth noise, white noise, blobs on a gradient, text
    pages, blanks (the grey levels and the rest of :func:`photometric` still to come)."""
    kind = torch.randint(0, 5, (n,), generator=gen)
    coarse = int(torch.exp(_uniform(gen, math.log(3), math.log(40), 1)).round().int().item())
    smooth = F.interpolate(torch.rand(n, 1, coarse, coarse, generator=gen), size=(size, size), mode="bicubic",
                           align_corners=False)
    white = torch.rand(n, 1, size, size, generator=gen)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    c = _uniform(gen, -0.7, 0.7, n, 2, 1, 1)
    r = _uniform(gen, 0.15, 0.8, n, 2, 1, 1)
    blob = ((((xx - c[:, 0]) / r[:, 0]) ** 2 + ((yy - c[:, 1]) / r[:, 1]) ** 2) < 1).float().unsqueeze(1)
    blobs = 0.3 + 0.3 * (xx * _uniform(gen, -1, 1, n, 1, 1)).unsqueeze(1) + blob * _uniform(gen, 0.2, 0.6, n, 1, 1, 1)
    page = burn_text(torch.full((n, 1, size, size), 0.05), gen, p=1.0, most=8)
    blank = _uniform(gen, 0, 1, n, 1, 1, 1).expand(n, 1, size, size)
    options = torch.stack([smooth, white, blobs, page, blank])  # [5, n, 1, S, S]
    return options[kind, torch.arange(n)].clamp(0, 1)
