import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from model_toy import toy_manifest, toy_set
from PIL import Image

from osteo_model.config import PRESETS, TrainConfig, get_preset
from osteo_model.data import PngDataset, UndersampleSampler, make_loader, preprocess
from osteo_model.models import build_model
from osteo_model.predict import Predictor, load_checkpoint, save_checkpoint
from osteo_model.stats import EpochRecord, EpochStats, EvalStats
from osteo_model.train import (
    evaluate,
    fit,
    make_optimizer,
    make_scheduler,
    seed_everything,
    select_device,
    train_fold,
)

CPU = torch.device("cpu")


def _fit(paths, labels, cfg, val=True):
    seed_everything(cfg.seed)
    model = build_model(cfg.arch)
    ds = PngDataset(paths, labels, image_size=cfg.image_size, augment=cfg.augment == "online")
    tl = make_loader(ds, batch_size=cfg.batch_size, train=True, seed=cfg.seed,
                     imbalance=cfg.imbalance)
    vl = make_loader(PngDataset(paths, labels, image_size=cfg.image_size),
                     batch_size=16, train=False) if val else None
    seen = []
    res = fit(model, tl, vl, cfg, CPU, on_epoch=lambda e, r: seen.append((e, r)))
    return model, res, seen


def test_presets():
    paper = PRESETS["paper"]
    assert (paper.arch, paper.image_size, paper.epochs, paper.batch_size, paper.lr,
            paper.momentum, paper.step_size, paper.folds) == ("resnet18", 224, 50, 5, 0.001,
                                                               0.9, 15, 5)
    assert paper == TrainConfig()
    assert get_preset("demo", epochs=1).epochs == 1 and PRESETS["demo"].epochs > 1
    assert TrainConfig.from_dict(PRESETS["demo"].to_dict()) == PRESETS["demo"]
    with pytest.raises(ValueError):
        TrainConfig(imbalance="smote")


def test_select_device_follows_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device() == torch.device("cuda")


def _lrs(cfg):
    model = torch.nn.Linear(2, 1)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return opt, lrs


