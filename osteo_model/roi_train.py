"""Training, prediction, metrics and checkpoints of the femoral-neck localiser (osteo_model.roi).

- :func:`train_localiser`: AdamW with a short warm-up and a cosine decay, L1 on the normalised
  corners + a GIoU term on the hip views, BCE of the presence head on hip views against negatives
  (given ones, and noise/text/blanks made here); every view redrawn each epoch by the domain
  randomisation of osteo_model.roi_augment (``config.augment``); keeps the epoch with the best
  validation mean IoU; bit-for-bit reproducible on CPU for a seed.
- :func:`predict_scores`: boxes and the raw scores: presence, test-time agreement (the view is also
  predicted shifted and scaled by known amounts, the transforms undone and the boxes compared with
  the main one) and the heat map's peak mass. :func:`predict_boxes` maps them to the calibrated
  confidence (osteo_model.roi_calibrate).
- Checkpoint format (loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "osteo-roi/2", "config": RoiConfig as a dict, "state_dict": {... "calibration": tensor},
     "extra": dict}

  An ``osteo-roi/1`` checkpoint (before the presence head) still loads; its confidence is the old
  agreement x peak.
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

from osteo_model.roi import Localiser, RoiConfig, build_localiser

ROI_FORMAT = "osteo-roi/2"
OLD_FORMATS = ("osteo-roi/1",)  # no presence head, no calibration
L1_WEIGHT, GIOU_WEIGHT = 5.0, 2.0  # DETR's balance of the two box terms
# test-time copies for the confidence: (scale, shift x, shift y), shifts in half-views ([-1, 1] units)
TTA = ((1.0, 0.16, -0.12), (1.0, -0.16, 0.12), (0.85, 0.0, 0.0), (1.15, 0.0, 0.0))
AGREE_IOU = 0.6  # a test-time copy whose box overlaps the main one this much agrees fully
PRESENCE_WEIGHT = 1.0  # of the presence BCE beside the box loss
REFINE_MAX = 3.0  # the second look's largest zoom


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


# ---------------------------------------------------------------- training
def _lr_lambda(epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total // 10, 2 * steps_per_epoch)

    def f(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


def _views(x: np.ndarray, size: int) -> torch.Tensor:
    """Views [N, S, S] as the model's input [N, 1, S, S] float32."""
    return torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(-1, 1, size, size)


def _boxes(boxes: np.ndarray, size: int) -> torch.Tensor:
    """Boxes [N, 4] in view pixels, normalised to the view."""
    return torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4) / size


@torch.no_grad()
def _evaluate(model: Localiser, x: torch.Tensor, boxes: torch.Tensor, negatives: torch.Tensor | None, device,
              batch_size: int) -> dict:
    """Validation: box loss and mean IoU on the clean hip views; with negatives, the mean presence
    probability of the hip views and of the negatives."""
    model.eval()
    preds, loss, present = [], 0.0, []
    for i in range(0, len(x), batch_size):
        box, _, presence = model.forward_parts(x[i:i + batch_size].to(device))
        p = box.clamp(0, 1).cpu()
        loss += box_loss(p, boxes[i:i + batch_size]).item() * len(p)
        preds.append(p)
        if presence is not None:
            present.append(torch.sigmoid(presence).cpu())
    pred = torch.cat(preds).numpy()
    out = {"val_loss": loss / len(x), "val_mean_iou": float(box_iou(pred, boxes.numpy()).mean())}
    if present and negatives is not None and len(negatives):
        neg = [torch.sigmoid(logit).cpu() for i in range(0, len(negatives), batch_size)
               if (logit := model.forward_parts(negatives[i:i + batch_size].to(device))[2]) is not None]
        out.update(val_presence_hip=float(torch.cat(present).mean()),
                   val_presence_negative=float(torch.cat(neg).mean()))
    return out


def _negatives(pool: torch.Tensor | None, n: int, size: int, gen: torch.Generator, augment: bool) -> torch.Tensor:
    """``n`` negative views: half drawn from ``pool`` (when given), the rest made here."""
    from osteo_model.roi_augment import photometric, randomise, synthetic_negatives

    k = n // 2 if pool is not None and len(pool) else 0
    parts = [pool[torch.randint(0, len(pool), (k,), generator=gen)]] if pool is not None and k else []
    made = synthetic_negatives(n - k, size, gen)
    if augment:
        if k:
            parts[0] = randomise(parts[0], torch.zeros(k, 4), gen, crop_neg=0.0, mirror_neg=0.5)[0]
        made = photometric(made, None, gen)
    return torch.cat(parts + [made])


