"""Training, prediction, metrics and checkpoints of the femoral-neck localiser (osteo_model.roi).

- :func:`train_localiser`: AdamW with a short warm-up and a cosine decay, L1 on the normalised
  corners + a GIoU term; new random shift/scale/contrast draws every epoch (``config.augment``);
  keeps the epoch with the best validation mean IoU; bit-for-bit reproducible on CPU for a seed.
- :func:`predict_boxes`: boxes and a confidence from test-time agreement: the view is also
  predicted shifted and scaled by known amounts, those transforms are undone, and the boxes are
  compared with the main one. A model that found the neck follows the shift; one that guesses
  (blank, noise, a foreign image) does not. The heatmap head adds how peaked its heat map is.
- Checkpoint format (loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "osteo-roi/1", "config": RoiConfig as a dict, "state_dict": {...}, "extra": dict}
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from osteo_model.roi import RoiConfig, build_localiser

ROI_FORMAT = "osteo-roi/1"
L1_WEIGHT, GIOU_WEIGHT = 5.0, 2.0  # DETR's balance of the two box terms
# test-time copies for the confidence: (scale, shift x, shift y), shifts in half-views ([-1, 1] units)
TTA = ((1.0, 0.16, -0.12), (1.0, -0.16, 0.12), (0.85, 0.0, 0.0), (1.15, 0.0, 0.0))
AGREE_IOU = 0.6  # a test-time copy whose box overlaps the main one this much agrees fully
AUG_SCALE = (0.85, 1.2)
AUG_SHIFT = 0.15  # in half-views
AUG_GAMMA = (0.7, 1.4)
AUG_CONTRAST = (0.8, 1.2)


# ---------------------------------------------------------------- boxes
def box_iou(a, b) -> np.ndarray:
    """IoU of boxes ``a`` and ``b`` elementwise ([N, 4] arrays or single boxes; broadcasting)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def box_metrics(pred: np.ndarray, true: np.ndarray, mm_per_px: np.ndarray | None = None) -> dict:
    """mean_iou, iou_ge_050 and iou_ge_075 (shares), centre_error_px (mean), centre_error_mm
    (mean, with ``mm_per_px`` per box or one number), n."""
    pred, true = np.asarray(pred, dtype=np.float64).reshape(-1, 4), np.asarray(true, dtype=np.float64).reshape(-1, 4)
    n = len(true)
    if n == 0:
        return {"mean_iou": float("nan"), "iou_ge_050": float("nan"), "iou_ge_075": float("nan"),
                "centre_error_px": float("nan"), "n": 0}
    iou = box_iou(pred, true)
    err = np.hypot((pred[:, 0] + pred[:, 2] - true[:, 0] - true[:, 2]) / 2,
                   (pred[:, 1] + pred[:, 3] - true[:, 1] - true[:, 3]) / 2)
    out = {"mean_iou": float(iou.mean()), "iou_ge_050": float((iou >= 0.5).mean()),
           "iou_ge_075": float((iou >= 0.75).mean()), "centre_error_px": float(err.mean()), "n": n}
    if mm_per_px is not None:
        scale = np.broadcast_to(np.asarray(mm_per_px, dtype=np.float64), err.shape)
        out["centre_error_mm"] = float((err * scale).mean())
    return out


