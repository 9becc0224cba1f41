"""Femoral-neck localiser: hip views of a radiograph, their box geometry, and the model.

A radiograph becomes one or two *hip views*: the columns that show one hip (all of a hip image,
one half of an AP pelvis), mirrored where needed so that every view looks like a LEFT hip (the
canonical view: femoral head towards the image's left, trochanter to the right), then letterboxed
to a small square (:func:`view_input`). The model sees only that square and returns the box
normalised to it; :func:`to_image_box` maps it back to the full image's pixels.

Boxes are (x0, y0, x1, y1) floats in continuous pixel coordinates (pixel i spans [i, i + 1)).

Two heads over one small CNN backbone (CoordConv input, stride 8):

- ``"heatmap"``: a centre heat map (softmax over positions, soft-argmax gives a sub-pixel
  centre); width and height regressed from the features pooled with the same heat-map weights;
- ``"regress"``: global average pool + linear to (cx, cy, w, h).

Beside the box, a *presence* logit: does this view show a femoral neck at all (trained with BCE on
hip views against negatives: other films, crops away from the neck, mirrored hips, noise, text).
The buffer ``calibration`` holds the mapping from the raw scores to a calibrated confidence
(osteo_model.roi_calibrate), so that it travels in the state dict.

``bench/roi_heads.py`` measures one against the other on a synthetic cohort.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

HEADS = ("heatmap", "regress")
SIDES = ("L", "R")


@dataclass(frozen=True)
class RoiConfig:
    input_size: int = 160  # square low-res view
    head: str = "heatmap"  # "heatmap" (centre heat map, soft-argmax + size) | "regress" (global pool + linear)
    width: int = 16  # base channels of the small CNN
    epochs: int = 60
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True  # random shift/scale/contrast of the view and its box, new draws every epoch
    min_confidence: float = 0.8  # below: "unsure" (a person checks the proposal)
    neg_share: float = 0.5  # negative views per hip view in a training batch (presence head)
    refine: float = 0.0  # > 0: predict again zoomed so the first box spans this share of the view
    zoom_in: float = 0.0  # share of training hip views zoomed in about the neck (the second look's views)
    rotate: float = 0.0  # largest in-plane turn (degrees) of a training view (films placed askew)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}")
        if self.input_size < 32 or self.input_size % 8:
            raise ValueError("input_size must be a multiple of 8, at least 32")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> RoiConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes) -> RoiConfig:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------- geometry
@dataclass(frozen=True)
class HipView:
    side: str  # "L" | "R": the patient side this view shows
    x0: int  # first column of the full image this view covers
    x1: int  # end column (exclusive)
    rows: int  # the image's rows (the view covers all rows)
    flip: bool  # mirrored left-right so that the hip looks like a left hip

    @property
    def cols(self) -> int:
        return self.x1 - self.x0


def _check_row_direction(row_direction: str) -> str:
    rd = (row_direction or "L").strip().upper()
    if rd not in SIDES:
        raise ValueError(f"row direction must be 'L' or 'R', not {row_direction!r}")
    return rd


def _flip(side: str, row_direction: str) -> bool:
    # a left hip in standard orientation (row direction L) is already canonical
    return (side == "R") != (row_direction == "R")


def hip_views(rows: int, cols: int, laterality: str, row_direction: str = "L") -> list[HipView]:
    """The hip views of an image: one for a hip ("L"/"R"), two for an AP pelvis ("B"), L first."""
    rd = _check_row_direction(row_direction)
    lat = (laterality or "").strip().upper()
    if rows < 1 or cols < 2:
        raise ValueError(f"image too small: {rows}x{cols}")
    if lat in SIDES:
        return [HipView(lat, 0, cols, rows, _flip(lat, rd))]
    if lat != "B":
        raise ValueError(f"laterality must be 'L', 'R' or 'B', not {laterality!r}")
    mid = cols // 2
    # standard orientation: the patient's left hip is on the image's right half
    left_half, right_half = ("R", "L") if rd == "L" else ("L", "R")
    views = [HipView(left_half, 0, mid, rows, _flip(left_half, rd)),
             HipView(right_half, mid, cols, rows, _flip(right_half, rd))]
    return sorted(views, key=lambda v: v.side)


def side_of_box(box, cols: int, row_direction: str = "L") -> str:
    """The patient side of an AP pelvis whose half holds the box centre."""
    rd = _check_row_direction(row_direction)
    centre = (float(box[0]) + float(box[2])) / 2.0
    on_right_half = centre >= cols // 2
    return "L" if on_right_half == (rd == "L") else "R"


def _scales(view: HipView, size: int) -> tuple[int, int, float, float]:
    """Resized width/height of the view's columns inside the size x size letterbox, and the
    exact per-axis scales (rounding the resized sides makes them differ slightly)."""
    s = size / max(view.cols, view.rows)
    w = max(1, min(size, round(view.cols * s)))
    h = max(1, min(size, round(view.rows * s)))
    return w, h, w / view.cols, h / view.rows


def view_input(display: np.ndarray, view: HipView, size: int) -> np.ndarray:
    """The view's size x size float32 input in [0, 1]: its columns of ``display`` (rows x cols,
    uint8 0..255 or float 0..1), mirrored when ``view.flip``, scaled so the long side is ``size``
    (anti-aliased), padded with 0 at the bottom/right."""
    arr = np.asarray(display)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {arr.shape}")
    if arr.shape[0] != view.rows or arr.shape[1] < view.x1:
        raise ValueError(f"image {arr.shape} does not hold view {view}")
    crop = arr[:, view.x0:view.x1]
    if view.flip:
        crop = crop[:, ::-1]
    w, h, _, _ = _scales(view, size)
    if crop.dtype == np.uint8:
        small = Image.fromarray(np.ascontiguousarray(crop)).resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0)
        out_small = np.asarray(small, dtype=np.float32) / np.float32(255.0)
    else:
        img = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32), mode="F")
        out_small = np.clip(np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32), 0.0, 1.0)
    out = np.zeros((size, size), dtype=np.float32)
    out[:h, :w] = out_small
    return out


def to_view_box(box, view: HipView, size: int) -> tuple[float, float, float, float]:
    """A box in full-image pixels -> the view input's pixels."""
    _, _, sx, sy = _scales(view, size)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    u0, u1 = bx0 - view.x0, bx1 - view.x0
    if view.flip:
        u0, u1 = view.cols - u1, view.cols - u0
    return (u0 * sx, by0 * sy, u1 * sx, by1 * sy)


