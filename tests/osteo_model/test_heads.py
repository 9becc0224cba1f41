"""The optional heads on frozen features (osteo_model/heads.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osteo_model.heads import (
    LABELS3,
    Embedding,
    bmd_head,
    embed,
    embed_with_logits,
    final_linear,
    fusion_auc,
    image_features,
    three_class_head,
)
from osteo_model.models import build_model
from tests.model_toy import toy_image, write_png

SIZE = 32


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    root = tmp_path_factory.mktemp("png")
    rng = np.random.default_rng(0)
    return [str(write_png(root / f"i{i}.png", toy_image(i % 2, rng, 48))) for i in range(5)]


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("googlenet", 1024), ("densenet121", 1024)])
def test_embedding_is_the_input_of_the_final_linear(pngs, arch, dim):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    e = embed_with_logits(model, pngs, SIZE, batch_size=2)
    assert e.features.shape == (5, dim) and e.logits.shape == (5,)
    assert e.features.dtype == np.float32 and np.isfinite(e.features).all()
    with torch.no_grad():
        from_features = final_linear(model)(torch.from_numpy(e.features)).view(-1).numpy()
    np.testing.assert_allclose(from_features, e.logits, rtol=1e-4, atol=1e-5)


def test_embedding_is_deterministic_and_leaves_no_hook(pngs):
    torch.manual_seed(1)
    model = build_model("resnet18")
    a = embed(model, pngs, SIZE, batch_size=3)
    b = embed(model, pngs[::-1], SIZE, batch_size=5)[::-1]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not final_linear(model)._forward_pre_hooks
    assert embed(model, [], SIZE).shape == (0, 512)


def test_final_linear_of_vgg_is_classifier_6():
    from torchvision.models import vgg11

    m = vgg11(weights=None, num_classes=1)
    assert final_linear(m) is m.classifier[6]


def test_ridge_recovers_a_planted_linear_relation():
    rng = np.random.default_rng(3)
    w = rng.normal(size=20)
    x = rng.normal(size=(300, 20))
    y = 0.7 + 0.05 * (x @ w) + rng.normal(0, 0.02, 300)
    y[5] = np.nan  # a row without BMD: left out of the fit
    res = bmd_head(x[:200], y[:200], x[200:], y[200:])
    assert res.pearson_r > 0.95 and res.mae < 0.05
    assert res.n_fit == 199 and res.n_test == 100
    noise = bmd_head(x[:200], rng.normal(size=200), x[200:], rng.normal(size=100))
    assert abs(noise.pearson_r) < 0.3  # nothing planted, nothing found
    again = bmd_head(x[:200], y[:200], x[200:], y[200:])
    np.testing.assert_array_equal(res.predictions, again.predictions)


def _cohort(rng, n):
    age = rng.uniform(50, 90, n)
    male = (rng.random(n) < 0.3).astype(float)
    risk = 0.12 * (age - 70) - 1.5 * male + rng.normal(0, 0.5, n)
    y = (risk > 0).astype(int)
    logit = 0.3 * y + rng.normal(0, 1, n)  # a weak image signal
    return np.column_stack([logit]), np.column_stack([age, male]), y


def test_fusion_uses_a_planted_clinical_signal():
    rng = np.random.default_rng(4)
    fi, fc, fy = _cohort(rng, 400)
    ti, tc, ty = _cohort(rng, 200)
    tc[0, 0] = np.nan  # an unknown age: the training median
    res = fusion_auc(fi, fc, fy, ti, tc, ty)
    assert res.auc_fused > res.auc_image + 0.2
    assert res.auc_clinical > 0.85 and res.n_fit == 400 and res.n_test == 200
    assert res.prob_fused.shape == (200,)
    # with no clinical signal the fusion gains nothing worth the name
    none = fusion_auc(fi, rng.normal(size=(400, 2)), fy, ti, rng.normal(size=(200, 2)), ty)
    assert abs(none.auc_fused - none.auc_image) < 0.08


def test_image_features_logit_plus_pca():
    rng = np.random.default_rng(5)
    fit = Embedding(rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=30).astype(np.float32))
    test = Embedding(rng.normal(size=(10, 8)).astype(np.float32), rng.normal(size=10).astype(np.float32))
    a, b = image_features(fit, test)
    assert a.shape == (30, 1) and b.shape == (10, 1)
    a, b = image_features(fit, test, n_components=3)
    assert a.shape == (30, 4) and b.shape == (10, 4)
    np.testing.assert_allclose(a[:, 0], fit.logits)


def test_three_class_head_separates_planted_clusters():
    rng = np.random.default_rng(6)
    centers = rng.normal(0, 3, size=(3, 10))

    def draw(n):
        k = rng.integers(0, 3, n)
        return centers[k] + rng.normal(0, 1, (n, 10)), [LABELS3[i] for i in k]

    fx, fl = draw(300)
    tx, tl = draw(120)
    res = three_class_head(fx, fl, tx, tl)
    assert res.accuracy > 0.9 and res.macro_f1 > 0.9
    cm = np.array(res.confusion)
    assert cm.shape == (3, 3) and cm.sum() == 120 and np.trace(cm) == round(res.accuracy * 120)
    with pytest.raises(ValueError, match="unknown 3-class"):
        three_class_head(fx, fl[:-1] + ["severe"], tx, tl)
