"""Upload handling: the in-memory form, typing by content, and refusals before any pixel is decoded."""

from __future__ import annotations

import asyncio
import io
import itertools
import struct
import tempfile
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from osteo_common.files import sha256_bytes
from osteo_service import dicom_checks, image_decoding
from osteo_service.dicom_checks import check_dicom_header
from osteo_service.form_parser import read_form
from osteo_service.image_decoding import decode_upload, sniff
from osteo_service.limits import Limits, UploadError
from tests.dicom_factory import make_dicom

MARKER = "ZZMARKER^SECRET NAME"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- synthetic files


def dicom_bytes(tmp_path, edit=None, **kw) -> bytes:
    path = tmp_path / "x.dcm"
    make_dicom(path, name=MARKER, **kw)
    if edit is None:
        return path.read_bytes()
    ds = pydicom.dcmread(path)
    edit(ds)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def image_bytes(arr: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A few dozen bytes declaring a huge 1-bit image: what a pixel bomb looks like before decoding."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def refusal(fn, *args) -> UploadError:
    with pytest.raises(UploadError) as info:
        fn(*args)
    err = info.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)  # parsers quote input
    for text in (err.message, str(err), repr(err)):  # patient data never reaches a response or a log
        assert "ZZMARKER" not in text and "SECRET" not in text
    return err


@pytest.fixture
def no_decoding(monkeypatch):
    """Refusals must come from the header: decoding pixels fails the test."""
    def boom(*_a, **_k):
        raise AssertionError("pixels decoded before the refusal")
    monkeypatch.setattr(image_decoding, "load_dicom", boom)
    monkeypatch.setattr(image_decoding, "prepare_display", boom)
    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)


# --------------------------------------------------------------------------- sniff


def test_sniff_types_by_content(tmp_path):
    assert sniff(dicom_bytes(tmp_path)) == "dicom"
    assert sniff(image_bytes(np.zeros((4, 4), np.uint8))) == "png"
    assert sniff(image_bytes(np.zeros((4, 4), np.uint8), "JPEG")) == "jpeg"


@pytest.mark.parametrize("data", [b"hello, I am a text file named scan.png\n", b"DICM" + b"\0" * 200, b""])
def test_sniff_refuses_anything_else(data):
    err = refusal(sniff, data)
    assert (err.status, err.code) == (415, "unsupported_type")


# --------------------------------------------------------------------------- read_form


def app(limit: int) -> Starlette:
    async def upload(request: Request) -> JSONResponse:
        try:
            form = await read_form(request, limit)
        except UploadError as err:
            return JSONResponse({"code": err.code, "message": err.message}, status_code=err.status)
        return JSONResponse({"fields": form.fields, "files": {k: sha256_bytes(v) for k, v in form.files.items()}})

    async def starlette_form(request: Request) -> JSONResponse:
        await request.form()
        return JSONResponse({})

    return Starlette(routes=[Route("/upload", upload, methods=["POST"]),
                             Route("/starlette", starlette_form, methods=["POST"])])


def test_multipart_file_and_fields_in_memory():
    payload = bytes(range(256)) * 40
    with TestClient(app(1 << 20)) as client:
        r = client.post("/upload", data={"age": "71", "sex": "F"},
                        files={"image": ("ZZMARKER chen.dcm", payload, "application/dicom")})
    assert r.status_code == 200
    assert r.json() == {"fields": {"age": "71", "sex": "F"}, "files": {"image": sha256_bytes(payload)}}
    assert "ZZMARKER" not in r.text  # the file name is dropped


def test_first_file_of_a_field_wins_and_urlencoded_forms_parse():
    with TestClient(app(1 << 20)) as client:
        r = client.post("/upload", files=[("image", ("a", b"first")), ("image", ("b", b"second"))])
        assert r.json()["files"] == {"image": sha256_bytes(b"first")}
        r = client.post("/upload", data={"note": "left hip, 71 ans é", "n": "2"})
    assert r.json() == {"fields": {"note": "left hip, 71 ans é", "n": "2"}, "files": {}}


def test_content_length_over_the_limit_is_refused():
    with TestClient(app(10_000)) as client:
        r = client.post("/upload", files={"image": ("x", b"\0" * 20_000)})
    assert (r.status_code, r.json()["code"]) == (413, "too_large")


def test_chunked_body_over_the_limit_is_refused():
    def body():
        for _ in range(30):
            yield b"x" * 1000
    with TestClient(app(10_000)) as client:
        r = client.post("/upload", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.request.headers.get("content-length") is None
    assert (r.status_code, r.json()["code"]) == (413, "too_large")


def _request(headers: dict[str, str], chunks) -> tuple[Request, list[int]]:
    pulled = [0]

    async def receive():
        pulled[0] += 1
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive), pulled


