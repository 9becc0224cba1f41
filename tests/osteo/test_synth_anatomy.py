"""The simulator checked against its own 3D truth: the ray caster's path lengths, the femur's
geometry (neck-shaft angle, head size, the leg's rotation), the projected neck box, the label in
the bone and not in the brightness, and the non-hip films."""

from __future__ import annotations

import numpy as np
import pytest

from osteo.synth.anatomy import bone_quality, build_anatomy
from osteo.synth.film import ANATOMY_HI, ANATOMY_LO, draw_camera, render_film
from osteo.synth.nonhip import KINDS, render_nonhip
from osteo.synth.raycast import Body, Camera, Solid, frame_from_axis, union_length


def _parallel_rays(xs, ys):
    """Rays along +z through (x, y), one (origin, direction) pair each (the caster takes one origin)."""
    return [(np.array([x, y, -100.0], dtype=np.float32), np.array([[0.0], [0.0], [1.0]], dtype=np.float32))
            for x, y in zip(xs, ys, strict=True)]


def test_chords_through_solids_are_exact():
    sphere = Solid("ellipsoid", (0.0, 0.0, 0.0), (20.0, 20.0, 20.0))
    for x in (0.0, 10.0, 19.0, 25.0):
        (o, d), = _parallel_rays([x], [0.0])
        t0, t1 = sphere.interval(o, d)
        want = 2 * np.sqrt(max(0.0, 400 - x * x))
        assert float(np.maximum(t1 - t0, 0)[0]) == pytest.approx(want, abs=2e-3)
    # a cylinder along x, radius 5 (in y) by 8 (in z), 30 mm long: a ray along z through its middle
    cyl = Solid("cylinder", (0.0, 0.0, 0.0), (5.0, 8.0, 1.0), frame_from_axis(np.array([1.0, 0.0, 0.0]),
                                                                              np.array([0.0, 0.0, 1.0])), (-15.0, 15.0))
    (o, d), = _parallel_rays([0.0], [0.0])
    t0, t1 = cyl.interval(o, d)
    assert float((t1 - t0)[0]) == pytest.approx(16.0, abs=2e-3)  # the second radius lies along z (up x axis first)
    (o, d), = _parallel_rays([16.0], [0.0])  # beyond its end
    t0, t1 = cyl.interval(o, d)
    assert float(np.maximum(t1 - t0, 0)[0]) == 0.0


def test_union_and_holes():
    t0 = np.array([[0.0, 0.0], [5.0, 20.0], [8.0, np.inf]], dtype=np.float32)
    t1 = np.array([[10.0, 1.0], [12.0, 21.0], [9.0, -np.inf]], dtype=np.float32)
    np.testing.assert_allclose(union_length(t0, t1), [12.0, 2.0])
    shell = Body((Solid("ellipsoid", (0.0, 0.0, 0.0), (20.0,) * 3),),
                 (Solid("ellipsoid", (0.0, 0.0, 0.0), (18.0,) * 3),))
    (o, d), = _parallel_rays([0.0], [0.0])
    assert float(shell.length(o, d)[0]) == pytest.approx(4.0, abs=2e-3)  # the cortex twice along the beam


@pytest.mark.parametrize("seed", range(6))
def test_femur_geometry_is_the_drawn_anatomy(seed):
    rng = np.random.default_rng(seed)
    anat = build_anatomy(rng, sex="F" if seed % 2 else "M", bmd=0.8)
    p = anat.params
    assert 40.0 <= 2 * p["head_r"] <= 55.0
    for side, f in anat.femora.items():
        angle = np.degrees(np.arccos(np.clip(f.neck_dir @ f.shaft_dir, -1, 1)))
        assert angle == pytest.approx(p[f"nsa_{side}"], abs=1e-6) and 120.0 <= angle <= 140.0
        # the head sits in the acetabulum of its side, the neck runs from it towards the shaft
        assert np.sign(f.head[0]) == (1 if side == "L" else -1)
        assert np.linalg.norm(f.base - (f.head - f.neck_dir * f.neck_len)) < 1e-9
        # anteversion turns the neck forward: its head end is anterior (-z) of its base
        assert f.neck_dir[2] < 0
        pts = f.neck_region()
        along = (f.head - pts) @ f.neck_dir
        assert along.min() >= 0.8 * f.radius and along.max() <= f.neck_len


