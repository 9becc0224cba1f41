"""osteo.etl.imaging.quality: metal and blur measures, and the exclusions export_roi draws from them."""

from __future__ import annotations

import numpy as np
import pytest

from osteo.etl import imaging as im
from tests.imaging_factory import (
    BOX,
    make_ds,
    textured,
    write,
)


def test_measure_quality_definitions():
    flat = np.full((10, 10), 0.5, np.float32)
    assert im.measure_quality(flat, flat) == {"metal_fraction": 0.0, "blur_score": 0.0}
    checker = (np.indices((10, 10)).sum(0) % 2).astype(np.float32)
    q = im.measure_quality(checker, checker)
    assert q["metal_fraction"] == 0.5
    assert q["blur_score"] == pytest.approx(4 * 255.0, rel=1e-6)  # |laplacian| = 4*255 everywhere, sign alternating


def test_metal_is_excluded(tmp_path):
    px = textured()
    px[40:50, 40:50] = 4095  # implant at the stored maximum inside the box
    path = write(make_ds(px, window=(1800, 2400)), tmp_path / "m.dcm")
    out = tmp_path / "m.png"
    res = im.export_roi(path, BOX, "L", out)
    assert res.status == "excluded" and res.exclusion == "metal"
    assert res.metal_fraction == pytest.approx(100 / 48**2)
    assert res.path is None and res.sha256 is None and not out.exists()
    clean = im.export_roi(write(make_ds(textured(), window=(1800, 2400)), tmp_path / "c.dcm"), BOX, "L", out)
    assert clean.status == "exported" and clean.metal_fraction == 0.0 and out.exists()


def test_blur_is_excluded(tmp_path):
    from scipy.ndimage import gaussian_filter  # a dependency (the simulator's too): no skip

    sharp = textured()
    blurred = gaussian_filter(sharp.astype(np.float64), sigma=4).round().astype(np.uint16)
    r_sharp = im.export_roi(write(make_ds(sharp, window=(1800, 2400)), tmp_path / "s.dcm"), BOX, "L",
                            tmp_path / "s.png")
    r_blur = im.export_roi(write(make_ds(blurred, window=(1800, 2400)), tmp_path / "b.dcm"), BOX, "L",
                           tmp_path / "b.png")
    assert r_sharp.status == "exported" and r_sharp.blur_score > 6.0
    assert r_blur.exclusion == "blur" and r_blur.blur_score < 6.0
    assert r_blur.metal_fraction == 0.0
    # metal wins over blur
    blurred[40:50, 40:50] = 4095
    r_both = im.export_roi(write(make_ds(blurred, window=(1800, 2400)), tmp_path / "mb.dcm"), BOX, "L",
                           tmp_path / "mb.png")
    assert r_both.exclusion == "metal"
