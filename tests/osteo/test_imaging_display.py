"""osteo.etl.imaging.display: grey-level mapping (modality, MONOCHROME1, window, VOI LUT, percentiles)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut
from pydicom.sequence import Sequence

from osteo.etl import imaging as im
from tests.imaging_factory import (
    make_ds,
    write,
)


@pytest.mark.parametrize("bits_stored,bits_allocated", [(8, 8), (10, 16), (12, 16), (16, 16)])
def test_unit_spans_stored_range(tmp_path, bits_stored, bits_allocated):
    top = 2**bits_stored - 1
    px = np.linspace(0, top, 16 * 16).round().reshape(16, 16)
    path = write(make_ds(px, bits_stored=bits_stored, bits_allocated=bits_allocated), tmp_path / "b.dcm")
    display, unit = im.to_display(im.read_dicom(path))
    np.testing.assert_allclose(unit.ravel(), px.ravel() / top, atol=1e-6)
    assert display.min() == 0.0 and display.max() == 1.0


def test_signed_pixels_and_rescale(tmp_path):
    px = np.array([[-2048, -1, 0, 2047]] * 4)
    plain = write(make_ds(px, signed=True), tmp_path / "s.dcm")
    rescaled = write(make_ds(px, signed=True, slope=2.0, intercept=-1000.0), tmp_path / "r.dcm")
    _, u_plain = im.to_display(im.read_dicom(plain))
    _, u_resc = im.to_display(im.read_dicom(rescaled))
    np.testing.assert_allclose(u_plain[0], (px[0] + 2048) / 4095, atol=1e-6)
    np.testing.assert_allclose(u_resc, u_plain, atol=1e-6)  # rescale is linear: same unit image
    # a negative slope flips the modality values, so high stored values become low unit values
    neg = write(make_ds(px, signed=True, slope=-1.0, intercept=0.0), tmp_path / "n.dcm")
    _, u_neg = im.to_display(im.read_dicom(neg))
    np.testing.assert_allclose(u_neg, 1.0 - u_plain, atol=1e-6)


def test_monochrome1_is_inverted_to_the_same_display(tmp_path):
    # a few grey levels, so percentiles land on plateaus and the match is exact
    levels = np.array([300, 900, 1500, 2600, 3400])
    rng = np.random.default_rng(3)
    px2 = levels[rng.integers(0, 5, (40, 40))]
    px1 = 4095 - px2
    m2 = write(make_ds(px2), tmp_path / "m2.dcm")
    m1 = write(make_ds(px1, photometric="MONOCHROME1"), tmp_path / "m1.dcm")
    d2, u2 = im.to_display(im.read_dicom(m2))
    d1, u1 = im.to_display(im.read_dicom(m1))
    np.testing.assert_allclose(u1, u2, atol=1e-6)
    np.testing.assert_allclose(d1, d2, atol=1e-6)
    assert d2[px2 == 3400].min() == 1.0  # dense is bright in both
    # and with a window (mirrored center): equal to within the half-step of the LINEAR formula
    w2 = write(make_ds(px2, window=(1800, 2000)), tmp_path / "w2.dcm")
    w1 = write(make_ds(px1, photometric="MONOCHROME1", window=(4095 - 1800, 2000)), tmp_path / "w1.dcm")
    dw2, _ = im.to_display(im.read_dicom(w2))
    dw1, _ = im.to_display(im.read_dicom(w1))
    np.testing.assert_allclose(dw1, dw2, atol=1.5 / 2000)


def _pydicom_window_reference(ds, arr):
    """pydicom's own VOI output scaled to [0, 1] by the range it windows into."""
    modality = arr.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    out = apply_voi_lut(modality, ds)
    bs = ds.BitsStored
    y_min, y_max = (0, 2**bs - 1) if ds.PixelRepresentation == 0 else (-(2 ** (bs - 1)), 2 ** (bs - 1) - 1)
    if "RescaleSlope" in ds:
        y_min, y_max = y_min * ds.RescaleSlope + ds.RescaleIntercept, y_max * ds.RescaleSlope + ds.RescaleIntercept
    return (out - y_min) / (y_max - y_min)


@pytest.mark.parametrize("function", [None, "LINEAR_EXACT", "SIGMOID"])
def test_window_matches_pydicom(tmp_path, function):
    px = np.linspace(0, 4095, 64 * 64).round().reshape(64, 64).astype(np.uint16)
    ds = make_ds(px, slope=0.5, intercept=-100.0, window=([700.0, 200.0], [600.0, 50.0]), voi_function=function)
    path = write(ds, tmp_path / "w.dcm")
    display, _ = im.to_display(im.read_dicom(path))
    ref = _pydicom_window_reference(ds, px)
    np.testing.assert_allclose(display, ref, atol=2e-6)
    modality = px * 0.5 - 100.0
    if function is None:  # first window of two: 700 +/- 300
        assert display[modality <= 399].max() == 0.0 and display[modality >= 1000].min() == 1.0


@pytest.mark.parametrize("bits", [12, 8])
def test_voi_lut_sequence_wins_over_window(tmp_path, bits):
    px = np.linspace(0, 4095, 32 * 32).round().reshape(32, 32).astype(np.uint16)
    ds = make_ds(px, window=(2000, 4000))
    item = Dataset()
    top = 2**bits - 1
    lut = (np.sqrt(np.linspace(0, 1, 1024)) * top).round().astype(np.uint16)
    item.LUTDescriptor = [1024, 1000, bits]
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData
    ds.VOILUTSequence = Sequence([item])
    path = write(ds, tmp_path / "lut.dcm")
    display, _ = im.to_display(im.read_dicom(path))
    expected = lut[np.clip(px.astype(int) - 1000, 0, 1023)] / top
    np.testing.assert_allclose(display, expected, atol=1e-6)
    if bits > 8:  # pydicom 3.0 wraps indices of 8-bit LUTs longer than 256 entries (uint8)
        np.testing.assert_allclose(display, apply_voi_lut(px, ds, prefer_lut=True) / top, atol=1e-6)
    res = im.export_roi(path, (4, 4, 28, 28), "L", tmp_path / "lut.png", blur_threshold=0, metal_threshold=1)
    assert res.transform["window"]["source"] == "voi_lut_sequence"


def test_percentile_window_when_no_voi(tmp_path):
    px = np.arange(1000, 1000 + 40 * 50).reshape(40, 50)
    display, _ = im.to_display(im.read_dicom(write(make_ds(px), tmp_path / "p.dcm")))
    lo, hi = np.percentile(px, 0.5), np.percentile(px, 99.5)
    np.testing.assert_allclose(display, np.clip((px - lo) / (hi - lo), 0, 1), atol=2.0 / (hi - lo))