def box_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean of L1 on the normalised corners and 1 - GIoU, weighted as DETR does."""
    l1 = (pred - true).abs().sum(1)
    iw = (torch.minimum(pred[:, 2], true[:, 2]) - torch.maximum(pred[:, 0], true[:, 0])).clamp(min=0)
    ih = (torch.minimum(pred[:, 3], true[:, 3]) - torch.maximum(pred[:, 1], true[:, 1])).clamp(min=0)
    inter = iw * ih
    area_p = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    area_t = (true[:, 2] - true[:, 0]) * (true[:, 3] - true[:, 1])
    union = area_p + area_t - inter
    hull = ((torch.maximum(pred[:, 2], true[:, 2]) - torch.minimum(pred[:, 0], true[:, 0])) *
            (torch.maximum(pred[:, 3], true[:, 3]) - torch.minimum(pred[:, 1], true[:, 1])))
    giou = inter / union.clamp(min=1e-7) - (hull - union) / hull.clamp(min=1e-7)
    return (L1_WEIGHT * l1 + GIOU_WEIGHT * (1 - giou)).mean()


# ---------------------------------------------------------------- affine copies of views
def affine_views(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Views [N, 1, S, S] zoomed by ``scale`` [N] about the centre and moved by ``shift`` [N, 2]
    (half-views, i.e. [-1, 1] units); the uncovered border is 0, like the letterbox padding."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = -shift / scale[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine_boxes(boxes: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Normalised boxes [N, 4] through :func:`affine_views`' transform (or back, ``inverse``)."""
    s = scale[:, None]
    offset = ((1 - s) / 2 + shift / 2).repeat(1, 2)
    return (boxes - offset) / s if inverse else boxes * s + offset