def test_streamed_count_stops_reading_once_past_the_limit():
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n\r\n'
    endless = itertools.chain([head], iter(lambda: b"x" * 1024, None))  # a client that would never stop
    request, pulled = _request({"content-type": "multipart/form-data; boundary=b"}, endless)
    with pytest.raises(UploadError) as info:
        asyncio.run(read_form(request, 10 * 1024))
    assert info.value.status == 413 and pulled[0] == 11


def test_declared_length_is_refused_before_reading():
    request, pulled = _request({"content-type": "multipart/form-data; boundary=b", "content-length": "99999"},
                               iter([b"never read"]))
    with pytest.raises(UploadError) as info:
        asyncio.run(read_form(request, 1000))
    assert info.value.code == "too_large" and pulled[0] == 0


class DiskUsed(Exception):
    pass


def test_nothing_is_written_to_disk(monkeypatch):
    def disk(*_a, **_k):
        raise DiskUsed
    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, disk)
    monkeypatch.setattr("starlette.formparsers.SpooledTemporaryFile", disk)
    big = np.random.default_rng(0).bytes(3 << 20)  # over Starlette's 1 MB spooling threshold
    with TestClient(app(8 << 20)) as client:
        r = client.post("/upload", files={"image": ("x.dcm", big)})
        assert r.json()["files"] == {"image": sha256_bytes(big)}
        with pytest.raises(DiskUsed):  # the trap works: Starlette's own parser would have spooled it
            client.post("/starlette", files={"image": ("x.dcm", big)})


@pytest.mark.parametrize("ctype,body,status", [
    ("application/json", b"{}", 415),
    ("multipart/form-data", b"--b\r\n", 400),  # no boundary
    ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nvalue', 400),
    ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n", 400),
    ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % i for i in range(51)), 400),
])
def test_bad_forms_are_refused_plainly(ctype, body, status):
    with TestClient(app(1 << 20)) as client:
        r = client.post("/upload", content=body, headers={"content-type": ctype})
    assert r.status_code == status and r.json()["message"]


# --------------------------------------------------------------------------- DICOM


def test_valid_dicom_decodes_with_the_pipeline(tmp_path):
    data = dicom_bytes(tmp_path, rows=48, cols=64, laterality="R", orientation=("R", "F"))
    out = decode_upload(data, Limits())
    assert (out.kind, out.display.shape, out.display.dtype) == ("dicom", (48, 64), np.uint8)
    assert (out.laterality, out.row_direction, out.sha256) == ("R", "R", sha256_bytes(data))
    assert out.display.max() > out.display.min()
    header = check_dicom_header(data, Limits())
    assert (header.modality, header.rows, header.cols, header.frames, header.laterality) == ("DX", 48, 64, 1, "R")
    assert header.patient_orientation_row == "R"


def test_dicom_without_orientation_or_laterality(tmp_path):
    out = decode_upload(dicom_bytes(tmp_path, laterality="", modality="CR"), Limits())
    assert (out.laterality, out.row_direction) == ("", "L")


def _set(**values):
    def edit(ds):
        for key, value in values.items():
            setattr(ds, key, value)
    return edit


def _big_endian(ds):
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian


@pytest.mark.parametrize("kw,code", [
    ({"modality": "MR"}, "unsupported_dicom"),
    ({"edit": _set(Modality="ZZMARKER")}, "unsupported_dicom"),
    ({"edit": _set(Rows=60000)}, "image_too_large"),  # declares 7 GB of pixels, holds 8 kB
    ({"edit": _set(Rows=10000, Columns=10000)}, "image_too_large"),
    ({"edit": _set(Columns=0)}, "malformed_dicom"),
    ({"edit": _set(NumberOfFrames=2)}, "unsupported_dicom"),
    ({"edit": _set(BitsStored=17)}, "unsupported_dicom"),
    ({"edit": _set(BitsAllocated=32, BitsStored=32)}, "unsupported_dicom"),
    ({"edit": _set(SamplesPerPixel=3)}, "unsupported_dicom"),
    ({"edit": _set(PhotometricInterpretation="RGB")}, "unsupported_dicom"),
    ({"edit": _big_endian}, "unsupported_dicom"),
    ({"drop": ("Rows",)}, "malformed_dicom"),
    ({"drop": ("PixelData",)}, "malformed_dicom"),
])
def test_dicom_header_refusals_come_before_decoding(tmp_path, no_decoding, kw, code):
    data = dicom_bytes(tmp_path, **kw)
    err = refusal(decode_upload, data, Limits())
    assert (err.status, err.code) == (422, code)


@pytest.mark.parametrize("cut", [140, 300, 500])
def test_truncated_header_is_malformed(tmp_path, no_decoding, cut):
    err = refusal(decode_upload, dicom_bytes(tmp_path)[:cut], Limits())
    assert (err.status, err.code) == (422, "malformed_dicom")


