import numpy as np
import pytest
import torch

from osteo_model.gradcam import (
    activation_and_grad,
    gradcam,
    gradcam_reference,
    overlay,
    split_model,
    target_layer,
)
from osteo_model.models import build_model


def _warm_bn(model, x):
    """A few train-mode passes so BatchNorm running stats are not the trivial init."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(x)
    return model.eval()


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "googlenet", "vgg16"])
def test_fast_gradcam_equals_reference(arch):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    model = _warm_bn(build_model(arch), x)
    features, head = split_model(model)
    with torch.no_grad():
        assert torch.allclose(head(features(x)), model(x), atol=1e-5)
    heat, prob = gradcam(model, x)
    ref_heat, ref_prob, ref_a, ref_g = gradcam_reference(model, x, target_layer(model),
                                                         return_parts=True)
    assert heat.shape == (2, 64, 64) and prob.shape == (2,)
    assert torch.allclose(heat, ref_heat, atol=1e-5)
    assert torch.allclose(prob, ref_prob, atol=1e-6)
    assert heat.min() >= 0 and heat.max() <= 1
    # the ingredients agree too (non-trivial even where a random net's CAM is flat)
    a, g, _ = activation_and_grad(model.eval(), x)
    assert torch.allclose(a, ref_a, atol=1e-5)
    assert g.abs().max() > 0
    assert torch.allclose(g, ref_g, atol=1e-7, rtol=1e-4)
    if arch == "resnet18":
        assert (heat.flatten(1).max(1).values > 0).all()
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_restores_train_mode_and_single_image():
    torch.manual_seed(0)
    model = build_model("resnet18")
    model.train()
    heat, prob = gradcam(model, torch.randn(1, 64, 64))
    assert model.training and heat.shape == (1, 64, 64) and prob.shape == (1,)


def test_overlay():
    img = np.full((80, 80), 128, np.uint8)
    heat = np.zeros((64, 64), np.float32)
    heat[:32] = 1.0
    rgb = overlay(img, heat)
    assert rgb.shape == (80, 80, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] > rgb[0, 0, 2]  # hot = red
    assert rgb[-1, -1, 2] > rgb[-1, -1, 0]  # cold = blue
    assert overlay(img, torch.zeros(80, 80)).shape == (80, 80, 3)
