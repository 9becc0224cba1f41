"""osteo.etl.imaging.read: reading and decoding (transfer syntaxes, bit depths, frames), bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from osteo.etl import imaging as im
from tests.imaging_factory import (
    BOX,
    PYDICOM_FILES,
    _available,
    _reason,
    make_ds,
    textured,
    write,
)

# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    "ts",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        pytest.param(JPEG2000Lossless,
                     marks=pytest.mark.skipif(not _available(JPEG2000Lossless), reason="no J2K encoder")),
    ],
    ids=lambda u: u.name,
)
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_lossless_transfer_syntaxes_decode_identically(tmp_path, ts, signed):
    px = textured(48, 40).astype(np.int32)
    if signed:
        px = px - 2048
    ref = write(make_ds(px, signed=signed), tmp_path / "ref.dcm")
    other = write(make_ds(px, signed=signed), tmp_path / "other.dcm", ts)
    d0, u0 = im.to_display(im.read_dicom(ref))
    d1, u1 = im.to_display(im.read_dicom(other))
    assert d1.dtype == u1.dtype == np.float32
    np.testing.assert_array_equal(d0, d1)
    np.testing.assert_array_equal(u0, u1)


def test_jpeg_baseline_8bit_decodes(tmp_path):
    px = (textured(64, 64, 0, 4095) >> 4).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="JPEG", quality=95)
    ds = make_ds(px, bits_allocated=8, bits_stored=8)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(tmp_path / "j.dcm", enforce_file_format=True)
    _, unit = im.to_display(im.read_dicom(tmp_path / "j.dcm"))
    assert np.abs(unit * 255 - px).mean() < 2.0  # lossy, but the same picture


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS: decode-only plugin, no encoder here
        "MR_small_padded.dcm",
    ],
)
def test_files_bundled_with_pydicom_decode_identically(name):
    """Files written by other toolkits (bundled with pydicom, no download): signed 16-bit MR."""
    if not (PYDICOM_FILES / name).exists():
        pytest.skip(f"{name} not bundled with this pydicom")
    ref_d, ref_u = im.to_display(im.read_dicom(PYDICOM_FILES / "MR_small.dcm"))
    d, u = im.to_display(im.read_dicom(PYDICOM_FILES / name))
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(u, ref_u)


def test_bundled_12bit_jpeg_extended_and_truncated_file():
    if not (PYDICOM_FILES / "JPGExtended.dcm").exists():
        pytest.skip("pydicom test files not bundled")
    d, _ = im.to_display(im.read_dicom(PYDICOM_FILES / "JPGExtended.dcm"))
    assert d.shape == (1024, 256) and 0.0 <= d.min() < d.max() <= 1.0
    assert _reason(im.read_dicom, PYDICOM_FILES / "MR_truncated.dcm") == "truncated"


def test_unused_high_bits_are_ignored(tmp_path):
    px = np.array([[0, 100, 4095, 2048]] * 4, dtype=np.uint16)
    ds = make_ds(px)
    ds.PixelData = (px | 0xF000).astype("<u2").tobytes()  # overlay garbage above bit 11
    _, unit = im.to_display(im.read_dicom(write(ds, tmp_path / "h.dcm")))
    np.testing.assert_allclose(unit[0], px[0] / 4095, atol=1e-6)


def test_multiframe_uses_first_frame(tmp_path):
    frames = np.stack([textured(32, 32, seed=1), np.full((32, 32), 4095, np.uint16)])
    path = write(make_ds(frames, frames=2), tmp_path / "mf.dcm")
    single = write(make_ds(frames[0]), tmp_path / "sf.dcm")
    d_mf, _ = im.to_display(im.read_dicom(path))
    d_sf, _ = im.to_display(im.read_dicom(single))
    np.testing.assert_array_equal(d_mf, d_sf)
    res = im.export_roi(path, (4, 4, 28, 28), "L", tmp_path / "mf.png", blur_threshold=0)
    assert res.frames == 2 and res.frame_index == 0 and res.transform["frame_index"] == 0


# --------------------------------------------------------------------------- bad input


def test_export_errors(tmp_path):
    good = write(make_ds(textured(), window=(1800, 2400)), tmp_path / "good.dcm")
    raw = good.read_bytes()

    (tmp_path / "text.dcm").write_bytes(b"PatientID,T-score\nA1,-2.7\n" * 20)
    assert _reason(im.export_roi, tmp_path / "text.dcm", BOX, "L", tmp_path / "o.png") == "not_dicom"
    assert _reason(im.read_dicom, tmp_path / "nope.dcm") == "file_not_found"

    (tmp_path / "cut.dcm").write_bytes(raw[: len(raw) - 3000])  # cut inside the pixel data
    assert _reason(im.export_roi, tmp_path / "cut.dcm", BOX, "L", tmp_path / "o.png") == "truncated"
    (tmp_path / "cut2.dcm").write_bytes(raw[: len(raw) - 96 * 96 * 2 - 4])  # cut inside an element header
    assert _reason(im.render_png, tmp_path / "cut2.dcm", tmp_path / "o.png") == "truncated"

    ds = make_ds(textured())
    del ds.PixelData
    assert _reason(im.render_png, write(ds, tmp_path / "nopix.dcm"), tmp_path / "o.png") == "no_pixels"

    ds = make_ds(textured())
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # consistent element, too few pixels
    short = write(ds, tmp_path / "short.dcm")
    assert _reason(im.export_roi, short, BOX, "L", tmp_path / "o.png") == "undecodable_pixels"

    ds = make_ds(textured(), bits_stored=8, bits_allocated=8)
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
    ds.PixelData = np.zeros((96, 96, 3), np.uint8).tobytes()
    rgb = write(ds, tmp_path / "rgb.dcm")
    assert _reason(im.export_roi, rgb, BOX, "L", tmp_path / "o.png") == "unsupported_photometric"

    ds = make_ds(textured())
    del ds.Rows
    assert _reason(im.render_png, write(ds, tmp_path / "norows.dcm"), tmp_path / "o.png") == "missing_tag:Rows"

    assert _reason(im.export_roi, good, (200, 200, 300, 300), "L", tmp_path / "o.png") == "box_outside_image"
    assert _reason(im.export_roi, good, (50, 50, 50, 80), "L", tmp_path / "o.png") == "empty_box"
    assert _reason(im.export_roi, good, (94, 10, 120, 40), "L", tmp_path / "o.png") == "box_too_small"
    assert _reason(im.export_roi, good, BOX, "X", tmp_path / "o.png") == "invalid_laterality"
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    "ts,fragment",
    [
        (RLELossless, b"\x02\x00\x00\x00\x40\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 52 + b"\x05\x01\x02"),
        (JPEG2000Lossless, b"\xff\x4f\xff\x51" + b"junk" * 20),
        (JPEGBaseline8Bit, b"\xff\xd8" + b"junk" * 20),
    ],
    ids=lambda v: getattr(v, "name", "frag"),
)
def test_corrupt_compressed_pixels_are_undecodable(tmp_path, ts, fragment):
    ds = make_ds(textured(64, 64))
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts
    ds.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
    assert _reason(im.render_png, tmp_path / "bad.dcm", tmp_path / "o.png") == "undecodable_pixels"
