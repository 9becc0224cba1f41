"""The localiser's domain randomisation (osteo_model/roi_augment.py): seeded, boxes follow the pixels,
presence targets say whether the neck is in view, collimation never covers it, negatives have no hip."""

from __future__ import annotations

import numpy as np
import torch

from osteo_model.roi_augment import (
    burn_text,
    collimate,
    randomise,
    synthetic_negatives,
    text_bank,
    visible_share,
    warp,
    warp_boxes,
)

S = 64


def _views(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.full((n, 1, S, S), 0.2)
    x[:, :, 24:36, 20:40] = 0.9
    return x, torch.tensor([[20 / S, 24 / S, 40 / S, 36 / S]]).repeat(n, 1)


def test_the_same_seed_gives_the_same_views_and_targets():
    x, b = _views()
    a = randomise(x, b, torch.Generator().manual_seed(3))
    c = randomise(x, b, torch.Generator().manual_seed(3))
    d = randomise(x, b, torch.Generator().manual_seed(4))
    for u, v in zip(a, c, strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a[0], d[0])
    assert a[0].shape == x.shape and 0 <= a[0].min() and a[0].max() <= 1
    assert set(a[2].tolist()) <= {-1.0, 0.0, 1.0}


def test_boxes_follow_the_pixels_through_zoom_shift_and_mirror():
    x = torch.zeros(2, 1, S, S)
    x[:, 0, 20:30, 30:44] = 1.0
    box = torch.tensor([[30 / S, 20 / S, 44 / S, 30 / S]]).repeat(2, 1)
    sx, sy = torch.tensor([1.2, 0.7]), torch.tensor([0.9, 0.8])
    shift, flip = torch.tensor([[0.2, -0.1], [-0.1, 0.1]]), torch.tensor([False, True])
    y = warp(x, sx, sy, shift, flip)
    moved = warp_boxes(box, sx, sy, shift, flip) * S
    for i in range(2):
        ys, xs = np.nonzero(y[i, 0].numpy() > 0.5)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], moved[i].numpy(), atol=1.0)


def test_presence_targets_match_what_the_view_shows():
    x, b = _views(64)
    gen = torch.Generator().manual_seed(0)
    out, boxes, target = randomise(x, b, gen, crop_neg=0.0, mirror_neg=0.0)
    # a hip view keeps its box (clamped), and the box is (nearly) whole in the view
    assert (target == 1).sum() > 32
    assert torch.all(boxes[target == 1] >= 0) and torch.all(boxes[target == 1] <= 1)
    crops = randomise(x, b, torch.Generator().manual_seed(0), crop_neg=1.0, mirror_neg=0.0)[2]
    assert (crops == 0).float().mean() > 0.8  # zoomed in away from the neck: no neck in view
    mirrored = randomise(x, b, torch.Generator().manual_seed(0), crop_neg=0.0, mirror_neg=1.0)[2]
    assert torch.all(mirrored == 0)  # a right hip where a left one is expected is a negative


def test_visible_share():
    boxes = torch.tensor([[0.2, 0.2, 0.4, 0.4], [0.9, 0.5, 1.1, 0.7], [1.2, 0.1, 1.4, 0.3]])
    np.testing.assert_allclose(visible_share(boxes).numpy(), [1.0, 0.5, 0.0], atol=1e-6)


def test_collimation_never_covers_the_box():
    x, b = _views(20)
    out = collimate(x, b, torch.Generator().manual_seed(1), p=1.0)
    assert torch.equal(out[:, :, 24:36, 20:40], x[:, :, 24:36, 20:40])
    assert not torch.equal(out, x)  # some borders were drawn


def test_text_is_burned_in_and_negatives_hold_no_hip():
    assert all(m.max() > 0.5 for m in text_bank(8))
    x, _ = _views(8)
    assert not torch.equal(burn_text(x, torch.Generator().manual_seed(0), p=1.0), x)
    neg = synthetic_negatives(10, S, torch.Generator().manual_seed(0))
    assert neg.shape == (10, 1, S, S) and 0 <= neg.min() and neg.max() <= 1


