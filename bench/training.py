"""Training throughput: our loader (PngDataset with online augmentation, make_loader) and fit()
against a plain PyTorch loop (torchvision transforms, same model, batch size, resolution)."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from bench.common import row, target, timed


class PlainPngs(torch.utils.data.Dataset):
    def __init__(self, paths, labels, size):
        from torchvision import transforms as T

        self.paths, self.labels = paths, labels
        self.tf = T.Compose([
            T.Grayscale(1),
            T.RandomRotation(20),
            T.RandomApply([T.ColorJitter(brightness=0.3)], p=0.3),
            T.Resize((size, size)),
            T.ToTensor(),
            T.Normalize([0.449], [0.226]),
        ])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            x = self.tf(im.convert("L"))
        return x, torch.tensor(float(self.labels[i]))


def plain_loop(paths, labels, size, batch, epochs, device) -> None:
    from osteo_model.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18").to(device)
    loader = torch.utils.data.DataLoader(PlainPngs(paths, labels, size), batch_size=batch, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device).view(-1, 1)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours_loop(paths, labels, size, batch, epochs, device, preset="demo", **overrides) -> None:
    from osteo_model.config import get_preset
    from osteo_model.data import PngDataset, make_loader
    from osteo_model.models import build_model
    from osteo_model.train import fit, seed_everything

    # the plain loop's optimiser whatever the preset uses (AdamW costs more per step than SGD)
    config = get_preset(preset, image_size=size, batch_size=batch, epochs=epochs, augment="online",
                        imbalance="none", optimizer="sgd", momentum=0.9, schedule="step", lr=0.001,
                        weight_decay=0.0, **overrides)
    seed_everything(0)
    model = build_model("resnet18")
    ds = PngDataset(paths, labels, image_size=size, augment=True, seed=0)
    loader = make_loader(ds, batch_size=batch, train=True, seed=0)
    fit(model, loader, None, config, device)
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(pngs: list[str], settings_list: list[tuple[int, int, int, int]], device=None) -> list[dict]:
    """settings_list: (image_size, batch, n_images, epochs) per row."""
    from osteo_model.train import configure_threads

    device = device or torch.device("cpu")
    if device.type == "cpu":
        configure_threads()  # what fit() does; the plain loop gets the same threads
    rows = []
    for size, batch, n, epochs in settings_list:
        paths = [pngs[i % len(pngs)] for i in range(n)]
        labels = [i % 2 for i in range(n)]
        # warm-up: allocator, kernels, imports
        plain_loop(paths[: batch * 2], labels[: batch * 2], size, batch, 1, device)
        ours_loop(paths[: batch * 2], labels[: batch * 2], size, batch, 1, device)
        t_plain, _ = timed(lambda: plain_loop(paths, labels, size, batch, epochs, device))
        t_ours, _ = timed(lambda: ours_loop(paths, labels, size, batch, epochs, device))
        t_plain2, _ = timed(lambda: plain_loop(paths, labels, size, batch, epochs, device))
        t_plain = (t_plain + t_plain2) / 2  # plain on both sides of ours: linear drift of the load cancels
        imgs = n * epochs
        rows.append(row(
            f"training resnet18 {size} px, batch {batch} ({device.type})", stage="training", ours=imgs / t_ours,
            baseline=imgs / t_plain, unit="images/s", work=f"{n} images x {epochs} epoch(s)",
            goal=target("ratio", ">=", 0.95), ours_s=round(t_ours, 2), baseline_s=round(t_plain, 2),
            note="ours: PngDataset(augment=True) + make_loader + fit (no validation); plain: torchvision "
                 "RandomRotation/ColorJitter/Resize/Normalize on PIL, DataLoader, SGD + BCEWithLogitsLoss"))
    return rows