def test_optimizers_and_schedules():
    opt, lrs = _lrs(TrainConfig(epochs=31))  # the seed's: SGD, lr / 10 every 15 epochs
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    assert lrs[0] == lrs[14] == pytest.approx(1e-3) and lrs[15] == pytest.approx(1e-4)
    assert lrs[30] == pytest.approx(1e-5)
    cfg = TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.05, schedule="cosine", warmup_epochs=2,
                      epochs=12)
    opt, lrs = _lrs(cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.05
    # linear warm-up from lr / 10, the full lr after it, then a monotone decay towards 0
    assert lrs[0] == pytest.approx(1e-3) and lrs[0] < lrs[1] < lrs[2] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.05 * cfg.lr
    _, no_warmup = _lrs(cfg.replace(warmup_epochs=0))
    assert no_warmup[0] == pytest.approx(0.01)
    for bad in (dict(optimizer="adam"), dict(schedule="onecycle")):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_tiny_fit_overfits_eight_images(tmp_path):
    paths, labels = toy_set(tmp_path, 8, seed=0, size=64)
    cfg = TrainConfig(image_size=32, epochs=8, batch_size=8, lr=0.02, step_size=100,
                      augment="none", seed=0)
    model, res, seen = _fit(paths, labels, cfg)
    losses = [h.train_loss for h in res.history]
    assert losses[-1] < 0.2 * losses[0]
    assert res.history[-1].train_accuracy == 1.0
    assert [e for e, _ in seen] == list(range(1, 9))
    # on_epoch gets the very records of the history, frozen
    assert [r for _, r in seen] == res.history and all(isinstance(r, EpochRecord) for r in res.history)
    assert set(seen[0][1].to_dict()) >= {"train_loss", "val_loss", "val_auc", "val_recall", "lr", "seconds"}
    # best epoch by validation loss; its state and probabilities are the ones returned
    assert res.best_metrics.val_loss == min(h.val_loss for h in res.history)
    model.load_state_dict(res.best_state)
    ev = evaluate(model, make_loader(PngDataset(paths, labels, image_size=32), batch_size=16,
                                     train=False), torch.nn.BCEWithLogitsLoss(), CPU)
    assert isinstance(ev, EvalStats) and ev.n == len(paths)
    assert ev.loss == pytest.approx(res.best_metrics.val_loss, rel=1e-5)
    assert np.allclose(res.val_probs, ev.probs)


def test_cpu_fit_is_reproducible(tmp_path):
    paths, labels = toy_set(tmp_path, 12, seed=1, size=64)
    cfg = TrainConfig(image_size=32, epochs=2, batch_size=4, lr=0.01, augment="online",
                      imbalance="sampler", seed=3)
    _, a, _ = _fit(paths, labels, cfg)
    _, b, _ = _fit(paths, labels, cfg)
    keys = ("train_loss", "val_loss", "val_auc")
    assert [[getattr(h, k) for k in keys] for h in a.history] == [[getattr(h, k) for k in keys] for h in b.history]
    for k in a.best_state:
        assert torch.equal(a.best_state[k], b.best_state[k])
    _, c, _ = _fit(paths, labels, cfg.replace(seed=4))
    assert c.history[0].train_loss != a.history[0].train_loss


def test_amp_code_path_runs(tmp_path):
    """The GradScaler branch of train_one_epoch (CUDA in production) exercised on CPU."""
    from osteo_model.train import train_one_epoch

    paths, labels = toy_set(tmp_path, 4, seed=4, size=32)
    seed_everything(0)
    model = build_model("resnet18")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = make_loader(PngDataset(paths, labels, image_size=32), batch_size=4, train=True)
    out = train_one_epoch(model, loader, opt, torch.nn.BCEWithLogitsLoss(), CPU,
                          scaler=torch.amp.GradScaler("cpu"))
    assert isinstance(out, EpochStats) and np.isfinite(out.loss) and out.n == 4
    ev = evaluate(model, loader, torch.nn.BCEWithLogitsLoss(), CPU, amp=True)
    assert np.isfinite(ev.probs).all()


def test_dataset_and_loaders(tmp_path):
    paths, labels = toy_set(tmp_path, 10, seed=2, size=40)
    ds = PngDataset(paths, labels, image_size=32)
    nocache = PngDataset(paths, labels, image_size=32, cache=False)
    x, y = ds[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y.item() == labels[3]
    assert torch.equal(x, nocache[3][0]) and torch.equal(x, preprocess(paths[3], 32))
    def order():
        return [i for _, yb in make_loader(ds, batch_size=3, train=True, seed=5) for i in yb.tolist()]
    assert order() == order()
    w = make_loader(ds, batch_size=10, train=True, seed=0, imbalance="sampler")
    assert len(next(iter(w))[0]) == 10
    imbalanced = [1, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    s = UndersampleSampler(imbalanced, generator=torch.Generator().manual_seed(0))
    idx = list(s)
    assert len(idx) == 4 and sum(imbalanced[i] for i in idx) == 2
    dsi = PngDataset(paths, imbalanced, image_size=32)
    u = make_loader(dsi, batch_size=4, train=True, imbalance="undersample")
    assert sorted(next(iter(u))[1].tolist()) == [0, 0, 1, 1]


def test_checkpoint_and_predictor(tmp_path):
    paths, labels = toy_set(tmp_path, 4, seed=3, size=64)
    cfg = TrainConfig(image_size=48, epochs=1, batch_size=4, augment="none")
    seed_everything(0)
    model = build_model("resnet18")
    # make BN stats non-trivial
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 1, 48, 48))
    model.eval()
    ck = save_checkpoint(tmp_path / "m.pth", model, cfg,
                         {"fold": 2, "auc": np.float64(0.9), "threshold": 0.4})
    raw = torch.load(ck, weights_only=True)
    assert raw["arch"] == "resnet18" and raw["config"]["image_size"] == 48
    m2, cfg2, extra = load_checkpoint(ck)
    assert cfg2 == cfg and extra == {"fold": 2, "auc": 0.9, "threshold": 0.4}
    for k, v in model.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])

    pred = Predictor.from_checkpoint(ck)
    assert pred.threshold == 0.4
    ds = PngDataset(paths, labels, image_size=48)
    ev = evaluate(m2, make_loader(ds, batch_size=4, train=False), torch.nn.BCEWithLogitsLoss(), CPU)
    png_bytes = [open(p, "rb").read() for p in paths]
    arrays = [np.asarray(Image.open(p)) for p in paths]
    floats = [a.astype(np.float32) / 255 for a in arrays]
    jpeg = io.BytesIO()
    Image.open(paths[0]).save(jpeg, format="JPEG")
    r_bytes = pred.predict(png_bytes)
    r_arr = pred.predict(arrays)
    r_float = pred.predict(floats)
    r_one = pred.predict(png_bytes[1])
    assert len(pred.predict([jpeg.getvalue()])) == 1
    for rb, ra, rf, p in zip(r_bytes, r_arr, r_float, ev.probs):
        assert rb["probability"] == pytest.approx(p, abs=1e-6)
        assert ra["probability"] == pytest.approx(p, abs=1e-6)
        assert rf["probability"] == pytest.approx(p, abs=1e-6)
        assert rb["label"] == int(p >= 0.4)
        assert rb["heatmap"].shape == (48, 48) and 0 <= rb["heatmap"].min() <= rb["heatmap"].max() <= 1
    assert r_one[0]["probability"] == pytest.approx(r_bytes[1]["probability"])
    assert pred.predict(arrays, heatmaps=False)[0]["heatmap"] is None


