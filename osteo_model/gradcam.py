"""Grad-CAM for the one-logit classifiers, without a backward pass through the backbone.

Grad-CAM needs the activation A of the last conv block and dlogit/dA. Everything after A is
a cheap "head" (ReLU/pooling + the classifier), so we:

1. run the backbone up to A under ``torch.no_grad()`` (no graph is built);
2. detach A, ``requires_grad_()``, run only the head to get the logit;
3. ``torch.autograd.grad(logit, A)`` — backprop through the head only.

This is exact (the gradient of the logit w.r.t. A does not depend on anything before A), and
it costs one forward pass plus a tiny backward instead of a full one. :func:`gradcam_reference`
is the classic hook-based implementation (full forward with grad + full backward), used by the
tests to show equality.

Split points (:func:`split_model`), in eval mode:

- resnet18/34: A = layer4 output; head = avgpool -> flatten -> fc
- densenet121: A = ``features`` output (after norm5); head = relu -> global avg pool -> classifier
- vgg16: A = output of the last conv ReLU (features[29], 14x14 at 224 px, before the last
  max-pool); head = features[30] (max-pool) -> avgpool -> flatten -> classifier
- googlenet: A = inception5b output; head = avgpool -> flatten -> dropout -> fc
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FeaturesFn = Callable[[torch.Tensor], torch.Tensor]
HeadFn = Callable[[torch.Tensor], torch.Tensor]


def _arch_of(model: nn.Module) -> str:
    from torchvision.models import VGG, DenseNet, GoogLeNet, ResNet

    if isinstance(model, ResNet):
        return "resnet"
    if isinstance(model, DenseNet):
        return "densenet"
    if isinstance(model, VGG):
        return "vgg"
    if isinstance(model, GoogLeNet):
        return "googlenet"
    raise TypeError(f"Grad-CAM split not implemented for {type(model).__name__}")


def _vgg_last_relu(model) -> int:
    idx = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)][-1]
    return idx + 1  # the ReLU after the last conv


def split_model(model: nn.Module) -> tuple[FeaturesFn, HeadFn]:
    """(features_fn, head_fn) with ``head_fn(features_fn(x)) == model(x)`` in eval mode."""
    kind = _arch_of(model)
    net: Any = model  # torchvision's children by name (the checker would see Tensor | Module)
    if kind == "resnet":
        def features(x):
            m = net
            x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
            return m.layer4(m.layer3(m.layer2(m.layer1(x))))

        def head(a):
            return net.fc(torch.flatten(net.avgpool(a), 1))
    elif kind == "densenet":
        def features(x):
            return net.features(x)

        def head(a):
            out = F.adaptive_avg_pool2d(F.relu(a), (1, 1))
            return net.classifier(torch.flatten(out, 1))
    elif kind == "vgg":
        cut = _vgg_last_relu(model) + 1

        def features(x):
            return net.features[:cut](x)

        def head(a):
            a = net.features[cut:](a)
            return net.classifier(torch.flatten(net.avgpool(a), 1))
    else:  # googlenet
        def features(x):
            m = net
            x = m._transform_input(x)
            x = m.maxpool1(m.conv1(x))
            x = m.maxpool2(m.conv3(m.conv2(x)))
            x = m.maxpool3(m.inception3b(m.inception3a(x)))
            x = m.inception4c(m.inception4b(m.inception4a(x)))
            x = m.maxpool4(m.inception4e(m.inception4d(x)))
            return m.inception5b(m.inception5a(x))

        def head(a):
            return net.fc(net.dropout(torch.flatten(net.avgpool(a), 1)))
    return features, head


def target_layer(model: nn.Module) -> nn.Module:
    """The module whose output is A (for :func:`gradcam_reference`)."""
    kind = _arch_of(model)
    net: Any = model
    if kind == "resnet":
        return net.layer4
    if kind == "densenet":
        return net.features
    if kind == "vgg":
        return net.features[_vgg_last_relu(model)]
    return net.inception5b


def _cam(a: torch.Tensor, grads: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return cam_from_weights(a, grads.mean(dim=(2, 3), keepdim=True), size)


def cam_from_weights(a: torch.Tensor, weights: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """The map from A (N x C x h x w) and channel weights (N or 1 x C x 1 x 1): ReLU of the weighted
    sum, bilinear upsampling to ``size``, min-max scaled per map (all zeros when flat). Shared
    with the ONNX path (:mod:`osteo_model.onnx`), whose weights come from the linear head."""
    cam = F.relu((weights * a).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    rng = hi - lo
    return torch.where(rng > 0, (cam - lo) / rng.clamp_min(1e-12), torch.zeros_like(cam))


def _batch(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 3 else x


class _EvalMode:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def activation_and_grad(model: nn.Module, x: torch.Tensor):
    """The fast path's ingredients: (A, dlogit/dA, logit), backprop through the head only.
    Call in eval mode (:func:`gradcam` does)."""
    features, head = split_model(model)
    with torch.no_grad():
        a = features(_batch(x))
    a = a.detach().float().requires_grad_(True)
    with torch.enable_grad():
        logit = head(a)
        (grads,) = torch.autograd.grad(logit.sum(), a)
    return a.detach(), grads.detach(), logit.detach()


def gradcam(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of the osteoporosis logit.

    ``x``: N x C x H x W (or C x H x W) preprocessed input on the model's device.
    Returns (heatmaps N x H x W in [0, 1] (each map min-max scaled; all zeros when flat),
    probabilities N) as detached float tensors. Runs in eval mode (restored afterwards).
    """
    x = _batch(x)
    with _EvalMode(model):
        a, grads, logit = activation_and_grad(model, x)
        heat = _cam(a, grads, tuple(x.shape[-2:]))
    return heat, torch.sigmoid(logit.view(-1))


