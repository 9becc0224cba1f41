"""osteo.etl.imaging.export: ROI geometry, flips, the clean deterministic PNG, the whole-frame render."""

from __future__ import annotations

import pickle

import numpy as np
from PIL import Image

from osteo.etl import imaging as im
from osteo_common.files import sha256_file
from tests.imaging_factory import (
    BOX,
    PATIENT_ID,
    PATIENT_NAME,
    make_ds,
    png_chunks,
    textured,
    write,
)

# --------------------------------------------------------------------------- export geometry


def test_crop_margin_geometry_without_resize(tmp_path):
    rows, cols = 100, 120
    px = (np.arange(rows * cols).reshape(rows, cols) % 4096).astype(np.uint16)
    path = write(make_ds(px, window=(2048, 4096)), tmp_path / "g.dcm")
    res = im.export_roi(path, (20, 30, 60, 70), "L", tmp_path / "g.png", size=60, margin=0.25, blur_threshold=0,
                        metal_threshold=1.0)
    assert res.transform["box"] == [20, 30, 60, 70]
    assert res.transform["crop"] == [10, 20, 70, 80]  # 0.25 x 40 px on each side
    display, _ = im.to_display(im.read_dicom(path))
    expected = np.rint(display[20:80, 10:70] * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(res.path)), expected)
    # at the image edge the margin (and the box) are clipped to the image
    res = im.export_roi(path, (-5, 80, 30, 130), "L", tmp_path / "e.png", margin=0.2, blur_threshold=0,
                        metal_threshold=1.0)
    assert res.transform["box"] == [0, 80, 30, 100]
    assert res.transform["crop"] == [0, 76, 36, 100]
    assert Image.open(res.path).size == (256, 256)


def test_right_femur_is_flipped(tmp_path):
    px = np.full((64, 64), 800, np.uint16)
    px[:, 10:20] = 3500  # bright band on the image's left side
    px[5:9, 40:60] = 2000
    path = write(make_ds(px, window=(2000, 3000)), tmp_path / "f.dcm")
    left = im.export_roi(path, (0, 0, 64, 64), "L", tmp_path / "l.png", size=64, blur_threshold=0)
    right = im.export_roi(path, (0, 0, 64, 64), "R", tmp_path / "r.png", size=64, blur_threshold=0)
    a_l, a_r = np.asarray(Image.open(left.path)), np.asarray(Image.open(right.path))
    assert left.transform["flip_horizontal"] is False and right.transform["flip_horizontal"] is True
    np.testing.assert_array_equal(a_r, a_l[:, ::-1])
    assert a_l[:, 10:20].mean() > 200 and a_r[:, 44:54].mean() > 200
    assert left.transform_digest != right.transform_digest


# --------------------------------------------------------------------------- outputs


def test_png_is_clean_atomic_and_deterministic(tmp_path):
    path = write(make_ds(textured(), window=(1800, 2400)), tmp_path / "d.dcm")
    out_dir = tmp_path / "out"
    a = im.export_roi(path, BOX, "R", out_dir / "a.png")
    b = im.export_roi(path, BOX, "R", out_dir / "b.png")
    assert a.sha256 == b.sha256 == sha256_file(out_dir / "a.png")
    assert a.transform == b.transform and a.transform_digest == b.transform_digest
    assert a.source_sha256 == sha256_file(path)
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "b.png"]  # no temp files left
    data = (out_dir / "a.png").read_bytes()
    assert png_chunks(data) == [b"IHDR", b"IDAT", b"IEND"]
    with Image.open(out_dir / "a.png") as img:
        assert img.mode == "L" and img.size == (256, 256)
        assert img.info == {} and img.text == {}
    for secret in (PATIENT_ID, PATIENT_NAME, "WANG"):
        assert secret.encode() not in data
    # a different margin is a different transform
    c = im.export_roi(path, BOX, "R", out_dir / "c.png", margin=0.2)
    assert c.transform_digest != a.transform_digest and c.sha256 != a.sha256
    # results cross process boundaries as plain data
    assert pickle.loads(pickle.dumps(a)) == a


def test_render_png(tmp_path):
    px = textured(50, 70)
    path = write(make_ds(px, photometric="MONOCHROME1"), tmp_path / "r.dcm")
    info = im.render_png(path, tmp_path / "r.png")
    assert (info.rows, info.cols, info.photometric) == (50, 70, "MONOCHROME1")
    assert info.window["source"] == "percentile"
    display, _ = im.to_display(im.read_dicom(path))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png")), np.rint(display * 255).astype(np.uint8))
    assert png_chunks((tmp_path / "r.png").read_bytes()) == [b"IHDR", b"IDAT", b"IEND"]
    assert info.sha256 == sha256_file(tmp_path / "r.png")
