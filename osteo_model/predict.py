"""Inference on single images (the screening page, the MLflow pyfunc) and checkpoints.

Preprocessing is :func:`osteo_model.data.preprocess`, the very function of the dataset's eval
path: grayscale -> bilinear resize to image_size -> /255 -> (x - MEAN) / STD.

Checkpoint format (``.pth``, loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "osteo-checkpoint/1", "arch": str, "in_channels": int,
     "state_dict": {...}, "config": TrainConfig as a dict, "extra": dict}
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from osteo_common.files import atomic_write_bytes
from osteo_model.data import preprocess

CHECKPOINT_FORMAT = "osteo-checkpoint/1"


class Predictor:
    """Probability, label and Grad-CAM heat map for images.

    ``images``: a sequence of numpy arrays (HxW uint8 0..255, or float 0..1), PNG/JPEG bytes,
    file paths or PIL images (a single non-sequence image is accepted too). Heat maps are
    float32 arrays image_size x image_size in [0, 1]; pass ``heatmaps=False`` to skip them.
    """

    def __init__(
        self,
        model: nn.Module,
        image_size: int,
        threshold: float = 0.5,
        device: torch.device | str | None = None,
        batch_size: int = 16,
    ):
        if device is None:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.image_size = int(image_size)
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)

    def preprocess(self, images) -> torch.Tensor:
        return torch.stack([preprocess(im, self.image_size) for im in images])

    def probabilities(self, x) -> list[float]:
        """The probability of each image of a batch already preprocessed (N x 1 x H x W, a tensor or an array)."""
        with torch.no_grad():
            return torch.sigmoid(self.model(torch.as_tensor(x).to(self.device)).float().view(-1)).cpu().tolist()

    def predict(self, images, *, heatmaps: bool = True) -> list[dict]:
        from osteo_model.gradcam import gradcam

        if _is_single(images):
            images = [images]
        out: list[dict] = []
        for start in range(0, len(images), self.batch_size):
            x = self.preprocess(images[start : start + self.batch_size]).to(self.device)
            if heatmaps:
                heat, prob = gradcam(self.model, x)
                heat = heat.cpu().numpy().astype(np.float32)
            else:
                with torch.no_grad():
                    prob = torch.sigmoid(self.model(x).float().view(-1))
                heat = [None] * len(x)
            for p, h in zip(prob.cpu().tolist(), heat):
                out.append({
                    "probability": float(p),
                    "label": int(p >= self.threshold),
                    "heatmap": h,
                })
        return out

    @classmethod
    def from_checkpoint(cls, path, *, threshold: float | None = None, device=None) -> Predictor:
        model, config, extra = load_checkpoint(path)
        if threshold is None:
            threshold = float(extra.get("threshold", config.threshold))
        return cls(model, config.image_size, threshold=threshold, device=device)


def _is_single(images) -> bool:
    if isinstance(images, (bytes, bytearray, memoryview, str, os.PathLike)):
        return True
    if isinstance(images, np.ndarray):  # HxW, or HxWx3/4 colour; NxHxW is a batch
        return images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (3, 4))
    return not isinstance(images, Sequence)


def _plain(obj):
    """Make ``obj`` safe for weights_only loading: numpy/paths -> Python builtins."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    return json.loads(json.dumps(obj, default=str))


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        return config.to_dict()
    import dataclasses

    if isinstance(config, Mapping):
        return dict(config)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    raise TypeError(f"config must be a TrainConfig, a dataclass or a mapping, not {type(config).__name__}")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config, extra: dict | None = None,
                    *, state_dict: dict | None = None) -> Path:
    """Write a checkpoint atomically. ``config``: a TrainConfig or a dict (must name ``arch``
    and ``image_size``). ``state_dict`` overrides ``model.state_dict()`` (e.g. a FitResult's
    best_state). ``extra``: JSON-like metadata (fold, metrics, threshold, data snapshot...)."""
    cfg: dict[str, Any] = {str(k): _plain(v) for k, v in _config_dict(config).items()}
    if "arch" not in cfg or "image_size" not in cfg:
        raise ValueError("config must name arch and image_size")
    sd = state_dict if state_dict is not None else model.state_dict()
    in_channels = _in_channels(sd, cfg["arch"])
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": cfg["arch"],
        "in_channels": in_channels,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in sd.items()},
        "config": cfg,
        "extra": _plain(extra or {}),
    }
    return write_checkpoint(payload, path)


def write_checkpoint(payload: dict, path) -> Path:
    """A checkpoint dict (tensors and plain values only) saved atomically; loadable with weights_only."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = Path(path)
    atomic_write_bytes(path, buf.getbuffer())
    return path


def _in_channels(sd: dict, arch: str) -> int:
    from osteo_model.models import _FIRST_CONV

    key = _FIRST_CONV.get(arch)
    return int(sd[key].shape[1]) if key in sd else 1


def load_checkpoint(path: str | os.PathLike, map_location="cpu"):
    """(model in eval mode, TrainConfig, extra dict) from :func:`save_checkpoint`'s file,
    loaded with ``weights_only=True`` (no code runs while loading)."""
    from osteo_model.config import TrainConfig
    from osteo_model.models import build_model

    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an osteo checkpoint")
    model = build_model(payload["arch"], in_channels=int(payload.get("in_channels", 1)))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, TrainConfig.from_dict(payload["config"]), dict(payload.get("extra") or {})
