"""osteo.etl.imaging: decoding, grey-level mapping, ROI export, quality checks, bad input."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_voi_lut, get_encoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from osteo.etl import imaging as im
from osteo_common.files import atomic_write_bytes, sha256_file

PATIENT_ID = "PID-7766554"
PATIENT_NAME = "WANG^XIAO MING"


# --------------------------------------------------------------------------- factories


def make_ds(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    bits_allocated: int = 16,
    signed: bool = False,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple | None = None,
    voi_function: str | None = None,
    frames: int = 1,
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = PATIENT_ID
    ds.PatientName = PATIENT_NAME
    ds.StudyDate = "20210315"
    ds.Modality = "DX"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept or 0.0, "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function:
        ds.VOILUTFunction = voi_function
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}
    ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype[(bits_allocated, signed)]).tobytes()
    return ds


def write(ds: FileDataset, path: Path, ts=ExplicitVRLittleEndian) -> Path:
    if ts in (RLELossless, JPEG2000Lossless):
        ds.compress(ts)
    elif ts == ExplicitVRBigEndian:
        arr = np.frombuffer(ds.PixelData, dtype="<u2" if ds.BitsAllocated == 16 else "u1")
        ds.PixelData = arr.astype(">u2" if ds.BitsAllocated == 16 else "u1").tobytes()
        ds.file_meta.TransferSyntaxUID = ts
        dcmwrite(path, ds, enforce_file_format=True)  # save_as refuses little -> big endian
        return path
    else:
        ds.file_meta.TransferSyntaxUID = ts
    ds.save_as(path, enforce_file_format=True)
    return path


def textured(rows=96, cols=96, lo=600, hi=3000, seed=0) -> np.ndarray:
    """Bone-like texture: smooth blob plus fine stripes and noise, inside [lo, hi]."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    rng = np.random.default_rng(seed)
    base = lo + (hi - lo) * (0.3 + 0.4 * np.exp(-((x - cols / 2) ** 2 + (y - rows / 2) ** 2) / (2 * (rows / 3) ** 2)))
    texture = 0.12 * (hi - lo) * np.sin(x / 1.7) * np.cos(y / 2.3) + rng.normal(0, 0.03 * (hi - lo), (rows, cols))
    return np.clip(base + texture, lo, hi).astype(np.uint16)


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return out


BOX = (24, 24, 72, 72)


# --------------------------------------------------------------------------- decoding


def _available(uid) -> bool:
    try:
        return get_encoder(uid).is_available
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.parametrize(
    "ts",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        pytest.param(JPEG2000Lossless, marks=pytest.mark.skipif(not _available(JPEG2000Lossless), reason="no J2K encoder")),
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


PYDICOM_FILES = Path(__import__("pydicom").__file__).parent / "data" / "test_files"


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


@pytest.mark.parametrize("bits_stored,bits_allocated", [(8, 8), (10, 16), (12, 16), (16, 16)])
def test_unit_spans_stored_range(tmp_path, bits_stored, bits_allocated):
    top = 2**bits_stored - 1
    px = np.linspace(0, top, 16 * 16).round().reshape(16, 16)
    path = write(make_ds(px, bits_stored=bits_stored, bits_allocated=bits_allocated), tmp_path / "b.dcm")
    display, unit = im.to_display(im.read_dicom(path))
    np.testing.assert_allclose(unit.ravel(), px.ravel() / top, atol=1e-6)
    assert display.min() == 0.0 and display.max() == 1.0


def test_unused_high_bits_are_ignored(tmp_path):
    px = np.array([[0, 100, 4095, 2048]] * 4, dtype=np.uint16)
    ds = make_ds(px)
    ds.PixelData = (px | 0xF000).astype("<u2").tobytes()  # overlay garbage above bit 11
    _, unit = im.to_display(im.read_dicom(write(ds, tmp_path / "h.dcm")))
    np.testing.assert_allclose(unit[0], px[0] / 4095, atol=1e-6)


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


def test_multiframe_uses_first_frame(tmp_path):
    frames = np.stack([textured(32, 32, seed=1), np.full((32, 32), 4095, np.uint16)])
    path = write(make_ds(frames, frames=2), tmp_path / "mf.dcm")
    single = write(make_ds(frames[0]), tmp_path / "sf.dcm")
    d_mf, _ = im.to_display(im.read_dicom(path))
    d_sf, _ = im.to_display(im.read_dicom(single))
    np.testing.assert_array_equal(d_mf, d_sf)
    res = im.export_roi(path, (4, 4, 28, 28), "L", tmp_path / "mf.png", blur_threshold=0)
    assert res["frames"] == 2 and res["frame_index"] == 0 and res["transform"]["frame_index"] == 0


# --------------------------------------------------------------------------- grey levels


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
    out = apply_voi_lut(arr.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0)), ds)
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
    assert res["transform"]["window"]["source"] == "voi_lut_sequence"


