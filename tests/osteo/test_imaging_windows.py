"""osteo.etl.imaging.windows and .openjp2: only the crop windows decoded (screening, issue 27), always equal to
the whole frame's decode there."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.encaps import encapsulate, get_frame
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from osteo.etl import imaging as im
from osteo.etl.imaging import openjp2
from osteo.etl.imaging.export import box_quality, neck_crop, neck_crop_of
from osteo.etl.imaging.windows import prepare_windows
from tests.imaging_factory import _available, make_ds, textured, write

needs_j2k = pytest.mark.skipif(not (_available(JPEG2000Lossless) and openjp2.available()),
                               reason="no J2K encoder or no libopenjp2")
BOXES = [(20, 30, 70, 90), (100, 40, 150, 95)]  # two femurs, as an AP pelvis has
MARGIN = 0.15


def film(tmp_path, ts, *, signed=False, window=(1800, 2000), bits_stored=12, noise_bits=False):
    px = textured(128, 176, seed=5).astype(np.int32)
    if signed:
        px = px - 2048
    if noise_bits:  # junk above BitsStored: the decode must shift it out, as pydicom does
        px = px + (np.random.default_rng(1).integers(0, 2, px.shape) << 14) * (1 - 2 * int(signed))
    ds = make_ds(px, signed=signed, window=window, bits_stored=bits_stored)
    return write(ds, tmp_path / f"{ts.name.replace(' ', '_')}-{signed}-{window}.dcm", ts)


def whole_decode(path):
    return im.prepare_display(im.read_dicom(path))


def assert_same_where_read(dm, whole):
    for box in BOXES:
        for side in ("L", "R"):
            np.testing.assert_array_equal(neck_crop_of(dm, box, side), neck_crop(whole.display_u8(), box, side))
        assert box_quality(dm, box) == box_quality(whole, box)
    for name in ("unit_lut", "display_lut", "display_u8_lut"):
        np.testing.assert_array_equal(getattr(dm, name), getattr(whole, name))
    assert (dm.window, dm.photometric, dm.info) == (whole.window, whole.photometric, whole.info)


@pytest.mark.parametrize("ts", [pytest.param(JPEG2000Lossless, marks=needs_j2k), ExplicitVRLittleEndian,
                                ImplicitVRLittleEndian], ids=lambda u: u.name)
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_the_windows_hold_the_whole_decodes_values(tmp_path, ts, signed):
    path = film(tmp_path, ts, signed=signed, noise_bits=ts != JPEG2000Lossless)
    dm = prepare_windows(im.read_dicom(path), BOXES, MARGIN)
    assert dm is not None and dm.windows is not None and len(dm.windows) == 2
    whole = whole_decode(path)
    for window in dm.windows:
        np.testing.assert_array_equal(dm.codes[window], whole.codes[window])
    assert_same_where_read(dm, whole)
    with pytest.raises(ValueError, match="not inside the decoded windows"):
        dm.display_u8()  # the rest of the frame was never decoded


@pytest.mark.parametrize("ts", [pytest.param(JPEG2000Lossless, marks=needs_j2k), ExplicitVRLittleEndian],
                         ids=lambda u: u.name)
def test_a_frame_graded_by_its_percentiles_is_decoded_whole(tmp_path, ts):
    path = film(tmp_path, ts, window=None, noise_bits=ts != JPEG2000Lossless)
    dm = prepare_windows(im.read_dicom(path), BOXES, MARGIN)
    assert dm is not None and dm.windows is None
    whole = whole_decode(path)
    np.testing.assert_array_equal(dm.codes, whole.codes)
    assert dm.window["source"] == "percentile"
    assert_same_where_read(dm, whole)
    nothing_to_crop = prepare_windows(im.read_dicom(film(tmp_path, ts)), [], MARGIN)
    assert nothing_to_crop is not None and nothing_to_crop.windows is None


def test_what_cannot_be_cut_is_left_to_the_whole_frame_decode(tmp_path):
    def cut(path, boxes=BOXES):
        return prepare_windows(im.read_dicom(path), boxes, MARGIN)

    assert cut(film(tmp_path, ExplicitVRLittleEndian), [(500, 500, 600, 600)]) is None  # off the image
    if _available(RLELossless):
        assert cut(film(tmp_path, RLELossless)) is None


@needs_j2k
def test_a_codestream_openjpeg_refuses_or_a_lossy_wavelet_is_decoded_whole(tmp_path):
    ds = im.read_dicom(film(tmp_path, JPEG2000Lossless))
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"junk" * 20])
    assert prepare_windows(ds, BOXES, MARGIN) is None
    with pytest.raises(im.ExportError):
        im.prepare_display(ds)  # which then says why
    lossy = make_ds(textured(128, 176, seed=5), window=(1800, 2000))
    try:
        lossy.compress(JPEG2000, j2k_cr=[10])
    except Exception as exc:  # noqa: BLE001 - an encoder without lossy JPEG 2000
        pytest.skip(f"no lossy J2K encoder: {exc}")
    frame = get_frame(lossy.PixelData, 0, number_of_frames=1)
    assert not openjp2.reversible(frame)  # the 9/7 wavelet: no promise of equal values
    assert prepare_windows(lossy, BOXES, MARGIN) is None
    lossless = im.read_dicom(film(tmp_path, JPEG2000Lossless))
    assert openjp2.reversible(get_frame(lossless.PixelData, 0, number_of_frames=1))