def test_truncated_pixels_are_malformed(tmp_path):
    err = refusal(decode_upload, dicom_bytes(tmp_path)[:-100], Limits())
    assert (err.status, err.code) == (422, "malformed_dicom")


def _deflated(ds):
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian


def test_deflated_dicom_decodes_and_a_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    assert decode_upload(dicom_bytes(tmp_path, edit=_deflated), Limits()).display.shape == (64, 64)
    bomb = dicom_bytes(tmp_path, edit=_deflated, rows=3000, cols=3000, pixels=np.zeros((3000, 3000), np.uint16))
    assert len(bomb) < 100_000  # 18 MB once inflated

    def boom(*_a, **_k):
        raise AssertionError("inflated by pydicom")
    monkeypatch.setattr(dicom_checks.pydicom, "dcmread", boom)
    err = refusal(decode_upload, bomb, Limits(max_pixels=64 * 64))
    assert err.code == "image_too_large"


def _jpeg_dicom(tmp_path, sof_rows: int | None = None) -> bytes:
    pixels = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    frame = bytearray(image_bytes(pixels, "JPEG"))
    if sof_rows is not None:  # the codestream claims more rows than the header
        at = frame.find(b"\xff\xc0")
        frame[at + 5 : at + 7] = struct.pack(">H", sof_rows)

    def edit(ds):
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = encapsulate([bytes(frame)])
        ds["PixelData"].VR = "OB"
    return dicom_bytes(tmp_path, edit=edit, rows=48, cols=64)


def test_compressed_dicom_whose_codestream_disagrees_with_its_header_is_refused(tmp_path):
    assert decode_upload(_jpeg_dicom(tmp_path), Limits()).display.shape == (48, 64)
    err = refusal(decode_upload, _jpeg_dicom(tmp_path, sof_rows=60000), Limits())
    assert (err.code, err.message) == ("malformed_dicom", "The compressed image's size differs from its header.")


def test_jpeg2000_codestream_size_is_read(tmp_path):
    from osteo_service.codestream import codestream_size

    data = dicom_bytes(tmp_path, edit=lambda ds: ds.compress(JPEG2000Lossless), rows=40, cols=56)
    ds = pydicom.dcmread(io.BytesIO(data))
    frame = next(dicom_checks.generate_frames(ds.PixelData, number_of_frames=1))
    assert codestream_size(frame) == (40, 56)
    assert decode_upload(data, Limits()).display.shape == (40, 56)


# --------------------------------------------------------------------------- PNG / JPEG


@pytest.mark.parametrize("size,limits", [
    ((20000, 20000), Limits()),  # Pillow's own bomb error, raised on open
    ((9000, 9000), Limits()),  # under Pillow's threshold, over ours
    ((10000, 10000), Limits(max_pixels=10**9, max_side=20000)),  # Pillow's bomb warning, made an error
    ((20000, 10), Limits()),  # one side too long
])
def test_png_pixel_bomb_is_refused_before_loading(no_decoding, size, limits):
    err = refusal(decode_upload, png_header_only(*size), limits)
    assert (err.status, err.code) == (422, "image_too_large")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_refused(fmt):
    data = image_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), fmt)
    err = refusal(decode_upload, data[: len(data) // 2], Limits())
    assert (err.status, err.code) == (422, "malformed_image")


def test_images_decode_to_grey_uint8():
    grey = np.tile(np.arange(80, dtype=np.uint8) * 3, (30, 1))
    out = decode_upload(image_bytes(grey), Limits())
    assert (out.kind, out.laterality, out.row_direction) == ("png", "", "L")
    np.testing.assert_array_equal(out.display, grey)
    rgb = decode_upload(image_bytes(np.stack([grey] * 3, axis=-1)), Limits()).display
    assert rgb.shape == (30, 80) and rgb.dtype == np.uint8
    jpeg = decode_upload(image_bytes(grey, "JPEG"), Limits())
    assert jpeg.kind == "jpeg" and jpeg.display.shape == (30, 80)


def test_sixteen_bit_png_is_stretched_to_eight_bits():
    codes = np.tile(np.linspace(500, 4000, 50).astype(np.uint16), (20, 1))  # a 12-bit radiograph
    data = image_bytes(codes)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = decode_upload(data, Limits()).display
    assert out.dtype == np.uint8 and out.shape == (20, 50)
    assert (out.min(), out.max()) == (0, 255) and (np.diff(out[0].astype(int)) >= 0).all()


def test_an_image_too_small_to_be_a_radiograph_is_refused_from_its_header():
    """Found by the schema run: a 1x1 PNG reached the localiser, which cannot split it into views."""
    from osteo_service.image_decoding import decode_upload
    from osteo_service.limits import Limits, UploadError

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    with pytest.raises(UploadError) as err:
        decode_upload(buf.getvalue(), Limits())
    assert err.value.status == 422 and err.value.code == "image_too_small"