def test_train_fold_on_manifest(tmp_path):
    from osteo_model.splits import assign_splits, fold_frames

    m = assign_splits(toy_manifest(tmp_path, n_patients=30, seed=0, size=64), folds=3)
    tr, va = fold_frames(m, 0)
    cfg = TrainConfig(image_size=32, epochs=2, batch_size=16, lr=0.01, folds=3, augment="none",
                      select_by="val_recall", imbalance="pos_weight")
    model, res = train_fold(tr, va, cfg, CPU)
    assert len(res.history) == 2 and res.best_epoch in (1, 2)
    assert len(res.val_probs) == len(va)
    for k, v in model.state_dict().items():
        assert torch.equal(v, res.best_state[k])


def test_package_imports_no_orchestration():
    code = (
        "import sys, osteo_model.splits, osteo_model.augment, osteo_model.data, "
        "osteo_model.models, osteo_model.train, osteo_model.metrics, osteo_model.gradcam, "
        "osteo_model.predict\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('prefect', 'mlflow', 'sqlalchemy', 'db', 'flows', 'tasks', 'matplotlib')]\n"
        "print(bad); assert not bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_demo_preset_learns_one_fold(tmp_path):
    """The demo preset on a toy cohort with copies: one fold reaches a useful AUC."""
    import pandas as pd

    from osteo_model.augment import materialize_copies
    from osteo_model.metrics import compute_metrics
    from osteo_model.splits import assign_splits, check_splits, fold_frames

    cfg = get_preset("demo")
    m = assign_splits(toy_manifest(tmp_path / "png", n_patients=70, seed=5,
                                   years=(2018, 2019, 2020, 2021, 2022)), folds=cfg.folds)
    copies = materialize_copies(m[m.split == "train"], tmp_path / "aug", seed=cfg.seed)
    full = pd.concat([m, copies], ignore_index=True)
    check_splits(full)
    tr, va = fold_frames(full, 0)
    _, res = train_fold(tr, va, cfg, CPU)
    assert compute_metrics(res.val_labels, res.val_probs)["roc_auc"] >= 0.8