def _augment(x: torch.Tensor, boxes: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    scale, shift = uniform(*AUG_SCALE, n), uniform(-AUG_SHIFT, AUG_SHIFT, n, 2)
    gamma, contrast = uniform(*AUG_GAMMA, n, 1, 1, 1), uniform(*AUG_CONTRAST, n, 1, 1, 1)
    x = (affine_views(x, scale, shift).clamp(0, 1) ** gamma * contrast).clamp(0, 1)
    return x, affine_boxes(boxes, scale, shift).clamp(0, 1)


# ---------------------------------------------------------------- training
def _lr_lambda(epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total // 10, 2 * steps_per_epoch)

    def f(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


def _tensors(x: np.ndarray, boxes: np.ndarray | None, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(-1, 1, size, size)
    if boxes is None:
        return xt, None
    return xt, torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4) / size


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, boxes: torch.Tensor, device, batch_size: int) -> dict:
    model.eval()
    preds, loss = [], 0.0
    for i in range(0, len(x), batch_size):
        p = model(x[i:i + batch_size].to(device)).cpu()
        loss += box_loss(p, boxes[i:i + batch_size]).item() * len(p)
        preds.append(p)
    pred = torch.cat(preds).numpy()
    return {"val_loss": loss / len(x), "val_mean_iou": float(box_iou(pred, boxes.numpy()).mean())}


def train_localiser(train_x: np.ndarray, train_boxes: np.ndarray, val_x: np.ndarray | None,
                    val_boxes: np.ndarray | None, config: RoiConfig, *, device="cpu",
                    on_epoch: Callable[[int, dict], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """Train a localiser on views [N, S, S] (float32 in [0, 1]) and their boxes [N, 4] in view pixels.

    Returns (the model at the epoch with the best validation mean IoU, or the last epoch without
    validation views; in eval mode, on ``device``) and the history, one record per epoch (also
    passed to ``on_epoch(epoch, record)``, 1-based): epoch, train_loss, val_loss, val_mean_iou,
    lr, seconds.
    """
    device = torch.device(device)
    size = config.input_size
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = build_localiser(config).to(device)
    x, boxes = _tensors(train_x, train_boxes, size)
    has_val = val_x is not None and len(val_x) > 0
    vx, vb = _tensors(val_x, val_boxes, size) if has_val else (None, None)
    steps = math.ceil(len(x) / config.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config.epochs, steps))

    history: list[dict] = []
    best_state, best_iou = None, -math.inf
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        lr = opt.param_groups[0]["lr"]
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(steps):
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            if len(idx) < 2 and len(x) > 1:  # a batch of one says little to BatchNorm; skip it
                continue
            xb, bb = x[idx], boxes[idx]
            if config.augment:
                xb, bb = _augment(xb, bb, gen)
            pred = model(xb.to(device))
            loss = box_loss(pred, bb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        rec = {"epoch": epoch, "train_loss": total / len(x), "lr": lr}
        if has_val:
            rec.update(_evaluate(model, vx, vb, device, config.batch_size))
            if rec["val_mean_iou"] > best_iou:
                best_iou = rec["val_mean_iou"]
                best_state = copy.deepcopy(model.state_dict())
        else:
            rec.update(val_loss=float("nan"), val_mean_iou=float("nan"))
        rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        if on_epoch is not None:
            on_epoch(epoch, rec)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


# ---------------------------------------------------------------- prediction
def _peak_mass(heat: torch.Tensor) -> torch.Tensor:
    """Heat-map mass in the best 3 x 3 window: ~1 where the model sees one neck, low on noise or blanks."""
    return (F.avg_pool2d(heat.unsqueeze(1), 3, 1, 1) * 9).flatten(1).amax(1).clamp(0, 1)


def _run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    if hasattr(model, "forward_parts"):
        box, heat = model.forward_parts(x)
        return box.float().clamp(0, 1), heat
    return model(x).float(), None


@torch.no_grad()
def predict_boxes(model: nn.Module, views: np.ndarray, *, device="cpu", batch_size: int = 32,
                  tta: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [N, 4] in view pixels and confidence [N] in [0, 1] for views [N, S, S] (or one [S, S]).

    Confidence = agreement x peak. Agreement: the boxes predicted on shifted/scaled copies of the
    view (transforms undone) against the main box; a copy agrees fully at IoU >= AGREE_IOU and in
    proportion below (a fixed guess that ignores the image follows no shift and agrees little).
    Peak: the heat map's mass in its best 3 x 3 window (heatmap head; 1 for "regress").
    ``tta=False``: boxes only, confidence NaN.
    """
    device = torch.device(device)
    views = np.asarray(views, dtype=np.float32)
    size = views.shape[-1]
    x, _ = _tensors(views, None, size)
    model = model.to(device).eval()
    k = len(TTA) if tta else 0
    params = torch.tensor(TTA, dtype=torch.float32)
    out_boxes, out_conf = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device)
        n = len(xb)
        if not k:
            out_boxes.append(_run(model, xb)[0].cpu().numpy() * size)
            out_conf.append(np.full(n, np.nan))
            continue
        scale = params[:, 0].repeat_interleave(n).to(device)
        shift = params[:, 1:].repeat_interleave(n, 0).to(device)
        pred, heat = _run(model, torch.cat([xb, affine_views(xb.repeat(k, 1, 1, 1), scale, shift)]))
        main = pred[:n].cpu().numpy()
        back = affine_boxes(pred[n:], scale, shift, inverse=True).clamp(0, 1).view(k, n, 4).cpu().numpy()
        agreement = np.minimum(1.0, box_iou(back, main[None]) / AGREE_IOU).mean(0)
        peak = _peak_mass(heat[:n]).cpu().numpy() if heat is not None else 1.0
        out_boxes.append(main * size)
        out_conf.append(agreement * peak)
    if not out_boxes:
        return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return np.concatenate(out_boxes).astype(np.float32), np.concatenate(out_conf).astype(np.float32)


# ---------------------------------------------------------------- checkpoints
def save_localiser(model: nn.Module, config: RoiConfig, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the localiser's checkpoint atomically; ``extra``: JSON-like metadata (metrics, data...)."""
    from osteo_model.predict import _plain, write_checkpoint

    return write_checkpoint({
        "format": ROI_FORMAT,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "extra": _plain(extra or {}),
    }, path)


def load_localiser(path: str | os.PathLike, device="cpu") -> tuple[nn.Module, RoiConfig, dict]:
    """(model in eval mode on ``device``, RoiConfig, extra) from :func:`save_localiser`'s file,
    loaded with ``weights_only=True`` (no code runs while loading)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != ROI_FORMAT:
        raise ValueError(f"{path}: not an osteo localiser checkpoint")
    config = RoiConfig.from_dict(payload["config"])
    model = build_localiser(config)
    model.load_state_dict(payload["state_dict"])
    return model.to(torch.device(device)).eval(), config, dict(payload.get("extra") or {})
