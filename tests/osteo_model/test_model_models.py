import pytest
import torch
from torchvision import models as tvm

from osteo_model.models import ARCHS, adapt_first_conv, build_model


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_gives_one_logit(arch):
    torch.manual_seed(0)
    m = build_model(arch).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 1, 64, 64))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 1)
    assert torch.isfinite(y).all()


def test_unknown_arch():
    with pytest.raises(ValueError):
        build_model("alexnet")


def test_adapt_first_conv():
    w = torch.randn(8, 3, 7, 7)
    g = adapt_first_conv(w, 1)
    assert g.shape == (8, 1, 7, 7) and torch.allclose(g[:, 0], w.sum(1))
    x = torch.randn(1, 1, 16, 16)
    a = torch.nn.functional.conv2d(x.repeat(1, 3, 1, 1), w)
    b = torch.nn.functional.conv2d(x, g)
    assert torch.allclose(a, b, atol=1e-5)
    assert adapt_first_conv(w, 3) is w


@pytest.mark.parametrize(
    "arch,factory,first,probe",
    [
        ("resnet18", lambda: tvm.resnet18(weights=None), "conv1.weight", "layer1.0.conv1.weight"),
        ("densenet121", lambda: tvm.densenet121(weights=None), "features.conv0.weight",
         "features.denseblock1.denselayer1.conv1.weight"),
        ("googlenet", lambda: tvm.googlenet(weights=None, aux_logits=True, init_weights=False),
         "conv1.conv.weight", "inception3a.branch1.conv.weight"),
    ],
)
def test_pretrained_weights_from_local_state_dict(tmp_path, arch, factory, first, probe):
    torch.manual_seed(1)
    imagenet = factory()  # 3 channels, 1000 classes, like torchvision's published files
    sd = imagenet.state_dict()
    path = tmp_path / f"{arch}.pth"
    torch.save(sd, path)
    m = build_model(arch, pretrained_weights=path)
    own = m.state_dict()
    assert own[first].shape[1] == 1
    assert torch.allclose(own[first], sd[first].sum(1, keepdim=True))
    assert torch.equal(own[probe], sd[probe])
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 1)
    # three input channels keep the kernel as is
    m3 = build_model(arch, pretrained_weights=path, in_channels=3)
    assert torch.equal(m3.state_dict()[first], sd[first])


def test_pretrained_wrong_arch_is_refused(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(tvm.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError):
        build_model("resnet34", pretrained_weights=path)
