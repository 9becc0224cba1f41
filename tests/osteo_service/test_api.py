"""The JSON API and the page over fake registries: success, each error as problem details, CSRF,
security headers, the audit row, the reload when an alias moves."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image
from sqlalchemy import select

from db.models import PredictionAudit
from tests.dicom_factory import make_dicom
from tests.osteo_service.conftest import MODEL_URI, hip_png, png_of

PROBLEM = "application/problem+json"


def post(client, data: bytes, name: str = "hip.png", **fields):
    return client.post("/api/v1/predict", files={"image": (name, data, "application/octet-stream")}, data=fields)


def test_predict_png_with_the_localisers_box(service):
    client, *_ = service
    r = post(client, hip_png(220))
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["box_source"] == "model" and j["localiser"] == "osteo-roi/7" and j["side"] in ("L", "R")
    assert j["model"] == {"name": "osteo-classifier", "version": "3", "threshold": 0.5, "runtime": "fake",
                          "trained_on": None, "test_year": None}
    x0, y0, x1, y1 = j["box"]
    assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 120
    assert 0 <= j["probability"] <= 1 and j["label"] == int(j["probability"] >= 0.5) and j["band"]
    heat = Image.open(io.BytesIO(base64.b64decode(j["heatmap_png"])))
    assert heat.format == "PNG" and heat.size[0] > 0
    assert "DEXA" in j["disclaimer"] and len(j["input_sha256"]) == 64


def test_a_user_box_wins_and_a_crop_is_scored_whole(service):
    client, *_ = service
    bright = np.full((100, 100), 30, np.uint8)
    bright[10:40, 10:40] = 250
    user = post(client, png_of(bright), box="10,10,40,40", side="L").json()
    assert user["box"] == [10, 10, 40, 40] and user["box_source"] == "user" and user["side"] == "L"
    assert user["label"] == 1 and user["band"] == "high" and user["localiser"] is None
    whole = post(client, png_of(bright), cropped="true").json()
    assert whole["box"] is None and whole["box_source"] == "image" and whole["probability"] < user["probability"]


def test_dicom_is_rendered_and_laterality_read_from_its_header(service, tmp_path):
    client, *_ = service
    px = np.full((96, 80), 500, np.uint16)
    px[30:70, 20:55] = 3000
    path = tmp_path / "hip.dcm"
    make_dicom(path, rows=96, cols=80, laterality="R", pixels=px, name="WANG^XIAO MING")
    r = post(client, path.read_bytes(), name="hip.dcm")
    assert r.status_code == 200, r.text
    assert r.json()["side"] == "R" and "WANG" not in r.text


def problem_of(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    j = r.json()
    assert j["status"] == status and j["code"] == code and j["title"] and j["detail"] and j["type"].endswith(code)
    return j


def test_errors_are_problem_details(service):
    client, *_ = service
    problem_of(post(client, b"%PDF-1.4 not an image", name="scan.png"), 415, "unsupported_type")
    problem_of(post(client, hip_png(), box="0,0,500,500"), 422, "box_outside_image")
    problem_of(post(client, hip_png(), box="1,2,3"), 422, "bad_box")
    problem_of(post(client, b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage"), 422, "malformed_dicom")
    problem_of(client.post("/api/v1/predict", data={"box": "1,2,3,4"}, files={"other": ("a", b"x")}), 422, "no_image")
    problem_of(client.get("/api/v1/nothing"), 404, "not_found")


def test_too_large_is_refused_while_reading(service):
    client, settings, *_ = service
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * int(settings.serve_upload_limit_mb * 1024 * 1024 + 10)
    problem_of(post(client, big), 413, "too_large")


def test_a_pixel_bomb_is_refused_before_decoding(service):
    client, *_ = service
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, format="PNG")  # 144 Mpx in a few kB
    j = problem_of(post(client, buf.getvalue()), 422, "image_too_large")
    assert "12000" not in j["detail"] or "pixels" in j["detail"]


def test_not_located_and_no_localiser(service, fake_registry):
    client, *_ = service
    fake_registry.locator.confidence = 0.3
    problem_of(post(client, hip_png()), 422, "not_located")
    assert post(client, hip_png(), box="10,10,60,60").status_code == 200  # a drawn box still works


def test_audit_rows_hold_no_patient_data(service, tmp_path):
    client, _settings, audit, *_ = service
    path = tmp_path / "p.dcm"
    make_dicom(path, rows=64, cols=64, name="LIN^SECRET", patient_id="Q99887766")
    data = path.read_bytes()
    assert post(client, data, name="LIN_SECRET_Q99887766.dcm").status_code == 200
    with audit() as s:
        rows = s.scalars(select(PredictionAudit)).all()
    assert len(rows) == 1
    row = rows[0]
    import hashlib

    assert row.input_sha256 == hashlib.sha256(data).hexdigest() and row.channel == "api"
    assert row.model_version == "3" and row.box_source == "model" and row.localiser == "osteo-roi/7"
    flat = " ".join(str(getattr(row, c.name)) for c in PredictionAudit.__table__.columns)
    assert "SECRET" not in flat and "Q99887766" not in flat


def test_health_and_reload_when_the_alias_moves(service, fake_registry, clock):
    client, *_ = service
    assert client.get("/api/v1/health").json()["model"]["version"] == "3"
    fake_registry.versions[MODEL_URI] = ("osteo-classifier", "4")
    clock.now += 30  # checked at most once a minute
    assert client.get("/api/v1/health").json()["model"]["version"] == "3"
    clock.now += 31
    assert client.get("/api/v1/health").json()["model"]["version"] == "4"
    assert post(client, hip_png()).json()["model"]["version"] == "4"
    assert fake_registry.loads == [("osteo-classifier", "3"), ("osteo-classifier", "4")]  # loaded once each
    fake_registry.fail = True  # a registry outage keeps the loaded model
    clock.now += 61
    assert client.get("/api/v1/health").json()["model"]["version"] == "4"
    fake_registry.fail = False
    fake_registry.versions[MODEL_URI] = None  # alias removed
    clock.now += 61
    h = client.get("/api/v1/health").json()
    assert h["status"] == "no_model" and h["model"] is None
    problem_of(post(client, hip_png()), 503, "no_model")
    page = client.get("/")
    assert page.status_code == 503 and "make demo" in page.text


def test_security_headers(service):
    client, *_ = service
    for r in (client.get("/"), client.get("/api/v1/health"), post(client, b"junk")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["referrer-policy"] == "no-referrer"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_page_predict_needs_the_csrf_token(service):
    client, *_ = service
    index = client.get("/")
    assert index.status_code == 200 and 'lang="zh-TW"' in index.text
    token = csrf_of(index.text)
    files = {"image": ("hip.png", hip_png(230), "image/png")}
    missing = client.post("/predict", files=files, data={"age": "70", "weight": "52"})
    assert missing.status_code == 403 and "表單已過期" in missing.text
    forged = client.post("/predict", files=files, data={"csrf_token": token + "x"})
    assert forged.status_code == 403
    ok = client.post("/predict", files=files, data={"csrf_token": token, "age": "70", "weight": "52",
                                                    "iof_smoker": "yes", "reference": "bed 12"})
    assert ok.status_code == 200, ok.text
    assert 'id="warning"' in ok.text and "DEXA" in ok.text and 'id="heatmap"' in ok.text
    assert "OSTA" in ok.text and 'id="osta-result"' in ok.text and "bed 12" in ok.text
    assert "osteo-classifier" in ok.text and "版本 3" in ok.text


def test_language_switch_and_every_page_renders(service):
    client, *_ = service
    r = client.get("/lang/en?next=/manual", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/manual"
    assert client.get("/lang/en?next=//evil.example", follow_redirects=False).headers["location"] == "/"
    for path in ("/", "/self-check", "/manual"):
        en = client.get(path + "?lang=en")
        assert en.status_code == 200 and 'lang="en"' in en.text and "cannot rule osteoporosis out" in en.text
        zh = client.get(path + "?lang=zh-TW")
        assert 'lang="zh-TW"' in zh.text and "無法排除骨質疏鬆" in zh.text
    client.cookies.set("osteo_lang", "en")
    assert 'lang="en"' in client.get("/").text


def test_self_check_page(service):
    client, *_ = service
    token = csrf_of(client.get("/self-check").text)
    r = client.post("/self-check?lang=en", data={"csrf_token": token, "age": "75", "weight": "40",
                                                 "iof_parent_stooped": "no"})
    assert r.status_code == 200 and "High risk" in r.text and "No risk factor" in r.text


def test_openapi_describes_the_api(service):
    client, *_ = service
    spec = client.get("/openapi.json").json()
    assert {"/api/v1/predict", "/api/v1/health", "/api/v1/locate"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/v1/predict"]["post"]["requestBody"]["content"]
    assert "Problem" in spec["components"]["schemas"]


def test_uploads_are_not_stored_unless_configured(service, tmp_path):
    client, settings, *_ = service
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert post(client, hip_png()).status_code == 200
    after = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert not [p for p in after - before if not p.name.startswith("osteo.sqlite")]


def test_the_page_says_each_error_in_its_language(service):
    client, *_ = service
    token = csrf_of(client.get("/").text)
    r = client.post("/predict", files={"image": ("hip.png", b"plain text", "image/png")}, data={"csrf_token": token})
    assert r.status_code == 415 and "這不是 DICOM、PNG 或 JPEG 檔案" in r.text
    r = client.post("/predict?lang=en", files={"image": ("hip.png", hip_png(), "image/png")},
                    data={"csrf_token": token, "box": "0,0,999,999"})
    assert r.status_code == 422 and "The box lies outside the image" in r.text


def test_every_error_code_has_words_on_the_page():
    """Each code the uploads and the screening raise (status, "code", ...) is translated."""
    from pathlib import Path

    from osteo_service.i18n import TEXT

    root = Path(__file__).resolve().parents[2] / "osteo_service"
    source = "".join(p.read_text() for p in sorted(root.rglob("*.py")))  # every module, however split
    codes = set(re.findall(r'\(\s*4\d\d,\s*"([a-z_]+)"', source))
    assert {"too_large", "unsupported_type", "box_outside_image", "not_located"} <= codes
    assert not sorted(c for c in codes if f"err_{c}" not in TEXT)
