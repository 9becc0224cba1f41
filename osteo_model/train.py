"""Training loop: plain functions in the style of torchvision's classification references.

The knobs are :class:`~osteo_model.config.TrainConfig` and its presets (``osteo_model/config.py``:
'paper', exactly the seed's ResNet18 at 224 px, and 'demo'); here:

- the environment: :func:`select_device`, :func:`seed_everything`, :func:`configure_threads`;
- the building blocks: the loss (BCEWithLogitsLoss, ``pos_weight`` for imbalance), SGD with momentum
  or AdamW, StepLR (the seed's) or a warm-up and a cosine decay;
- :func:`fit`: trains, evaluates each epoch, keeps the best state dict by ``config.select_by``
  (:func:`selection_key`, the rule that also picks the best fold, :func:`pick_best`) and reports
  every epoch's :class:`~osteo_model.stats.EpochRecord` to ``on_epoch`` (osteo_mlflow.runs logs it to
  MLflow from there; this package knows nothing of MLflow);
- :func:`train_fold` and :func:`predict_probs`: one fold from two manifest frames, and the scoring
  of PNGs, for osteo/training/folds.py and osteo/training/evaluation.py.

CUDA: ``config.amp`` / ``config.channels_last`` ('auto': the fastest by measurement, osteo_model/accel.py);
CPU: float32 unless asked, and bit-for-bit reproducible for a fixed seed (same losses run to run).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from osteo_model.accel import Accel, Trial, check_accel, input_shape, resolve_accel, select_device, step_timer
from osteo_model.config import TrainConfig
from osteo_model.stats import EpochRecord, EpochStats, EvalStats


# ---------------------------------------------------------------- environment
def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and CUDA); deterministic cuDNN kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def configure_threads(num_threads: int | None = None, num_workers: int = 0) -> int:
    """Set torch's intra-op threads: ``num_threads`` or (cores - loader workers), >= 1, so
    the loader's workers and the model do not oversubscribe a small machine."""
    n = num_threads or max(1, cpu_count() - num_workers)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------- building blocks
def make_criterion(config: TrainConfig, train_labels=None, device=None) -> nn.Module:
    """BCEWithLogitsLoss; with imbalance='pos_weight', pos_weight = n_negative / n_positive."""
    if config.imbalance == "pos_weight":
        if train_labels is None:
            raise ValueError("pos_weight needs the training labels")
        y = np.asarray(train_labels).astype(int)
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        w = n_neg / n_pos if n_pos else 1.0
        return nn.BCEWithLogitsLoss(pos_weight=torch.tensor([w], dtype=torch.float32, device=device))
    return nn.BCEWithLogitsLoss()


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def make_scheduler(optimizer, config: TrainConfig):
    """Stepped once per epoch. 'cosine': ``warmup_epochs`` of linear warm-up from lr/10, then a
    cosine decay to 0 at the last epoch, so the last epochs run at a small learning rate."""
    sched = torch.optim.lr_scheduler
    if config.schedule == "step":
        return sched.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    warmup = max(0, min(config.warmup_epochs, config.epochs - 1))
    cosine = sched.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs - warmup))
    if not warmup:
        return cosine
    return sched.SequentialLR(
        optimizer, [sched.LinearLR(optimizer, start_factor=0.1, total_iters=warmup), cosine], milestones=[warmup])


def _autocast(device: torch.device, enabled: bool, dtype: torch.dtype | None = None):
    # default: float16 on CUDA (with GradScaler), bfloat16 on CPU
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.bfloat16)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def _to(t: torch.Tensor, device, non_blocking: bool, channels_last: bool) -> torch.Tensor:
    t = t.to(device, non_blocking=non_blocking)
    return t.to(memory_format=torch.channels_last) if channels_last else t


