"""The compiled ray caster (osteo/synth/raykernel.py) against the NumPy reference it replaced
(osteo/synth/raycast.py, in float64): the same path length on every pixel of every body of hip,
pelvis and non-hip films, rotated and tilted."""

from __future__ import annotations

import numpy as np
import pytest

from osteo.synth.anatomy import build_anatomy
from osteo.synth.film import draw_camera
from osteo.synth.raycast import Body, Camera, Solid, path_image, reference_path_image
from osteo.synth.raykernel import body_paths


def _bodies(anat) -> list[Body]:
    bones = [b.outer for b in anat.bones] + [b.inner for b in anat.bones if b.inner is not None]
    return [anat.soft, anat.muscle, *anat.gas, *bones]


@pytest.mark.parametrize(("seed", "view", "rotation"), [(0, "pelvis", 0.0), (1, "hip", 25.0), (2, "pelvis", -30.0),
                                                        (3, "hip", 90.0)])
def test_the_kernel_casts_what_the_reference_casts(seed, view, rotation):
    rng = np.random.default_rng(seed)
    anat = build_anatomy(rng, sex="F" if seed % 2 else "M", bmd=0.7)
    cam = draw_camera(rng, anat, view, "L" if seed % 2 else "R", 300, 240, 1.2, rotation)
    compared = 0
    for body in _bodies(anat):
        centre, radius = body.bound()
        win = cam.window(centre, radius)
        if win is None:
            continue
        ref = reference_path_image(cam, body, win)
        got = body_paths(cam, body, win)
        assert got.shape == ref.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3)
        compared += int((ref > 0).sum())
    assert compared > 20_000  # bones, soft tissue and gas were met, not just empty windows


def test_holes_planes_and_a_ray_along_a_cut_plane():
    """A cut ellipsoid with a hole and a capped cylinder, rays parallel to a cutting plane included."""
    cam = Camera(source=(0.0, 0.0, -1000.0), z_det=100.0, x0=-60.0, y0=-60.0, spacing=1.0, rows=121, cols=121)
    cut = Solid("ellipsoid", (0.0, 0.0, 0.0), (40.0, 30.0, 25.0), planes=(((1.0, 0.0, 0.0), 10.0),
                                                                          ((0.0, 0.0, 1.0), 5.0)))
    hole = Solid("ellipsoid", (5.0, 0.0, 0.0), (10.0, 10.0, 10.0))
    rod = Solid("cylinder", (0.0, 20.0, 0.0), (6.0, 6.0, 1.0), np.eye(3)[:, [1, 2, 0]], (-35.0, 35.0))
    body = Body((cut, rod), (hole,))
    win = (0, 121, 0, 121)
    np.testing.assert_allclose(body_paths(cam, body, win), reference_path_image(cam, body, win), rtol=0, atol=1e-3)
    lp, w = path_image(cam, body)
    assert w is not None and float(lp.max()) > 20.0