def _step_loss(model: Localiser, xb: torch.Tensor, bb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Box loss on the views that show the neck, presence BCE on every view with a target."""
    box, _, presence = model.forward_parts(xb)
    pos, known = target == 1, target >= 0
    loss = box_loss(box[pos], bb[pos]) if pos.any() else box.sum() * 0
    if presence is not None and known.any():
        loss = loss + PRESENCE_WEIGHT * F.binary_cross_entropy_with_logits(presence[known], target[known])
    return loss


def train_localiser(train_x: np.ndarray, train_boxes: np.ndarray, val_x: np.ndarray | None,
                    val_boxes: np.ndarray | None, config: RoiConfig, *, negatives: np.ndarray | None = None,
                    val_negatives: np.ndarray | None = None, device="cpu",
                    on_epoch: Callable[[int, dict], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """Train a localiser on hip views [N, S, S] (float32 in [0, 1]) and their boxes [N, 4] in view
    pixels; ``negatives`` [M, S, S]: views with no femoral neck (other films, crops away from the
    neck), each batch draws ``config.neg_share`` per hip view, half from them, half made here.

    Returns (the model at the epoch with the best validation mean IoU, or the last epoch without
    validation views; in eval mode, on ``device``, uncalibrated) and the history, one record per
    epoch (also passed to ``on_epoch(epoch, record)``, 1-based): epoch, train_loss, val_loss,
    val_mean_iou, val_presence_hip and val_presence_negative (with ``val_negatives``), lr, seconds.
    """
    device = torch.device(device)
    size = config.input_size
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = build_localiser(config).to(device)
    x, boxes = _views(train_x, size), _boxes(train_boxes, size)
    pool = _views(negatives, size) if negatives is not None and len(negatives) else None
    val = None  # the validation views and boxes
    if val_x is not None and len(val_x) > 0:
        if val_boxes is None:
            raise ValueError("validation views need their boxes (val_boxes)")
        val = _views(val_x, size), _boxes(val_boxes, size)
    vneg = _views(val_negatives, size) if val_negatives is not None and len(val_negatives) else None
    steps = math.ceil(len(x) / config.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config.epochs, steps))

    history: list[dict] = []
    best_state, best_iou = None, -math.inf
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        total = _train_epoch(model, x, boxes, pool, opt, sched, gen, config, device)
        rec = {"epoch": epoch, "train_loss": total / len(x), "lr": lr}
        if val is not None:
            rec.update(_evaluate(model, *val, vneg, device, config.batch_size))
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


def _train_epoch(model: Localiser, x: torch.Tensor, boxes: torch.Tensor, pool: torch.Tensor | None,
                 opt: torch.optim.Optimizer, sched, gen: torch.Generator, config: RoiConfig, device) -> float:
    """One pass over the hip views in a random order (each batch redrawn by the domain randomisation, with its
    share of negatives); the summed loss, weighted by the hip views of each batch."""
    from osteo_model.roi_augment import randomise

    model.train()
    size, n_neg = config.input_size, round(config.neg_share * config.batch_size)
    order = torch.randperm(len(x), generator=gen)
    total = 0.0
    for i in range(math.ceil(len(x) / config.batch_size)):
        idx = order[i * config.batch_size:(i + 1) * config.batch_size]
        if len(idx) < 2 and len(x) > 1:  # a batch of one says little to BatchNorm; skip it
            continue
        xb, bb, target = x[idx], boxes[idx], torch.ones(len(idx))
        if config.augment:
            xb, bb, target = randomise(xb, bb, gen, zoom_in=config.zoom_in, rotate=config.rotate)
        if n_neg:
            xb = torch.cat([xb, _negatives(pool, n_neg, size, gen, config.augment)])
            bb, target = torch.cat([bb, torch.zeros(n_neg, 4)]), torch.cat([target, torch.zeros(n_neg)])
        loss = _step_loss(model, xb.to(device), bb.to(device), target.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(idx)
    return total


# ---------------------------------------------------------------- prediction
def _peak_mass(heat: torch.Tensor) -> torch.Tensor:
    """Heat-map mass in the best 3 x 3 window: ~1 where the model sees one neck, low on noise or blanks."""
    return (F.avg_pool2d(heat.unsqueeze(1), 3, 1, 1) * 9).flatten(1).amax(1).clamp(0, 1)


def _run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    if isinstance(model, Localiser):
        box, heat, presence = model.forward_parts(x)
        return box.float().clamp(0, 1), heat, presence
    return model(x).float(), None, None


def calibration_of(model: nn.Module) -> np.ndarray:
    """The model's calibration ([fitted, bias, weights...]; unfitted zeros when it has none)."""
    from osteo_model.roi import CALIBRATION_SIZE

    cal = getattr(model, "calibration", None)
    return cal.detach().cpu().double().numpy() if cal is not None else np.zeros(CALIBRATION_SIZE)


@torch.no_grad()
def predict_scores(model: nn.Module, views: np.ndarray, *, device="cpu", batch_size: int = 32,
                   tta: bool = True) -> dict[str, np.ndarray]:
    """Boxes [N, 4] in view pixels and the raw scores [N] of views [N, S, S] (or one [S, S]):
    presence (the presence head's probability; 1 without one), agreement (boxes predicted on
    shifted/scaled copies, transforms undone, against the main box: a copy agrees fully at IoU >=
    AGREE_IOU, in proportion below; NaN with ``tta=False``) and peak (the heat map's mass in its
    best 3 x 3 window; 1 for "regress")."""
    device = torch.device(device)
    views = np.asarray(views, dtype=np.float32)
    size = views.shape[-1]
    x = _views(views, size)
    model = model.to(device).eval()
    k = len(TTA) if tta else 0
    params = torch.tensor(TTA, dtype=torch.float32)
    out: dict[str, list] = {"boxes": [], "presence": [], "agreement": [], "peak": []}
    share = float(getattr(model, "refine", 0.0))  # an osteo-roi/1 model or a plain module: no second look
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device)
        n = len(xb)
        scale = params[:, 0].repeat_interleave(n).to(device)
        shift = params[:, 1:].repeat_interleave(n, 0).to(device)
        pred, heat, presence = _run(model, torch.cat([xb, affine_views(xb.repeat(k, 1, 1, 1), scale, shift)])
                                    if k else xb)
        main = pred[:n].cpu().numpy()
        if share > 0:
            main = refine_boxes(model, xb, pred[:n], share).cpu().numpy()
        if k:
            back = affine_boxes(pred[n:], scale, shift, inverse=True).clamp(0, 1).view(k, n, 4).cpu().numpy()
            out["agreement"].append(np.minimum(1.0, box_iou(back, main[None]) / AGREE_IOU).mean(0))
        else:
            out["agreement"].append(np.full(n, np.nan))
        out["peak"].append(_peak_mass(heat[:n]).cpu().numpy() if heat is not None else np.ones(n))
        out["presence"].append(torch.sigmoid(presence[:n]).cpu().numpy() if presence is not None else np.ones(n))
        out["boxes"].append(main * size)
    if not out["boxes"]:
        return {"boxes": np.zeros((0, 4), np.float32), **{k: np.zeros(0, np.float32) for k in list(out)[1:]}}
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


