"""Device, mixed precision (AMP) and memory format of one training, chosen by measurement on CUDA.

On CUDA, ``amp='auto'`` and ``channels_last='auto'`` time a few training steps of a copy of the model
for each candidate (float32 / float16 + GradScaler / bfloat16, each contiguous and channels-last) and
keep the fastest whose loss stays finite: which wins depends on the card (tensor cores, bf16 support)
and the network, so it is measured, not assumed. On CPU 'auto' means float32 and contiguous, with no
measurement, so a CPU training is unchanged and bit-for-bit reproducible.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from osteo_model.config import TrainConfig

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"


@dataclass(frozen=True)
class Accel:
    """What a training runs with: amp 'off' | 'bf16' | 'fp16', and the memory format."""

    amp: str = "off"
    channels_last: bool = False

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES.get(self.amp)

    @property
    def label(self) -> str:
        return f"amp={self.amp}, channels_last={'on' if self.channels_last else 'off'}"


@dataclass(frozen=True)
class Trial:
    """One candidate's measurement: training steps per second and the loss of its last step."""

    accel: Accel
    steps_per_s: float
    loss: float


def select_device(name: str = "auto") -> torch.device:
    """'auto': CUDA when available, else CPU; 'cuda' without a CUDA device is refused (ValueError)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda: {NO_CUDA}; use --device cpu or auto")
    return torch.device(name)


def check_accel(config: TrainConfig) -> torch.device:
    """The device of `config`, refusing what it cannot run (ValueError, one line): fp16 without
    CUDA, bf16 on a card without bf16."""
    device = select_device(config.device)
    if config.amp == "fp16" and device.type != "cuda":
        raise ValueError(f"--amp fp16 needs a CUDA device ({NO_CUDA} or --device cpu); "
                         "on CPU use --amp off or bf16")
    if config.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use --amp fp16 or off")
    return device


def candidates(device: torch.device, amp: str = "auto", channels_last: str = "auto") -> tuple[Accel, ...]:
    """Every combination the device supports within the fixed choices; float32 contiguous first."""
    if amp != "auto":
        amps = [amp]
    elif device.type == "cuda":
        amps = ["off", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    else:
        amps = ["off", "bf16"]
    layouts = [channels_last == "on"] if channels_last != "auto" else [False, True]
    return tuple(Accel(a, cl) for a in amps for cl in layouts)


def choose_fastest(cands: Sequence[Accel], measure: Callable[[Accel], tuple[float, float]]
                   ) -> tuple[Accel, tuple[Trial, ...]]:
    """The candidate with the most steps/s whose loss is finite (the first wins a tie); float32
    contiguous when none is. `measure(accel)` -> (steps per second, last loss)."""
    trials = tuple(Trial(c, *measure(c)) for c in cands)
    finite = [t for t in trials if math.isfinite(t.loss) and math.isfinite(t.steps_per_s)]
    if not finite:
        return Accel(), trials
    return max(finite, key=lambda t: t.steps_per_s).accel, trials


def resolve_accel(config: TrainConfig, device: torch.device,
                  measure: Callable[[Accel], tuple[float, float]] | None = None) -> tuple[Accel, tuple[Trial, ...]]:
    """The options as given; 'auto' is off on CPU and measured on CUDA (by `measure`)."""
    if config.amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp fp16 needs a CUDA device, not {device.type}")
    if device.type != "cuda" or measure is None or "auto" not in (config.amp, config.channels_last):
        amp = "off" if config.amp == "auto" else config.amp
        return Accel(amp, config.channels_last == "on"), ()
    return choose_fastest(candidates(device, config.amp, config.channels_last), measure)


def step_timer(model: nn.Module, criterion: nn.Module, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
               shape: tuple[int, ...], device: torch.device, steps: int = 10, warmup: int = 3
               ) -> Callable[[Accel], tuple[float, float]]:
    """A `measure` for choose_fastest: `steps` training steps (after `warmup`) of a copy of `model` on one
    random batch of `shape`; the model, its optimiser and the random state are left untouched."""
    def measure(accel: Accel) -> tuple[float, float]:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            net = copy.deepcopy(model).to(device)
            x = torch.randn(shape, device=device)
            y = (torch.arange(shape[0], device=device) % 2).float().view(-1, 1)
            if accel.channels_last:
                net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
            opt = make_optimizer(net)
            scaler = torch.amp.GradScaler(device.type) if accel.amp == "fp16" else None
            net.train()
            loss, t0 = torch.zeros(()), time.perf_counter()
            for i in range(warmup + steps):
                if i == warmup:
                    _sync(device)
                    t0 = time.perf_counter()
                loss = _step(net, opt, criterion, x, y, device, accel, scaler)
            _sync(device)
            return steps / (time.perf_counter() - t0), float(loss)
    return measure


def _step(net, opt, criterion, x, y, device, accel: Accel, scaler) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=accel.dtype or torch.float32, enabled=accel.amp != "off"):
        out = net(x)
        loss = criterion((out if isinstance(out, torch.Tensor) else out[0]).float(), y)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return loss.detach()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def input_shape(model: nn.Module, batch_size: int, image_size: int) -> tuple[int, int, int, int]:
    """(batch, channels of the first convolution, size, size): the batch a training step sees."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return (batch_size, conv.in_channels, image_size, image_size)