def train_one_epoch(model, loader, optimizer, criterion, device, scaler=None, *,
                    amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> EpochStats:
    """One pass over ``loader``. ``scaler`` (a torch.amp.GradScaler, for float16) or ``amp_dtype``
    turns autocast on; ``channels_last`` sends the batches in that format (the caller converts the model).

    Returns the mean loss per image, the accuracy (threshold 0.5), the images seen and the seconds.
    """
    model.train()
    amp = scaler is not None or amp_dtype is not None
    t0 = time.perf_counter()
    total_loss, correct, n = 0.0, 0, 0
    non_blocking = device.type == "cuda"
    for x, y in loader:
        x = _to(x, device, non_blocking, channels_last)
        y = y.to(device, non_blocking=non_blocking).float().view(-1, 1)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp, amp_dtype):
            logits = model(x)
            if not isinstance(logits, torch.Tensor):  # GoogLeNet/Inception named tuples
                logits = logits[0]
            loss = criterion(logits.float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        b = y.shape[0]
        total_loss += loss.detach().item() * b
        correct += ((logits.detach() > 0).float() == y).sum().item()
        n += b
    return EpochStats(loss=total_loss / max(n, 1), accuracy=correct / max(n, 1), n=n,
                      seconds=time.perf_counter() - t0)


@torch.no_grad()
def evaluate(model, loader, criterion, device, *, amp: bool = False, amp_dtype: torch.dtype | None = None,
             channels_last: bool = False) -> EvalStats:
    """Loss and sigmoid probabilities over ``loader`` (eval mode).

    Returns the mean loss, the probabilities (np.ndarray float64), the labels (np.ndarray int), n and seconds.
    """
    model.eval()
    t0 = time.perf_counter()
    total_loss, n = 0.0, 0
    probs, labels = [], []
    for x, y in loader:
        x = _to(x, device, False, channels_last)
        y = y.to(device).float().view(-1, 1)
        with _autocast(device, amp or amp_dtype is not None, amp_dtype):
            logits = model(x)
        logits = logits.float()
        total_loss += criterion(logits, y).item() * y.shape[0]
        n += y.shape[0]
        probs.append(torch.sigmoid(logits).view(-1).cpu())
        labels.append(y.view(-1).cpu())
    p = torch.cat(probs).double().numpy() if probs else np.zeros(0)
    lab = torch.cat(labels).numpy().astype(int) if labels else np.zeros(0, dtype=int)
    return EvalStats(loss=total_loss / n if n else float("nan"), probs=p, labels=lab, n=n,
                     seconds=time.perf_counter() - t0)


@dataclass
class FitResult:
    best_state: dict  # state dict (CPU tensors) of the best epoch
    best_epoch: int  # 1-based
    best_metrics: EpochRecord  # the history record of the best epoch
    history: list[EpochRecord] = field(default_factory=list)  # one record per epoch
    val_probs: np.ndarray | None = None  # validation probabilities at the best epoch
    val_labels: np.ndarray | None = None
    accel: Accel = field(default_factory=Accel)  # the AMP and memory format it trained with
    accel_trials: tuple[Trial, ...] = ()  # the measurements behind an 'auto' choice (CUDA only)


def _auc(labels, probs) -> float:
    if len(labels) == 0 or len(np.unique(labels)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probs))


def _recall(labels, probs, threshold) -> float:
    pos = labels == 1
    if not pos.any():
        return float("nan")
    return float((probs[pos] >= threshold).mean())


def selection_key(record: Mapping[str, Any], select_by: str) -> tuple[float, ...]:
    """The one selection rule, for epochs and folds alike (smaller key is better).

    Lowest validation loss, or the highest validation recall / AUC with the loss breaking ties;
    a missing or NaN value counts as the worst.
    """
    def finite_or(v, default: float) -> float:
        return default if v is None or not math.isfinite(v) else float(v)

    loss = finite_or(record["val_loss"], math.inf)
    if select_by == "val_loss":
        return (loss,)
    return (-finite_or(record.get(select_by), -math.inf), loss)


def pick_best(records: Sequence[Any], select_by: str, key: Callable[[Any], Mapping[str, Any]] = dict) -> Any:
    """The best of `records` by :func:`selection_key` (the first wins a tie); `key` maps a record to its values."""
    return min(records, key=lambda r: selection_key(key(r), select_by))


def _is_better(rec: EpochRecord, best: EpochRecord | None, select_by: str) -> bool:
    return best is None or selection_key(rec.to_dict(), select_by) < selection_key(best.to_dict(), select_by)