def test_percentile_window_when_no_voi(tmp_path):
    px = np.arange(1000, 1000 + 40 * 50).reshape(40, 50)
    display, _ = im.to_display(im.read_dicom(write(make_ds(px), tmp_path / "p.dcm")))
    lo, hi = np.percentile(px, 0.5), np.percentile(px, 99.5)
    np.testing.assert_allclose(display, np.clip((px - lo) / (hi - lo), 0, 1), atol=2.0 / (hi - lo))


# --------------------------------------------------------------------------- export geometry


def test_crop_margin_geometry_without_resize(tmp_path):
    rows, cols = 100, 120
    px = (np.arange(rows * cols).reshape(rows, cols) % 4096).astype(np.uint16)
    path = write(make_ds(px, window=(2048, 4096)), tmp_path / "g.dcm")
    res = im.export_roi(path, (20, 30, 60, 70), "L", tmp_path / "g.png", size=60, margin=0.25, blur_threshold=0,
                        metal_threshold=1.0)
    assert res["transform"]["box"] == [20, 30, 60, 70]
    assert res["transform"]["crop"] == [10, 20, 70, 80]  # 0.25 x 40 px on each side
    display, _ = im.to_display(im.read_dicom(path))
    expected = np.rint(display[20:80, 10:70] * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(res["path"])), expected)
    # at the image edge the margin (and the box) are clipped to the image
    res = im.export_roi(path, (-5, 80, 30, 130), "L", tmp_path / "e.png", margin=0.2, blur_threshold=0,
                        metal_threshold=1.0)
    assert res["transform"]["box"] == [0, 80, 30, 100]
    assert res["transform"]["crop"] == [0, 76, 36, 100]
    assert Image.open(res["path"]).size == (256, 256)


def test_right_femur_is_flipped(tmp_path):
    px = np.full((64, 64), 800, np.uint16)
    px[:, 10:20] = 3500  # bright band on the image's left side
    px[5:9, 40:60] = 2000
    path = write(make_ds(px, window=(2000, 3000)), tmp_path / "f.dcm")
    left = im.export_roi(path, (0, 0, 64, 64), "L", tmp_path / "l.png", size=64, blur_threshold=0)
    right = im.export_roi(path, (0, 0, 64, 64), "R", tmp_path / "r.png", size=64, blur_threshold=0)
    a_l, a_r = np.asarray(Image.open(left["path"])), np.asarray(Image.open(right["path"]))
    assert left["transform"]["flip_horizontal"] is False and right["transform"]["flip_horizontal"] is True
    np.testing.assert_array_equal(a_r, a_l[:, ::-1])
    assert a_l[:, 10:20].mean() > 200 and a_r[:, 44:54].mean() > 200
    assert left["transform_digest"] != right["transform_digest"]


# --------------------------------------------------------------------------- quality


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
    assert res["status"] == "excluded" and res["exclusion"] == "metal"
    assert res["metal_fraction"] == pytest.approx(100 / 48**2)
    assert res["path"] is None and res["sha256"] is None and not out.exists()
    clean = im.export_roi(write(make_ds(textured(), window=(1800, 2400)), tmp_path / "c.dcm"), BOX, "L", out)
    assert clean["status"] == "exported" and clean["metal_fraction"] == 0.0 and out.exists()