def to_image_box(box, view: HipView, size: int) -> tuple[float, float, float, float]:
    """A box in the view input's pixels -> full-image pixels (the inverse of :func:`to_view_box`)."""
    _, _, sx, sy = _scales(view, size)
    u0, v0, u1, v1 = (float(v) for v in box)
    u0, u1, y0, y1 = u0 / sx, u1 / sx, v0 / sy, v1 / sy
    if view.flip:
        u0, u1 = view.cols - u1, view.cols - u0
    return (u0 + view.x0, y0, u1 + view.x0, y1)


# ---------------------------------------------------------------- model
def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _coords(n: int, h: int, w: int, device, dtype) -> torch.Tensor:
    """CoordConv channels: x and y in [-1, 1] at the pixel centres, [n, 2, h, w]."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy]).unsqueeze(0).expand(n, 2, h, w)


CALIBRATION_SIZE = 5  # [fitted (0/1), bias, weight of logit(presence), of agreement, of peak]


class Localiser(nn.Module):
    """[N, 1, S, S] in [0, 1] -> [N, 4] normalised (x0, y0, x1, y1); clipped to [0, 1] in eval mode
    (training keeps the raw values so that a coordinate outside still gets a gradient).
    ``presence=False``: a checkpoint from before the presence head (osteo-roi/1)."""

    def __init__(self, head: str = "heatmap", width: int = 16, presence: bool = True, refine: float = 0.0):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}")
        self.head = head
        self.refine = refine  # the second look's box share (osteo_model.roi_train.refine_boxes); 0: none
        self.has_presence = presence
        w = width
        self.backbone = nn.Sequential(
            _conv(3, w, 2), _conv(w, w),  # stride 2
            _conv(w, 2 * w, 2), _conv(2 * w, 2 * w),  # stride 4
            _conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w),  # stride 8
            # dilated: the receptive field spans the whole hip (the neck is told by its context)
            _conv(4 * w, 4 * w, dilation=2), _conv(4 * w, 4 * w, dilation=4), _conv(4 * w, 4 * w, dilation=8),
        )
        c = 4 * w
        if head == "heatmap":
            self.heat = nn.Conv2d(c + 2, 1, 1)
            self.size = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, 2))
        else:
            self.fc = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, 4))
        if presence:
            # from the features where the box is (heat-map pooled; the global mean for "regress"),
            # the global mean and the global max: is that a femoral neck, and is there one at all
            self.presence = nn.Sequential(nn.Linear(3 * c, c), nn.ReLU(inplace=True), nn.Linear(c, 1))
            self.register_buffer("calibration", torch.zeros(CALIBRATION_SIZE))

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(raw normalised boxes [N, 4], heat-map probabilities [N, H, W] or None, presence logits
        [N] or None)."""
        n, _, h, w = x.shape
        f = self.backbone(torch.cat([x, _coords(n, h, w, x.device, x.dtype)], 1))
        if self.head == "regress":
            t = torch.sigmoid(self.fc(f.mean((2, 3))))
            centre, size = t[:, :2], t[:, 2:]
            heat, pooled = None, f.mean((2, 3))
        else:
            fh, fw = f.shape[2:]
            grid = _coords(n, fh, fw, f.device, f.dtype)
            logits = self.heat(torch.cat([f, grid], 1)).flatten(1)
            p = torch.softmax(logits, 1)
            # soft-argmax over the pixel-centre grid, in [0, 1]
            centre = (torch.einsum("nk,nck->nc", p, grid.flatten(2)) + 1) / 2
            pooled = torch.einsum("nk,nck->nc", p, f.flatten(2))
            size = torch.sigmoid(self.size(pooled))
            heat = p.view(n, fh, fw)
        box = torch.cat([centre - size / 2, centre + size / 2], 1)
        presence = None
        if self.has_presence:
            presence = self.presence(torch.cat([pooled, f.mean((2, 3)), f.amax((2, 3))], 1))[:, 0]
        return box, heat, presence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = self.forward_parts(x)[0]
        return box if self.training else box.clamp(0.0, 1.0)


def build_localiser(config: RoiConfig, presence: bool = True) -> Localiser:
    return Localiser(config.head, config.width, presence, config.refine)
