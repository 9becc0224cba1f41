"""The registered model's ONNX artifact: exported beside the checkpoint, served by the pyfunc with
the same outputs as the PyTorch checkpoint, and pinned in the requirements only where installed."""

from __future__ import annotations

import base64
import io
from importlib.metadata import PackageNotFoundError
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from osteo_model.onnx import OnnxClassifier
from osteo_model.predict import Predictor


@pytest.fixture
def checkpoint(tmp_path):
    import torch

    from osteo_model.models import build_model
    from osteo_model.predict import save_checkpoint

    torch.manual_seed(0)
    model = build_model("resnet18")
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 1, 64, 64))
    return save_checkpoint(tmp_path / "fold-0.pth", model.eval(), {"arch": "resnet18", "image_size": 64},
                           {"threshold": 0.5})


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (90, 80), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_onnx_artifact_beside_the_checkpoint(checkpoint, monkeypatch):
    import osteo_model.onnx
    from osteo_mlflow.registry import onnx_artifacts

    art = onnx_artifacts(SimpleNamespace(arch="resnet18", checkpoint=str(checkpoint)))
    assert art == {"onnx": str(checkpoint.parent / "model.onnx")} and (checkpoint.parent / "model.onnx").stat().st_size
    assert onnx_artifacts(SimpleNamespace(arch="densenet121", checkpoint="never-read.pth")) == {}
    monkeypatch.setattr(osteo_model.onnx, "onnxruntime_available", lambda: False)
    assert onnx_artifacts(SimpleNamespace(arch="resnet18", checkpoint=str(checkpoint))) == {}


def test_pyfunc_serves_onnx_with_the_same_outputs(checkpoint):
    from osteo_mlflow.pyfunc import OsteoClassifier
    from osteo_mlflow.registry import onnx_artifacts

    art = onnx_artifacts(SimpleNamespace(arch="resnet18", checkpoint=str(checkpoint)))
    via_onnx, via_torch = OsteoClassifier(), OsteoClassifier()
    via_onnx.load_context(SimpleNamespace(artifacts={"checkpoint": str(checkpoint), **art}))
    via_torch.load_context(SimpleNamespace(artifacts={"checkpoint": str(checkpoint)}))
    assert isinstance(via_onnx.predictor, OnnxClassifier) and isinstance(via_torch.predictor, Predictor)
    frame = pd.DataFrame({"image": [_png(0), _png(1)]})
    a = via_onnx.predict(None, frame, params={"cropped": True})
    b = via_torch.predict(None, frame, params={"cropped": True})
    assert list(a.columns) == list(b.columns)
    assert np.abs(a["probability"] - b["probability"]).max() <= 1e-5
    assert a["label"].tolist() == b["label"].tolist() and a["label_name"].tolist() == b["label_name"].tolist()
    for ha, hb in zip(a["heatmap_png"], b["heatmap_png"]):
        da, db = (np.asarray(Image.open(io.BytesIO(base64.b64decode(h)))).astype(int) for h in (ha, hb))
        assert np.abs(da - db).max() <= 1  # 8-bit rounding of maps equal to ~1e-6


def test_requirements_pin_onnx_only_where_installed(monkeypatch):
    from osteo_mlflow import registry

    pins = registry.requirements()
    assert any(p.startswith("onnxruntime==") for p in pins) and any(p.startswith("onnx==") for p in pins)
    real = registry.installed_version

    def without(name):
        def version(p):
            if p == name:
                raise PackageNotFoundError(p)
            return real(p)
        return version

    monkeypatch.setattr(registry, "installed_version", without("onnxruntime"))
    assert not any(p.startswith("onnxruntime") for p in registry.requirements())
    monkeypatch.setattr(registry, "installed_version", without("torch"))
    with pytest.raises(PackageNotFoundError):
        registry.requirements()
