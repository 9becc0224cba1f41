"""Model constructors: torchvision architectures with one input channel and one logit.

Nothing is ever downloaded: constructors get ``weights=None``; ImageNet weights come only
from a LOCAL state-dict file (torchvision layout) passed as ``pretrained_weights``. When
loading, the RGB conv1 kernel is summed over its input channels (see
:func:`adapt_first_conv`) and the ImageNet classifier (1000 classes) is dropped; GoogLeNet's
auxiliary heads are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

ARCHS = ("resnet18", "resnet34", "googlenet", "densenet121", "vgg16")

# state-dict key of the first conv weight, and the prefixes of the ImageNet head, per arch
_FIRST_CONV = {
    "resnet18": "conv1.weight",
    "resnet34": "conv1.weight",
    "googlenet": "conv1.conv.weight",
    "densenet121": "features.conv0.weight",
    "vgg16": "features.0.weight",
}
_HEAD_PREFIXES = {
    "resnet18": ("fc.",),
    "resnet34": ("fc.",),
    "googlenet": ("fc.", "aux1.", "aux2."),
    "densenet121": ("classifier.",),
    "vgg16": ("classifier.6.",),
}


def _pair(size: tuple[int, ...]) -> tuple[int, int]:
    return size[0], size[1]


def _new_conv(old: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=_pair(old.kernel_size),
        stride=_pair(old.stride),
        padding=old.padding if isinstance(old.padding, str) else _pair(old.padding),
        dilation=_pair(old.dilation),
        groups=old.groups,
        bias=old.bias is not None,
    )


def _construct(arch: str, in_channels: int) -> nn.Module:
    from torchvision import models as tvm

    m: Any  # torchvision's children by name (the checker would see Tensor | Module)
    if arch in ("resnet18", "resnet34"):
        m = getattr(tvm, arch)(weights=None, num_classes=1)
        if in_channels != 3:
            m.conv1 = _new_conv(m.conv1, in_channels)
    elif arch == "googlenet":
        m = tvm.googlenet(
            weights=None, num_classes=1, aux_logits=False, transform_input=False, init_weights=True
        )
        if in_channels != 3:
            m.conv1.conv = _new_conv(m.conv1.conv, in_channels)
    elif arch == "densenet121":
        m = tvm.densenet121(weights=None, num_classes=1)
        if in_channels != 3:
            m.features.conv0 = _new_conv(m.features.conv0, in_channels)
    elif arch == "vgg16":
        m = tvm.vgg16(weights=None, num_classes=1)
        if in_channels != 3:
            m.features[0] = _new_conv(m.features[0], in_channels)
    else:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    return m


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-conv kernel (out, c, kh, kw) to ``in_channels`` inputs.

    3 -> 1: sum over the RGB axis (a gray image through the summed kernel equals the RGB
    replica through the original). Other counts: the channel-mean repeated, scaled by
    c / in_channels so the response keeps its magnitude.
    """
    c = weight.shape[1]
    if c == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (c / in_channels)


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_pretrained(model: nn.Module, arch: str, path: str | os.PathLike) -> nn.Module:
    """Load a local torchvision-layout state dict into ``model`` (head dropped, conv1 adapted).

    Raises ValueError when any backbone weight is missing or has the wrong shape.
    """
    sd = _read_state_dict(path)
    heads = _HEAD_PREFIXES[arch]
    sd = {k: v for k, v in sd.items() if not k.startswith(heads)}
    first = _FIRST_CONV[arch]
    own = model.state_dict()
    if first in sd:
        sd[first] = adapt_first_conv(sd[first], own[first].shape[1])
    wrong = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path}: shape mismatch for {wrong[:5]}")
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(heads)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path}: not a {arch} state dict (missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]})"
        )
    return model


def build_model(
    arch: str = "resnet18",
    *,
    pretrained_weights: str | os.PathLike | None = None,
    in_channels: int = 1,
) -> nn.Module:
    """A torchvision ``arch`` (one of :data:`ARCHS`) with ``in_channels`` inputs and a
    one-logit head; ``pretrained_weights`` is a local state-dict file (never downloaded)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    model = _construct(arch, in_channels)
    if pretrained_weights is not None:
        load_pretrained(model, arch, pretrained_weights)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