def gradcam_reference(
    model: nn.Module, x: torch.Tensor, target: nn.Module | None = None, *,
    return_parts: bool = False,
):
    """Classic Grad-CAM: hooks on ``target`` (default :func:`target_layer`), a full forward
    pass with autograd and a full backward pass. Same outputs as :func:`gradcam`; with
    ``return_parts=True`` also (A, dlogit/dA) for comparison with :func:`activation_and_grad`."""
    x = _batch(x)
    target = target if target is not None else target_layer(model)
    store: dict[str, torch.Tensor] = {}

    def fwd_hook(_module, _inp, out):
        # clone: the next op may be in place (DenseNet applies F.relu(inplace=True) to the
        # features), which would otherwise change the stored activation after the hook
        store["a"] = out.detach().clone()
        out.register_hook(lambda g: store.__setitem__("g", g))

    handle = target.register_forward_hook(fwd_hook)
    try:
        with _EvalMode(model), torch.enable_grad():
            xin = x.detach().requires_grad_(True)  # so the whole graph is built and traversed
            logit = model(xin)
            model.zero_grad(set_to_none=True)
            logit.sum().backward()
            heat = _cam(store["a"].detach(), store["g"], tuple(x.shape[-2:]))
        model.zero_grad(set_to_none=True)
    finally:
        handle.remove()
    out = (heat.detach(), torch.sigmoid(logit.detach().view(-1)))
    if return_parts:
        return out + (store["a"].detach(), store["g"].detach())
    return out


def _jet(v: np.ndarray) -> np.ndarray:
    """Jet colormap for values in [0, 1] -> float RGB in [0, 1] (no matplotlib needed)."""
    v = np.clip(v, 0, 1)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.concatenate([r, g, b], axis=-1)


def overlay(image_gray_uint8: np.ndarray, heat, alpha: float = 0.4) -> np.ndarray:
    """Blend a heat map (HxW in [0, 1], any size; resized bilinearly to the image) over a
    grayscale uint8 image; returns H x W x 3 uint8 RGB."""
    from PIL import Image

    img = np.asarray(image_gray_uint8)
    if img.ndim == 3:
        img = np.asarray(Image.fromarray(img).convert("L"))
    if isinstance(heat, torch.Tensor):
        heat = heat.detach().float().cpu().numpy()
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != img.shape:
        heat = np.asarray(
            Image.fromarray(heat, mode="F").resize(img.shape[::-1], Image.Resampling.BILINEAR)
        )
    base = np.repeat(img.astype(np.float32)[..., None] / 255.0, 3, axis=-1)
    out = (1 - alpha) * base + alpha * _jet(heat)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def heatmap_png(heat, compress_level: int = 1) -> bytes:
    """A heat map (H x W in [0, 1]) as an 8-bit grey PNG: what the pyfunc and the service's API return."""
    import io

    from PIL import Image

    if isinstance(heat, torch.Tensor):
        heat = heat.detach().float().cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(np.asarray(heat, dtype=np.float32) * 255), 0, 255).astype(np.uint8)).save(
        buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