def refine_boxes(model: nn.Module, x: torch.Tensor, boxes: torch.Tensor, share: float) -> torch.Tensor:
    """A second look: each view [N, 1, S, S] zoomed about its first box [N, 4] (normalised) so that
    the box's larger side spans ``share`` of the view (at most REFINE_MAX times, never out), the box
    predicted again there and mapped back. The neck is 10-20 px of a 160 px pelvis half; the
    stride-8 network places its edges better when it covers more of the view."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).amax(1).clamp(min=1e-3)
    scale = (share / side).clamp(1.0, REFINE_MAX)
    shift = scale[:, None] * (1 - 2 * centre)  # puts the box centre at the view's centre
    second = _run(model, affine_views(x, scale, shift))[0]
    return affine_boxes(second, scale, shift, inverse=True).clamp(0, 1)


def predict_boxes(model: nn.Module, views: np.ndarray, *, device="cpu", batch_size: int = 32,
                  tta: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [N, 4] in view pixels and confidence [N] in [0, 1] for views [N, S, S] (or one [S, S]).

    The confidence is the model's calibrated mapping of its raw scores (osteo_model.roi_calibrate:
    about P(IoU >= 0.5)); before calibration, presence x agreement x peak. The test-time copies are
    run only when the mapping uses the agreement. ``tta=False``: boxes only, confidence NaN.
    """
    from osteo_model.roi_calibrate import apply, needs_agreement

    cal = calibration_of(model)
    scores = predict_scores(model, views, device=device, batch_size=batch_size, tta=tta and needs_agreement(cal))
    if not tta:
        return scores["boxes"], np.full(len(scores["boxes"]), np.nan, dtype=np.float32)
    return scores["boxes"], apply(cal, scores).astype(np.float32)


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
    if not isinstance(payload, dict) or payload.get("format") not in (ROI_FORMAT, *OLD_FORMATS):
        raise ValueError(f"{path}: not an osteo localiser checkpoint")
    config = RoiConfig.from_dict(payload["config"])
    model = build_localiser(config, presence=payload["format"] == ROI_FORMAT)
    model.load_state_dict(payload["state_dict"])
    return model.to(torch.device(device)).eval(), config, dict(payload.get("extra") or {})
