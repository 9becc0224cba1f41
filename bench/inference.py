"""Inference latency on one image at 224 px: Predictor.predict (no heat map) against a plain
torchvision preprocess + model call; predict + Grad-CAM against predict alone."""

from __future__ import annotations

import io
import time

import torch
from PIL import Image

from bench.common import percentile, row, target


def run(png: str, repeats: int, size: int = 224) -> list[dict]:
    from torchvision import transforms as T

    from osteo_model.models import build_model
    from osteo_model.predict import Predictor

    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    data = open(png, "rb").read()  # what the screening page receives: the uploaded file's bytes
    predictor = Predictor(model, size, device="cpu", batch_size=1)
    tf = T.Compose([T.Grayscale(1), T.Resize((size, size)), T.ToTensor(), T.Normalize([0.449], [0.226])])

    def plain():
        with torch.no_grad():
            # Compose's return type is inferred as its input's; ToTensor in it makes a tensor
            x = tf(Image.open(io.BytesIO(data))).unsqueeze(0)  # pyright: ignore[reportAttributeAccessIssue]
            return torch.sigmoid(model(x)).item()

    calls = {
        "plain": plain,
        "predict": lambda: predictor.predict(data, heatmaps=False),
        "gradcam": lambda: predictor.predict(data, heatmaps=True),
    }
    for fn in calls.values():  # warm-up
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):  # interleaved, so drift of the machine's load hits all three alike
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1000)
    p = {k: (percentile(v, 50), percentile(v, 95)) for k, v in times.items()}
    work = f"1 image, {size} px, {repeats} calls each"
    return [
        row("predict p50", stage="inference", ours=p["predict"][0], baseline=p["plain"][0], unit="ms", work=work,
            note="Predictor.predict(png bytes, heatmaps=False) vs torchvision preprocess + model under no_grad"),
        row("predict p95", stage="inference", ours=p["predict"][1], baseline=p["plain"][1], unit="ms", work=work),
        row("predict + Grad-CAM p50", stage="inference", ours=p["gradcam"][0], baseline=p["predict"][0], unit="ms",
            work=work, goal=target("ratio", "<=", 1.15), note="baseline here is our predict alone"),
        row("predict + Grad-CAM p95", stage="inference", ours=p["gradcam"][1], baseline=p["predict"][1], unit="ms",
            work=work, goal=target("ratio", "<=", 1.15)),
    ]
