"""The device, AMP and channels-last choice (osteo_model.accel): the chooser against a fake timer, the
real step timer and fit on CPU with what CPU supports (bfloat16 autocast, channels-last)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_toy import toy_set

from osteo_model.accel import (
    Accel,
    candidates,
    check_accel,
    choose_fastest,
    input_shape,
    resolve_accel,
    select_device,
    step_timer,
)
from osteo_model.config import TrainConfig
from osteo_model.data import PngDataset, make_loader
from osteo_model.models import build_model
from osteo_model.train import fit, seed_everything

CPU = torch.device("cpu")


def test_the_fastest_candidate_with_a_finite_loss_wins():
    cands = candidates(CPU)
    assert cands == (Accel("off", False), Accel("off", True), Accel("bf16", False), Accel("bf16", True))
    speed = {Accel("off", False): 10.0, Accel("off", True): 12.0, Accel("bf16", False): 30.0,
             Accel("bf16", True): 25.0}
    chosen, trials = choose_fastest(cands, lambda a: (speed[a], 0.7))
    assert chosen == Accel("bf16", False) and [t.steps_per_s for t in trials] == [10.0, 12.0, 30.0, 25.0]
    # the fastest diverges: the next fastest with a finite loss
    chosen, _ = choose_fastest(cands, lambda a: (speed[a], math.nan if a == Accel("bf16", False) else 0.7))
    assert chosen == Accel("bf16", True)
    # a tie goes to the earlier (plainer) candidate; nothing finite: float32, contiguous
    assert choose_fastest(cands, lambda a: (5.0, 0.7))[0] == Accel("off", False)
    assert choose_fastest(cands, lambda a: (speed[a], math.inf))[0] == Accel()
    # a fixed option narrows the candidates
    assert candidates(CPU, amp="off") == (Accel("off", False), Accel("off", True))
    assert candidates(CPU, channels_last="on") == (Accel("off", True), Accel("bf16", True))


def test_auto_is_off_on_cpu_and_measured_only_on_cuda():
    calls = []

    def measure(a):
        calls.append(a)
        return (2.0 if a.channels_last else 1.0), 0.5

    assert resolve_accel(TrainConfig(), CPU, measure) == (Accel("off", False), ())
    assert resolve_accel(TrainConfig(amp="bf16", channels_last="on"), CPU, measure)[0] == Accel("bf16", True)
    assert not calls
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_accel(TrainConfig(amp="fp16"), CPU, measure)


def test_step_timer_measures_a_copy_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    shape = input_shape(model, 4, 16)
    assert shape == (4, 1, 16, 16)
    measure = step_timer(model, torch.nn.BCEWithLogitsLoss(), lambda m: torch.optim.SGD(m.parameters(), lr=0.01),
                         shape, CPU, steps=3, warmup=1)
    chosen, trials = choose_fastest(candidates(CPU), measure)
    assert chosen in candidates(CPU) and len(trials) == 4
    assert all(t.steps_per_s > 0 and math.isfinite(t.loss) for t in trials)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_options_checked_against_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == CPU and check_accel(TrainConfig(amp="bf16", channels_last="on")) == CPU
    with pytest.raises(ValueError, match=r"^--amp fp16 needs a CUDA device"):
        check_accel(TrainConfig(amp="fp16"))
    with pytest.raises(ValueError, match=r"^--device cuda: no CUDA device \(torch.cuda.is_available\(\) is False\)"):
        check_accel(TrainConfig(device="cuda"))
    for bad in (dict(amp="fp8"), dict(channels_last="yes"), dict(device="tpu")):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    # checkpoints written before these options carried amp as None or a bool
    assert TrainConfig.from_dict({"amp": None}).amp == "auto" and TrainConfig.from_dict({"amp": False}).amp == "off"


def test_fit_on_cpu_with_bf16_and_channels_last(tmp_path):
    paths, labels = toy_set(tmp_path, 6, seed=2, size=32)
    cfg = TrainConfig(image_size=32, epochs=2, batch_size=3, lr=0.01, augment="none", amp="bf16",
                      channels_last="on")
    seed_everything(0)
    model = build_model(cfg.arch)
    loader = make_loader(PngDataset(paths, labels, image_size=32), batch_size=3, train=True)
    res = fit(model, loader, loader, cfg, CPU)
    assert res.accel == Accel("bf16", True) and res.accel_trials == ()
    assert all(np.isfinite(h.train_loss) and np.isfinite(h.val_loss) for h in res.history)
    # the checkpointed state and the model come back contiguous, whatever the training's memory format
    assert all(v.is_contiguous() for v in res.best_state.values())
    assert model.conv1.weight.is_contiguous()
    # the default on CPU is float32, contiguous, no measurement
    seed_everything(0)
    plain = fit(build_model(cfg.arch), loader, None, cfg.replace(amp="auto", channels_last="auto", epochs=1), CPU)
    assert plain.accel == Accel() and plain.accel_trials == ()