def _train_labels(loader) -> np.ndarray | None:
    labels = getattr(getattr(loader, "dataset", None), "labels", None)
    if labels is not None:
        return np.asarray(labels)
    return None


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    config: TrainConfig,
    device: torch.device,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
) -> FitResult:
    """Train ``model`` for ``config.epochs`` epochs; evaluate on ``val_loader`` each epoch.

    History records (:class:`~osteo_model.stats.EpochRecord`, also passed to ``on_epoch(epoch, record)``,
    epoch 1-based): train loss and accuracy, validation loss, AUC, recall and accuracy, the epoch's lr and
    seconds (train + eval). With ``val_loader=None`` the last epoch is "best".
    The model is left with the LAST epoch's weights; load ``result.best_state`` for the best.
    AMP and channels-last: ``config.amp`` / ``config.channels_last``, 'auto' measured on CUDA
    (the choice and its trials in ``result.accel`` / ``result.accel_trials``).
    """
    if device.type == "cpu":
        configure_threads(config.num_threads, config.num_workers)
    model.to(device)
    criterion = make_criterion(config, _train_labels(train_loader), device)
    measure = None if device.type != "cuda" else step_timer(
        model, criterion, lambda m: make_optimizer(m, config), input_shape(model, config.batch_size, config.image_size),
        device)
    accel, trials = resolve_accel(config, device, measure)
    if accel.channels_last:
        model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler(device.type) if accel.amp == "fp16" else None
    eval_criterion = nn.BCEWithLogitsLoss()  # unweighted: comparable across configs
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)

    history: list[EpochRecord] = []
    best: EpochRecord | None = None
    best_state, best_probs, best_labels = None, None, None
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(model, train_loader, optimizer, criterion, device, scaler, amp_dtype=accel.dtype,
                             channels_last=accel.channels_last)
        scheduler.step()
        val, probs, labels = _validate(model, val_loader, eval_criterion, device, config, accel)
        rec = EpochRecord(epoch=epoch, train_loss=tr.loss, train_accuracy=tr.accuracy, **val, lr=lr,
                          seconds=time.perf_counter() - t0)
        history.append(rec)
        if val_loader is None or _is_better(rec, best, config.select_by):
            best = rec
            # contiguous on the CPU whatever the training's memory format, so checkpoints load anywhere
            best_state = {k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
                          if accel.channels_last else v.detach().to("cpu", copy=True)
                          for k, v in model.state_dict().items()}
            best_probs, best_labels = probs, labels
        if on_epoch is not None:
            on_epoch(epoch, rec)
    if best is None or best_state is None:  # both are set by the first epoch
        raise ValueError("config.epochs must be >= 1")
    if accel.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return FitResult(best_state=best_state, best_epoch=best.epoch, best_metrics=best, history=history,
                     val_probs=best_probs, val_labels=best_labels, accel=accel, accel_trials=trials)


def _validate(model, val_loader, criterion, device, config: TrainConfig, accel: Accel
              ) -> tuple[dict[str, float], np.ndarray | None, np.ndarray | None]:
    """The epoch's validation figures (NaN without a loader), probabilities and labels."""
    if val_loader is None:
        nan = float("nan")
        return {"val_loss": nan, "val_auc": nan, "val_recall": nan, "val_accuracy": nan}, None, None
    ev = evaluate(model, val_loader, criterion, device, amp=accel.amp != "off", amp_dtype=accel.dtype,
                  channels_last=accel.channels_last)
    probs, labels = ev.probs, ev.labels
    return {"val_loss": ev.loss, "val_auc": _auc(labels, probs), "val_recall": _recall(labels, probs, config.threshold),
            "val_accuracy": float(((probs >= config.threshold) == labels).mean()) if len(labels) else float("nan")
            }, probs, labels


# ---------------------------------------------------------------- for osteo/training/
def train_fold(
    train_df,
    val_df,
    config: TrainConfig,
    device: torch.device | None = None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
) -> tuple[nn.Module, FitResult]:
    """Seed, build the model, the datasets and loaders from two manifest frames (columns
    path, label), fit, and return (model with the BEST weights loaded, FitResult)."""
    from osteo_model.data import PngDataset, make_loader
    from osteo_model.models import build_model

    device = device or check_accel(config)
    seed_everything(config.seed)
    model = build_model(config.arch, pretrained_weights=config.pretrained_weights)
    train_ds = PngDataset.from_frame(
        train_df, image_size=config.image_size, augment=config.augment == "online", seed=config.seed
    )
    train_loader = make_loader(
        train_ds, batch_size=config.batch_size, train=True, seed=config.seed,
        num_workers=config.num_workers, imbalance=config.imbalance,
    )
    val_loader = None
    if val_df is not None and len(val_df):
        val_ds = PngDataset.from_frame(val_df, image_size=config.image_size)
        val_loader = make_loader(
            val_ds, batch_size=max(config.batch_size, 32), train=False,
            num_workers=config.num_workers,
        )
    result = fit(model, train_loader, val_loader, config, device, on_epoch=on_epoch)
    model.load_state_dict(result.best_state)
    return model, result


@torch.no_grad()
def predict_probs(
    model: nn.Module, paths, image_size: int, device: torch.device | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Probabilities for PNG paths through the eval preprocessing (for test-set scoring)."""
    from osteo_model.data import PngDataset, make_loader

    device = device or next(model.parameters()).device
    ds = PngDataset(list(paths), [0] * len(paths), image_size=image_size)
    loader = make_loader(ds, batch_size=batch_size, train=False)
    res = evaluate(model.to(device), loader, nn.BCEWithLogitsLoss(), device,
                   amp=device.type == "cuda")
    return res.probs


__all__ = [
    "EpochRecord",
    "EpochStats",
    "EvalStats",
    "FitResult",
    "check_accel",
    "configure_threads",
    "evaluate",
    "fit",
    "make_criterion",
    "make_optimizer",
    "make_scheduler",
    "pick_best",
    "predict_probs",
    "seed_everything",
    "select_device",
    "selection_key",
    "train_fold",
    "train_one_epoch",
]
