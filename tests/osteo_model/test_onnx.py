"""The classifier through ONNX Runtime: the same probabilities, labels and Grad-CAM maps as PyTorch."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from osteo_model.data import preprocess
from osteo_model.gradcam import gradcam, gradcam_reference
from osteo_model.models import ARCHS, build_model
from osteo_model.onnx import (
    ONNX_ARCHS,
    OnnxClassifier,
    cam_from_activations,
    export_onnx,
    head_weight,
    preprocess_numpy,
    supports_onnx,
)
from osteo_model.predict import Predictor, save_checkpoint

PROB_TOL = 1e-5
HEAT_TOL = 1e-4  # what holds here: <= 3e-6 (resnet18 64 and 224 px, googlenet 96 px)


def _model(arch: str, size: int, seed: int = 0):
    """A random-init model with non-trivial BatchNorm statistics and a non-flat Grad-CAM."""
    torch.manual_seed(seed)
    model = build_model(arch)
    if arch == "googlenet":  # its init (std 0.01) gives a random net the same A for every image
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 1, size, size))
    model.eval()
    if arch == "googlenet":  # a random GoogLeNet's map is all negative (flat zeros) otherwise
        model.fc.weight.data.abs_()
        with torch.no_grad():  # and the logit near 0 again, so probabilities are not all 1.0
            model.fc.bias -= model(torch.stack([preprocess(im, size) for im in _images()])).mean()
    return model


def _images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (80, 90), dtype=np.uint8), rng.integers(0, 256, (100, 70), dtype=np.uint8)]


def test_supported_archs():
    assert set(ONNX_ARCHS) <= set(ARCHS)
    assert all(supports_onnx(a) for a in ("resnet18", "resnet34", "googlenet"))
    assert not any(supports_onnx(a) for a in ("densenet121", "vgg16", "nope"))


@pytest.mark.parametrize("arch,size", [("resnet18", 64), ("googlenet", 96), ("resnet18", 224)])
def test_onnx_equals_pytorch_and_gradcam(arch, size, tmp_path):
    model = _model(arch, size)
    path = export_onnx(model, size, tmp_path / "model.onnx")
    clf = OnnxClassifier(path, head_weight(model), size, threshold=0.5, threads=2)
    assert clf.in_graph_heatmap and not model.training
    images = _images()
    ours = clf.predict(images)
    theirs = Predictor(model, size, device="cpu").predict(images)
    x = torch.stack([preprocess(im, size) for im in images])
    ref_heat, ref_prob = gradcam_reference(model, x)
    fast_heat, _ = gradcam(model, x)
    assert len(ours) == 2
    for o, t, rh, fh, rp in zip(ours, theirs, ref_heat.numpy(), fast_heat.numpy(), ref_prob.tolist()):
        assert abs(o["probability"] - t["probability"]) <= PROB_TOL
        assert abs(o["probability"] - rp) <= PROB_TOL
        assert o["label"] == t["label"]
        h = o["heatmap"]
        assert h.shape == (size, size) and h.dtype == np.float32
        assert h.min() >= 0 and h.max() == pytest.approx(1.0)  # a real map, not a flat one
        assert np.abs(h - t["heatmap"]).max() <= HEAT_TOL
        assert np.abs(h - fh).max() <= HEAT_TOL
        assert np.abs(h - rh).max() <= HEAT_TOL

    # the graph's activations through cam_from_activations (a graph without "heatmap") agree too
    logit, a = clf.session.run(["logit", "activations"], {"image": clf.preprocess(images)})
    assert logit.shape == (2, 1) and a.shape[:2] == (2, head_weight(model).size)
    with torch.no_grad():
        assert np.abs(logit - model(x).numpy()).max() <= 1e-4
    assert 0.01 < min(r["probability"] for r in ours) and max(r["probability"] for r in ours) < 0.99
    assert np.abs(cam_from_activations(a, head_weight(model), (size, size)) - fast_heat.numpy()).max() <= HEAT_TOL
    clf.in_graph_heatmap = False
    for o, f in zip(clf.predict(images), ours):
        assert np.abs(o["heatmap"] - f["heatmap"]).max() <= HEAT_TOL


def test_single_image_no_heatmaps_and_bytes_input(tmp_path):
    model = _model("resnet18", 64)
    clf = OnnxClassifier(export_onnx(model, 64, tmp_path / "m.onnx").read_bytes(), head_weight(model), 64)
    pred = Predictor(model, 64, device="cpu")
    img = _images()[0]
    png = io.BytesIO()
    Image.fromarray(img).save(png, format="PNG")
    (one,) = clf.predict(img, heatmaps=False)
    (from_png,) = clf.predict(png.getvalue(), heatmaps=False)
    (ref,) = pred.predict(img, heatmaps=False)
    assert one["heatmap"] is None and from_png["heatmap"] is None
    assert abs(one["probability"] - ref["probability"]) <= PROB_TOL
    assert one["probability"] == from_png["probability"]
    # a batch larger than batch_size is run in several session calls, in order
    clf.batch_size = 3
    many = [img, _images(1)[0]] * 4
    assert [r["probability"] for r in clf.predict(many, heatmaps=False)] == pytest.approx(
        [r["probability"] for r in pred.predict(many, heatmaps=False)], abs=PROB_TOL)


def test_probabilities_of_preprocessed_batches_equal_predict_with_or_without_spinning(tmp_path):
    """The screening's path (crops preprocessed on its reader thread, a session that does not spin) gives predict's
    probabilities exactly: the same values in, the same graph."""
    model = _model("resnet18", 64)
    graph = export_onnx(model, 64, tmp_path / "m.onnx").read_bytes()
    images = _images() + _images(1)
    x = np.stack([preprocess_numpy(im, 64) for im in images])
    for spin in (True, False):
        clf = OnnxClassifier(graph, head_weight(model), 64, spin=spin)
        assert clf.probabilities(x) == [r["probability"] for r in clf.predict(images, heatmaps=False)]
    pred = Predictor(model, 64, device="cpu")
    assert pred.probabilities(x) == [r["probability"] for r in pred.predict(images, heatmaps=False)]


def test_preprocess_is_the_datasets_bit_for_bit():
    rng = np.random.default_rng(3)
    every_level = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for image, size in [(every_level, 16), (rng.integers(0, 256, (70, 50), dtype=np.uint8), 64),
                        (rng.random((40, 40)), 32), (rng.integers(0, 256, (30, 30, 3), dtype=np.uint8), 24)]:
        assert np.array_equal(preprocess_numpy(image, size), preprocess(image, size).numpy())


def test_load_from_checkpoint_equals_predictor(tmp_path):
    model = _model("resnet18", 64)
    onnx_path = export_onnx(model, 64, tmp_path / "model.onnx")
    images = _images()
    probs = [r["probability"] for r in Predictor(model, 64, device="cpu").predict(images, heatmaps=False)]
    mid = float(np.mean(probs))  # labels 0 and 1 only with this threshold, not with 0.5 or 0.0
    ck = save_checkpoint(tmp_path / "m.pth", model, {"arch": "resnet18", "image_size": 64, "threshold": 0.0},
                         {"fold": 1, "threshold": mid})
    ours = OnnxClassifier.load(onnx_path, ck)
    theirs = Predictor.from_checkpoint(ck, device="cpu")
    assert (ours.image_size, ours.threshold) == (theirs.image_size, theirs.threshold) == (64, mid)
    for o, t in zip(ours.predict(images), theirs.predict(images)):
        assert abs(o["probability"] - t["probability"]) <= PROB_TOL
        assert o["label"] == t["label"] == int(t["probability"] >= mid)
        assert np.abs(o["heatmap"] - t["heatmap"]).max() <= HEAT_TOL
    assert sorted(r["label"] for r in ours.predict(images, heatmaps=False)) == [0, 1]
    assert OnnxClassifier.load(onnx_path, ck, threshold=0.25).threshold == 0.25
    # no threshold in extra: the config's
    ck2 = save_checkpoint(tmp_path / "m2.pth", model, {"arch": "resnet18", "image_size": 64, "threshold": 0.3})
    assert OnnxClassifier.load(onnx_path, ck2).threshold == Predictor.from_checkpoint(ck2).threshold == 0.3


def test_unsupported_archs_raise(tmp_path):
    with pytest.raises(ValueError, match="avgpool"):
        export_onnx(build_model("densenet121"), 64, tmp_path / "d.onnx")
    with pytest.raises(ValueError):
        export_onnx(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3)), 64, tmp_path / "s.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_is_atomic(tmp_path, monkeypatch):
    model = _model("resnet18", 64)
    path = export_onnx(model, 64, tmp_path / "model.onnx")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("export failed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError):
        export_onnx(model, 64, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    with pytest.raises(ValueError, match="channels"):  # the head must match the graph
        OnnxClassifier(path, np.zeros(7, np.float32), 64)


def test_the_export_carries_its_pinned_opset(tmp_path):
    """The graph says the opset we pinned (a model registered today must load in tomorrow's runtime the same
    way), not whatever the installed torch defaults to."""
    import onnx

    from osteo_model.onnx import OPSET

    path = export_onnx(_model("resnet18", 64), 64, tmp_path / "m.onnx")
    opsets = {o.domain: o.version for o in onnx.load(str(path)).opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == OPSET