def test_blur_is_excluded(tmp_path):
    gaussian_filter = pytest.importorskip("scipy.ndimage").gaussian_filter  # scipy comes with scikit-learn

    sharp = textured()
    blurred = gaussian_filter(sharp.astype(np.float64), sigma=4).round().astype(np.uint16)
    r_sharp = im.export_roi(write(make_ds(sharp, window=(1800, 2400)), tmp_path / "s.dcm"), BOX, "L", tmp_path / "s.png")
    r_blur = im.export_roi(write(make_ds(blurred, window=(1800, 2400)), tmp_path / "b.dcm"), BOX, "L", tmp_path / "b.png")
    assert r_sharp["status"] == "exported" and r_sharp["blur_score"] > 6.0
    assert r_blur["exclusion"] == "blur" and r_blur["blur_score"] < 6.0
    assert r_blur["metal_fraction"] == 0.0
    # metal wins over blur
    blurred[40:50, 40:50] = 4095
    r_both = im.export_roi(write(make_ds(blurred, window=(1800, 2400)), tmp_path / "mb.dcm"), BOX, "L", tmp_path / "mb.png")
    assert r_both["exclusion"] == "metal"


# --------------------------------------------------------------------------- outputs


def test_png_is_clean_atomic_and_deterministic(tmp_path):
    path = write(make_ds(textured(), window=(1800, 2400)), tmp_path / "d.dcm")
    out_dir = tmp_path / "out"
    a = im.export_roi(path, BOX, "R", out_dir / "a.png")
    b = im.export_roi(path, BOX, "R", out_dir / "b.png")
    assert a["sha256"] == b["sha256"] == sha256_file(out_dir / "a.png")
    assert a["transform"] == b["transform"] and a["transform_digest"] == b["transform_digest"]
    assert a["source_sha256"] == sha256_file(path)
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
    assert c["transform_digest"] != a["transform_digest"] and c["sha256"] != a["sha256"]
    # results cross process boundaries as plain data
    assert pickle.loads(pickle.dumps(a)) == a


def test_render_png(tmp_path):
    px = textured(50, 70)
    path = write(make_ds(px, photometric="MONOCHROME1"), tmp_path / "r.dcm")
    info = im.render_png(path, tmp_path / "r.png")
    assert (info["rows"], info["cols"], info["photometric"]) == (50, 70, "MONOCHROME1")
    assert info["window"]["source"] == "percentile"
    display, _ = im.to_display(im.read_dicom(path))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png")), np.rint(display * 255).astype(np.uint8))
    assert png_chunks((tmp_path / "r.png").read_bytes()) == [b"IHDR", b"IDAT", b"IEND"]
    assert info["sha256"] == sha256_file(tmp_path / "r.png")


def test_atomic_write_failure_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "t.bin"
    atomic_write_bytes(target, b"old")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]


def test_sha256_file_streams(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "x").write_bytes(data)
    assert sha256_file(tmp_path / "x") == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- bad input


def _reason(fn, *args, **kwargs) -> str:
    with pytest.raises(im.ExportError) as info:
        fn(*args, **kwargs)
    assert info.value.detail
    return info.value.reason


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
    assert _reason(im.export_roi, write(ds, tmp_path / "short.dcm"), BOX, "L", tmp_path / "o.png") == "undecodable_pixels"

    ds = make_ds(textured(), bits_stored=8, bits_allocated=8)
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
    ds.PixelData = np.zeros((96, 96, 3), np.uint8).tobytes()
    assert _reason(im.export_roi, write(ds, tmp_path / "rgb.dcm"), BOX, "L", tmp_path / "o.png") == "unsupported_photometric"

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


def test_export_error_pickles():
    err = im.ExportError("missing_tag:StudyDate", "no StudyDate")
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.detail, str(back)) == (err.reason, err.detail, str(err))