def test_external_rotation_shortens_the_projected_neck():
    lengths = []
    for rot in (-15.0, 0.0, 30.0):
        rng = np.random.default_rng(5)
        anat = build_anatomy(rng, sex="F", bmd=0.8, leg_rotation=(rot, rot))
        cam = draw_camera(np.random.default_rng(1), anat, "pelvis", "B", 600, 600, 0.7, 0.0)
        f = anat.femora["L"]
        a, b = cam.project(np.stack([f.head, f.base]))
        lengths.append(float(np.hypot(*(a - b))))
    assert lengths[0] > lengths[1] > lengths[2]


def test_truth_box_is_the_projected_neck():
    rng = np.random.default_rng(3)
    r = render_film(rng, view="pelvis", laterality="B", rows=620, cols=620, spacing=0.69, bmd=0.7)
    assert set(r.boxes) == {"L", "R"}
    (rx0, _, rx1, _), (lx0, _, lx1, _) = r.boxes["R"], r.boxes["L"]
    # standard AP: the patient's right hip on the image's left; a square export puts the necks near
    # 0.2 and 0.8 of the width, about 0.08 of the width across
    assert rx1 < 310 < lx0
    for x0, y0, x1, y1 in r.boxes.values():
        assert 0.03 <= (x1 - x0) / 620 <= 0.14 and 0.03 <= (y1 - y0) / 620 <= 0.14
        assert 0.3 <= (y0 + y1) / 2 / 620 <= 0.7
    assert 0.1 <= (rx0 + rx1) / 2 / 620 <= 0.35 and 0.65 <= (lx0 + lx1) / 2 / 620 <= 0.9


def test_box_follows_the_camera_exactly():
    rng = np.random.default_rng(11)
    anat = build_anatomy(rng, sex="M", bmd=0.6)
    cam = draw_camera(rng, anat, "hip", "R", 640, 520, 0.47, 12.0)
    uv = cam.project(anat.femora["R"].neck_region())
    moved = Camera(cam.source, cam.z_det, cam.x0 + 10 * cam.spacing, cam.y0, cam.spacing, cam.rows, cam.cols,
                   cam.pose, cam.pivot)
    np.testing.assert_allclose(moved.project(anat.femora["R"].neck_region())[:, 0], uv[:, 0] - 10, atol=1e-6)


def test_osteoporosis_is_in_the_neck_not_the_brightness():
    low, high = build_anatomy(np.random.default_rng(0), sex="F", bmd=0.45), build_anatomy(
        np.random.default_rng(0), sex="F", bmd=1.0)
    assert bone_quality(0.45) < bone_quality(1.0)
    assert low.params["cortex_neck"] < high.params["cortex_neck"] and low.params["bvtv"] < high.params["bvtv"]
    assert low.params["bvtv_other"] == high.params["bvtv_other"]  # the pelvis does not carry the label
    # the whole film's mean brightness is set by exposure and processing, not by the BMD
    means = {bmd: [float(render_film(np.random.default_rng(s), view="hip", laterality="L", rows=320, cols=260,
                                     spacing=0.95, bmd=bmd).frac.mean()) for s in range(4)] for bmd in (0.45, 1.0)}
    assert abs(np.mean(means[0.45]) - np.mean(means[1.0])) < 0.5 * np.std(means[0.45] + means[1.0]) + 0.02


def test_film_value_contract_and_metal():
    for seed, implant in ((0, None), (1, "screw"), (2, "stem"), (4, "screw")):
        r = render_film(np.random.default_rng(seed), view="hip", laterality="L", rows=400, cols=330, spacing=0.75,
                        bmd=0.7, implant=implant)
        anat = r.frac[~r.metal]
        assert anat.min() >= ANATOMY_LO - 1e-6 and anat.max() <= ANATOMY_HI + 1e-6
        assert r.metal.any() == (implant is not None)
        if implant:
            x0, y0, x1, y1 = r.boxes["L"]
            assert r.metal[y0:y1, x0:x1].mean() > 0.05  # the implant runs through the neck


@pytest.mark.parametrize("kind", KINDS)
def test_nonhip_films(kind):
    f = render_nonhip(kind, np.random.default_rng(0), 300, 240)
    assert f.shape == (300, 240) and f.dtype == np.float32 and 0.0 <= f.min() < f.max() <= 1.0
    assert f.std() > 0.1  # anatomy, not a blank
    with pytest.raises(ValueError):
        render_nonhip("skull", np.random.default_rng(0), 10, 10)
