"""`osteo bench --only cuda`: the GPU rows, or SKIP rows that say why where torch sees no CUDA device.

1. AMP and channels-last chosen by measurement (osteo_model.accel): training steps/s of the paper
   preset's network and batch for each candidate; the fastest whose loss stays finite is kept.
2. The paper preset's training (fit, with that choice) against the plain float32 PyTorch loop, steps/s.
3. Batch inference (predict_probs, autocast) against a plain torchvision + DataLoader float32 loop, images/s.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bench.common import row, target, timed

STAGE = "cuda"
ROWS = ("cuda: AMP and channels-last choice (paper preset, 224 px, batch 5)",
        "training paper preset on CUDA (steps/s)",
        "inference resnet18 224 px on CUDA (images/s)")


def skip_reason() -> str | None:
    """Why the CUDA rows cannot run here, or None when they can."""
    from osteo_model.accel import NO_CUDA

    return None if torch.cuda.is_available() else f"{NO_CUDA}: skipped"


def skipped(name: str, reason: str) -> dict[str, Any]:
    """A row that did not run: no figures, status SKIP, the reason as its note (never a silent pass)."""
    return {"name": name, "stage": STAGE, "ours": None, "baseline": None, "ratio": None, "unit": "-", "work": "-",
            "target": None, "status": "SKIP", "note": reason}


def run(pngs: list[str], n_images: int, epochs: int, n_infer: int) -> list[dict[str, Any]]:
    reason = skip_reason()
    if reason:
        return [skipped(name, reason) for name in ROWS]
    device = torch.device("cuda")
    choice_row, accel = choose(device)
    return [choice_row, train_row(pngs, n_images, epochs, device, accel), infer_row(pngs, n_infer, device)]


def choose(device: torch.device):
    from osteo_model.accel import Accel, candidates, choose_fastest, input_shape, step_timer
    from osteo_model.config import get_preset
    from osteo_model.models import build_model
    from osteo_model.train import make_optimizer

    config = get_preset("paper")
    torch.manual_seed(0)
    model = build_model(config.arch).to(device)
    measure = step_timer(model, torch.nn.BCEWithLogitsLoss(), lambda m: make_optimizer(m, config),
                         input_shape(model, config.batch_size, config.image_size), device, steps=30, warmup=5)
    accel, trials = choose_fastest(candidates(device), measure)
    fp32 = next(t for t in trials if t.accel == Accel())
    best = next(t for t in trials if t.accel == accel)
    return row(ROWS[0], stage=STAGE, ours=best.steps_per_s, baseline=fp32.steps_per_s, unit="steps/s",
               work=f"{len(trials)} candidates x 30 steps", gpu=torch.cuda.get_device_name(device),
               choice=accel.label, trials=[{"choice": t.accel.label, "steps_per_s": round(t.steps_per_s, 2),
                                            "loss": t.loss} for t in trials],
               note=f"chosen: {accel.label} (fastest with a finite loss; baseline: float32, contiguous); what "
                    "`osteo train --amp auto --channels-last auto` measures per fold on CUDA"), accel


def train_row(pngs: list[str], n_images: int, epochs: int, device: torch.device, accel) -> dict[str, Any]:
    from bench.training import ours_loop, plain_loop

    paths = [pngs[i % len(pngs)] for i in range(n_images)]
    labels = [i % 2 for i in range(n_images)]
    chosen = dict(amp=accel.amp, channels_last="on" if accel.channels_last else "off")  # measured once, above
    ours_loop(paths[:10], labels[:10], 224, 5, 1, device, preset="paper", **chosen)  # warm-up
    plain_loop(paths[:10], labels[:10], 224, 5, 1, device)
    t_ours, _ = timed(lambda: ours_loop(paths, labels, 224, 5, epochs, device, preset="paper", **chosen))
    t_plain, _ = timed(lambda: plain_loop(paths, labels, 224, 5, epochs, device))
    steps = math.ceil(n_images / 5) * epochs
    return row(ROWS[1], stage=STAGE, ours=steps / t_ours, baseline=steps / t_plain, unit="steps/s",
               work=f"{n_images} images x {epochs} epochs, 224 px, batch 5", goal=target("ratio", ">=", 0.95),
               ours_s=round(t_ours, 2), baseline_s=round(t_plain, 2), choice=accel.label,
               note=f"ours: fit with the paper preset (SGD, online augmentation, {accel.label}); plain: the float32 "
                    "torchvision + DataLoader loop on the same device; one fold, no validation")


def infer_row(pngs: list[str], n: int, device: torch.device) -> dict[str, Any]:
    from torchvision import transforms as T
    from torchvision.datasets.folder import pil_loader

    from osteo_model.models import build_model
    from osteo_model.train import predict_probs

    paths = [pngs[i % len(pngs)] for i in range(max(n, 64))]
    torch.manual_seed(0)
    model = build_model("resnet18").to(device).eval()
    tf = T.Compose([T.Grayscale(1), T.Resize((224, 224)), T.ToTensor(), T.Normalize([0.449], [0.226])])

    def plain():
        # a list is a map-style dataset (__getitem__, __len__), which DataLoader's Dataset annotation leaves out
        loader = torch.utils.data.DataLoader([tf(pil_loader(p)) for p in paths], batch_size=64)  # pyright: ignore[reportArgumentType]
        with torch.no_grad():
            out = [torch.sigmoid(model(x.to(device))).cpu() for x in loader]
        return torch.cat(out)

    def ours():
        return predict_probs(model, paths, 224, device, batch_size=64)

    ours(), plain()  # warm-up
    t_ours, _ = timed(ours)
    t_plain, _ = timed(plain)
    return row(ROWS[2], stage=STAGE, ours=len(paths) / t_ours, baseline=len(paths) / t_plain, unit="images/s",
               work=f"{len(paths)} PNGs, batch 64", gpu=torch.cuda.get_device_name(device),
               note="ours: predict_probs (PngDataset, DataLoader, fp16 autocast); plain: torchvision preprocess, "
                    "DataLoader, float32 under no_grad; decoding included on both sides")