def test_zoom_in_views_magnify_the_neck_about_its_centre_and_keep_it_whole():
    from osteo_model.roi_augment import ZOOM_IN_OFFSET, ZOOM_IN_SHARE

    x = torch.full((32, 1, S, S), 0.2)
    x[:, :, 28:34, 12:20] = 0.9  # a small neck off the view's centre: 8 px of 64
    b = torch.tensor([[12 / S, 28 / S, 20 / S, 34 / S]]).repeat(32, 1)
    plain = randomise(x, b, torch.Generator().manual_seed(5), crop_neg=0.0, mirror_neg=0.0)
    out, boxes, target = randomise(x, b, torch.Generator().manual_seed(5), crop_neg=0.0, mirror_neg=0.0, zoom_in=1.0)
    side = (boxes[:, 2:] - boxes[:, :2]).amax(1)
    assert torch.all(target == 1)  # the neck stays in view: these are hip views, not crops
    assert torch.all(side >= ZOOM_IN_SHARE * 0.7 - 1e-4) and torch.all(side <= 3 * 8 / S + 1e-4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert torch.all((centre - 0.5).abs() <= ZOOM_IN_OFFSET + 1e-4)
    assert (plain[1][:, 2:] - plain[1][:, :2]).amax(1).max() < side.min()  # the plain recipe never zooms so far
    # off (the default), the recipe draws exactly as before
    again = randomise(x, b, torch.Generator().manual_seed(5), crop_neg=0.0, mirror_neg=0.0, zoom_in=0.0)
    assert torch.equal(again[0], plain[0])


def test_a_turned_box_is_the_box_of_its_turned_ellipse():
    """An ellipse drawn in its box, turned with the view: the box warp_boxes gives is the box of the
    turned ellipse's pixels, with zoom, shift and turns of either sign; no turn is the unturned warp."""
    yy, xx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    x = torch.zeros(4, 1, S, S)
    x[:, 0] = (((xx - 32) / 10) ** 2 + ((yy - 28) / 5) ** 2 <= 1).float()  # in the box 22..42 x 23..33
    box = torch.tensor([[22 / S, 23 / S, 42 / S, 33 / S]]).repeat(4, 1)
    sx, sy = torch.tensor([1.0, 1.2, 0.8, 1.1]), torch.tensor([1.0, 1.2, 0.9, 1.0])
    shift = torch.tensor([[0.0, 0.0], [0.1, -0.1], [-0.2, 0.1], [0.0, 0.2]])
    flip = torch.zeros(4, dtype=torch.bool)
    angle = torch.deg2rad(torch.tensor([30.0, -35.0, 90.0, 12.0]))
    y = warp(x, sx, sy, shift, flip, angle)
    moved = warp_boxes(box, sx, sy, shift, flip, angle) * S
    for i in range(4):
        ys, xs = np.nonzero(y[i, 0].numpy() > 0.5)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], moved[i].numpy(), atol=1.5)
    zero = torch.zeros(4)
    assert torch.allclose(warp(x, sx, sy, shift, flip, zero), warp(x, sx, sy, shift, flip), atol=1e-4)  # float rounding
    assert torch.allclose(warp_boxes(box, sx, sy, shift, flip, zero), warp_boxes(box, sx, sy, shift, flip))


def test_turns_are_drawn_only_when_asked_and_keep_the_targets_true():
    x, b = _views(64)
    plain = randomise(x, b, torch.Generator().manual_seed(5))
    assert all(torch.equal(u, v) for u, v in zip(plain, randomise(x, b, torch.Generator().manual_seed(5), rotate=0.0),
                                                 strict=True))
    out, boxes, target = randomise(x, b, torch.Generator().manual_seed(5), crop_neg=0.0, mirror_neg=0.0, rotate=35.0)
    assert not torch.equal(out, plain[0])
    assert (target == 1).sum() > 32 and torch.all(boxes >= 0) and torch.all(boxes <= 1)
