"""Femoral-neck localiser: hip views, box geometry, the two heads, training, confidence, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osteo_model.roi import (
    HipView,
    RoiConfig,
    build_localiser,
    hip_views,
    side_of_box,
    to_image_box,
    to_view_box,
    view_input,
)
from osteo_model.roi_train import (
    affine_boxes,
    affine_views,
    box_iou,
    box_metrics,
    load_localiser,
    predict_boxes,
    save_localiser,
    train_localiser,
)

SIZE = 64


# ---------------------------------------------------------------- geometry
@pytest.mark.parametrize("lat,rd,flip", [("L", "L", False), ("R", "L", True), ("L", "R", True), ("R", "R", False)])
def test_one_view_for_a_hip(lat, rd, flip):
    assert hip_views(300, 200, lat, rd) == [HipView(lat, 0, 200, 300, flip)]


def test_pelvis_halves_standard_orientation():
    left, right = hip_views(300, 401, "B", "L")
    # the patient's left hip is on the image's right half, already canonical
    assert left == HipView("L", 200, 401, 300, False)
    assert right == HipView("R", 0, 200, 300, True)


def test_pelvis_halves_mirrored_image():
    left, right = hip_views(300, 400, "b", "R")
    assert left == HipView("L", 0, 200, 300, True)
    assert right == HipView("R", 200, 400, 300, False)


@pytest.mark.parametrize("lat,rd", [("X", "L"), ("", "L"), ("L", "A")])
def test_bad_laterality_or_direction(lat, rd):
    with pytest.raises(ValueError):
        hip_views(300, 400, lat, rd)


def test_side_of_box():
    assert side_of_box((300, 10, 350, 40), 400) == "L"
    assert side_of_box((20, 10, 60, 40), 400) == "R"
    assert side_of_box((300, 10, 350, 40), 400, "R") == "R"
    assert side_of_box((20, 10, 60, 40), 400, "R") == "L"


@pytest.mark.parametrize("view", [
    HipView("L", 0, 300, 200, False),  # wide: letterboxed at the bottom
    HipView("R", 0, 120, 250, True),  # tall and flipped: padded at the right
    HipView("L", 157, 401, 333, True),  # pelvis half, odd sizes
])
def test_box_round_trip(view):
    box = (view.x0 + 11.5, 23.25, view.x0 + 80.0, 101.0)
    vb = to_view_box(box, view, 160)
    assert vb[0] < vb[2] and vb[1] < vb[3]
    assert all(-1e-6 <= v <= 160 + 1e-6 for v in vb)
    np.testing.assert_allclose(to_image_box(vb, view, 160), box, atol=1e-9)


def test_view_box_flips_and_scales():
    view = HipView("R", 0, 400, 200, True)
    # scale 160/400 = 0.4; column 0..40 becomes 360..400 once mirrored
    np.testing.assert_allclose(to_view_box((0, 50, 40, 100), view, 160), (144, 20, 160, 40))


def test_view_input_shape_range_flip():
    img = np.zeros((100, 200), dtype=np.uint8)
    img[:, :20] = 255  # a bright stripe on the image's left edge
    v = view_input(img, HipView("L", 0, 200, 100, False), 64)
    assert v.shape == (64, 64) and v.dtype == np.float32
    assert 0.0 <= v.min() and v.max() <= 1.0
    assert v[10, 2] > 0.9 and v[10, 60] < 0.1  # stripe on the left
    assert np.all(v[40:] == 0)  # letterbox padding at the bottom (200x100 -> 64x32)
    f = view_input(img, HipView("R", 0, 200, 100, True), 64)
    assert f[10, 61] > 0.9 and f[10, 2] < 0.1  # mirrored: stripe on the right
    half = view_input(img.astype(np.float32) / 255, HipView("R", 0, 100, 100, True), 64)
    assert half.shape == (64, 64) and half[30, 60] > 0.9 and half[30, 10] < 0.1  # float input


def test_box_through_view_lands_on_the_content():
    img = np.zeros((300, 500), dtype=np.uint8)
    img[100:140, 60:120] = 255
    for view in hip_views(300, 500, "B", "L") + hip_views(300, 500, "R", "L"):
        if not view.x0 <= 60 < view.x1:
            continue
        v = view_input(img, view, 128)
        x0, y0, x1, y1 = to_view_box((60, 100, 120, 140), view, 128)
        inside = v[int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1]
        assert inside.min() > 0.9  # the box covers the bright patch, and the patch is the box
        assert v.sum() == pytest.approx((x1 - x0) * (y1 - y0), rel=0.05)


# ---------------------------------------------------------------- metrics
def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], dtype=float)
    np.testing.assert_allclose(box_iou(a, b), [1.0, 50 / 150, 0.0, 0.0])
    assert float(box_iou((0, 0, 2, 2), (1, 1, 3, 3))) == pytest.approx(1 / 7)


def test_box_metrics():
    true = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    pred = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [1, 0, 11, 10]], dtype=float)
    m = box_metrics(pred, true, mm_per_px=np.array([0.1, 0.1, 0.2]))
    iou = [1.0, 1 / 3, 9 / 11]
    assert m["n"] == 3
    assert m["mean_iou"] == pytest.approx(np.mean(iou))
    assert m["iou_ge_050"] == pytest.approx(2 / 3) and m["iou_ge_075"] == pytest.approx(2 / 3)
    assert m["centre_error_px"] == pytest.approx(2.0)
    assert m["centre_error_mm"] == pytest.approx((0 + 0.5 + 0.2) / 3)
    assert "centre_error_mm" not in box_metrics(pred, true)


def test_affine_copies_move_boxes_with_the_content():
    x = torch.zeros(1, 1, 64, 64)
    x[0, 0, 20:30, 30:44] = 1.0
    box = torch.tensor([[30 / 64, 20 / 64, 44 / 64, 30 / 64]])
    scale, shift = torch.tensor([1.2]), torch.tensor([[0.25, -0.125]])
    y = affine_views(x, scale, shift)[0, 0].numpy()
    moved = affine_boxes(box, scale, shift)[0].numpy() * 64
    ys, xs = np.nonzero(y > 0.5)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], moved, atol=1.0)
    back = affine_boxes(affine_boxes(box, scale, shift), scale, shift, inverse=True)
    np.testing.assert_allclose(back, box, atol=1e-6)


# ---------------------------------------------------------------- model and training
def _blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Views of a bright ellipse on a noisy background, and the ellipse's box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    views, boxes = [], []
    for _ in range(n):
        rx, ry = rng.uniform(6, 10), rng.uniform(5, 8)
        cx, cy = rng.uniform(14, SIZE - 14), rng.uniform(14, SIZE - 14)
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        v = rng.uniform(0.1, 0.3, (SIZE, SIZE)) + 0.6 * inside
        views.append(np.clip(v, 0, 1).astype(np.float32))
        boxes.append((cx - rx, cy - ry, cx + rx, cy + ry))
    return np.stack(views), np.array(boxes, dtype=np.float32)


# the light trainer: the domain randomisation (osteo_model/roi_augment.py, its own tests) is built for hip
# views, and 8 blobs in 100 steps underfit under it; the presence head still learns noise and blanks
TINY = RoiConfig(input_size=SIZE, width=8, epochs=100, batch_size=8, lr=5e-3, augment=False)


@pytest.fixture(scope="module")
def trained():
    x, boxes = _blobs(8)
    seen = []
    model, history = train_localiser(x, boxes, x[:4], boxes[:4], TINY, on_epoch=lambda e, r: seen.append(e))
    return model, history, seen, x, boxes


@pytest.mark.parametrize("head", ["heatmap", "regress"])
def test_both_heads_give_normalised_boxes(head):
    model = build_localiser(RoiConfig(input_size=SIZE, head=head, width=4)).eval()
    out = model(torch.rand(3, 1, SIZE, SIZE))
    assert out.shape == (3, 4)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.all(out[:, 2] >= out[:, 0]) and torch.all(out[:, 3] >= out[:, 1])


def test_config_round_trip_and_checks():
    cfg = RoiConfig(head="regress", epochs=3)
    assert RoiConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg
    with pytest.raises(ValueError):
        RoiConfig(head="anchor")


def test_tiny_localiser_overfits_a_few_boxes(trained):
    model, history, seen, x, boxes = trained
    assert seen == list(range(1, TINY.epochs + 1))
    assert {"train_loss", "val_loss", "val_mean_iou", "epoch"} <= set(history[-1])
    pred, conf = predict_boxes(model, x)
    assert pred.shape == (8, 4) and conf.shape == (8,)
    assert box_metrics(pred, boxes)["mean_iou"] > 0.7
    # the kept model is the best validation epoch
    best = max(r["val_mean_iou"] for r in history)
    assert box_metrics(pred[:4], boxes[:4])["mean_iou"] == pytest.approx(best, abs=1e-4)


def test_confidence_low_for_noise_high_for_a_trained_view(trained):
    model, _, _, x, _ = trained
    _, conf = predict_boxes(model, x)
    rng = np.random.default_rng(5)
    noise = rng.uniform(0, 1, (6, SIZE, SIZE)).astype(np.float32)
    blank = np.zeros((2, SIZE, SIZE), dtype=np.float32)
    _, conf_junk = predict_boxes(model, np.concatenate([noise, blank]))
    assert np.all((conf >= 0) & (conf <= 1)) and np.all((conf_junk >= 0) & (conf_junk <= 1))
    # every trained view above every junk view, and well apart on average (this tiny model's heat maps
    # are broad, so its worst views sit close: the min/max margin moved from 0.15 to 0.13 with the CPU
    # the suite ran on; a real localiser is far sharper, ~0.95 against ~0.1 on noise)
    assert conf.min() > conf_junk.max()
    assert conf.mean() - conf_junk.mean() > 0.2


def test_save_load_round_trip_gives_identical_predictions(trained, tmp_path):
    model, _, _, x, _ = trained
    path = save_localiser(model, TINY, tmp_path / "roi.pt", extra={"mean_iou": np.float64(0.9), "n": 8})
    loaded, cfg, extra = load_localiser(path)
    assert cfg == TINY and extra == {"mean_iou": 0.9, "n": 8}
    a, ca = predict_boxes(model, x)
    b, cb = predict_boxes(loaded, x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ca, cb)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "osteo-roi/2" and payload["config"]["input_size"] == SIZE


def test_not_a_localiser_checkpoint(tmp_path):
    torch.save({"format": "osteo-checkpoint/1"}, tmp_path / "x.pth")
    with pytest.raises(ValueError):
        load_localiser(tmp_path / "x.pth")


def test_training_is_deterministic_on_cpu():
    x, boxes = _blobs(4, seed=3)
    cfg = RoiConfig(input_size=SIZE, width=4, epochs=2, batch_size=2, augment=True, seed=7)
    runs = [train_localiser(x, boxes, None, None, cfg) for _ in range(2)]
    assert [r["train_loss"] for r in runs[0][1]] == [r["train_loss"] for r in runs[1][1]]
    for (k, a), b in zip(runs[0][0].state_dict().items(), runs[1][0].state_dict().values()):
        assert torch.equal(a, b), k


def test_the_second_look_maps_its_zoomed_box_back_onto_the_view():
    from torch import nn

    from osteo_model.roi_train import refine_boxes

    class Bright(nn.Module):  # "predicts" the bounding box of the bright pixels, normalised
        def forward(self, x):
            out = []
            for v in x[:, 0]:
                ys, xs = torch.nonzero(v > 0.5, as_tuple=True)
                n = v.shape[-1]
                out.append(torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float() / n)
            return torch.stack(out)

    x = torch.zeros(2, 1, 64, 64)
    x[0, 0, 10:18, 40:52] = 1.0
    x[1, 0, 30:36, 6:12] = 1.0
    truth = torch.tensor([[40, 10, 52, 18], [6, 30, 12, 36]]) / 64.0
    rough = truth + torch.tensor([[0.03, -0.02, 0.05, 0.01], [-0.02, 0.02, 0.0, 0.04]])  # a first look, off
    again = refine_boxes(Bright(), x, rough, share=0.4)
    assert torch.allclose(again, truth, atol=1.5 / 64)  # zoomed ~3x: the edges within a pixel or so
