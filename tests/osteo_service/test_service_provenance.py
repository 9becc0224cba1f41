"""A model says what it learned from: the banner on every page and the fields of the API follow the
`trained_on` tags of the served versions (osteo/etl/synthetic.py). Fake registries, real app."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from osteo.etl.synthetic import DEMO_NOTICE, DEMO_NOTICE_ZH
from osteo_service.models import ModelCache
from tests.osteo_service.conftest import MODEL_URI, ROI_URI, FakeRegistry, hip_png, png_of


@contextmanager
def serving(tmp_path, classifier: str | None, localiser: str | None):
    """A service whose classifier version is tagged `classifier` and whose localiser `localiser`
    (None: the version has no tag)."""
    from fastapi.testclient import TestClient

    from osteo.settings import Settings
    from osteo_service.app import create_app

    fake = FakeRegistry(versions={MODEL_URI: ("osteo-classifier", "3"), ROI_URI: ("osteo-roi", "7")},
                        trained_on=classifier)
    fake.locator.trained_on = localiser
    app = create_app(Settings(home=tmp_path, serve_upload_limit_mb=1.0),
                     models=ModelCache(fake.registry(), MODEL_URI, ROI_URI), audit=None)
    with TestClient(app) as client:
        yield client


def predict(client, data: bytes, **fields) -> dict:
    r = client.post("/api/v1/predict", files={"image": ("hip.png", data, "image/png")}, data=fields)
    assert r.status_code == 200, r.text
    return r.json()


def user_box_png() -> bytes:
    img = np.full((100, 100), 30, np.uint8)
    img[10:40, 10:40] = 250
    return png_of(img)


def test_a_synthetic_model_shows_the_banner_and_every_answer_says_so(tmp_path):
    with serving(tmp_path, "synthetic", "synthetic") as client:
        for path in ("/", "/self-check", "/manual"):
            en, zh = client.get(path + "?lang=en").text, client.get(path + "?lang=zh-TW").text
            assert 'id="demo-banner"' in en and DEMO_NOTICE in en and DEMO_NOTICE_ZH in zh
        for answer in (predict(client, hip_png(220)), predict(client, user_box_png(), box="10,10,40,40"),
                       predict(client, user_box_png(), cropped="true")):
            assert answer["synthetic_training"] is True and answer["notice"] == DEMO_NOTICE
            assert answer["model"]["trained_on"] == "synthetic"
        health = client.get("/api/v1/health").json()
        assert health["synthetic_training"] is True and health["notice"] == DEMO_NOTICE
        located = client.post("/api/v1/locate", files={"image": ("hip.png", hip_png(), "image/png")}).json()
        assert located["localiser_trained_on"] == "synthetic" and located["synthetic_training"] is True
        token = client.get("/?lang=en").text.split('name="csrf_token" value="')[1].split('"')[0]
        result = client.post("/predict?lang=en", files={"image": ("hip.png", hip_png(220), "image/png")},
                             data={"csrf_token": token})
        assert result.status_code == 200 and 'id="result"' in result.text and DEMO_NOTICE in result.text


def test_real_models_show_no_banner_and_say_false(tmp_path):
    with serving(tmp_path, "real", "real") as client:
        for lang in ("en", "zh-TW"):
            page = client.get(f"/?lang={lang}").text
            assert 'id="demo-banner"' not in page and DEMO_NOTICE not in page and DEMO_NOTICE_ZH not in page
        answer = predict(client, hip_png(220))
        assert answer["synthetic_training"] is False and answer["notice"] is None
        assert answer["model"]["trained_on"] == "real"
        assert client.get("/api/v1/health").json()["synthetic_training"] is False


def test_the_localiser_counts_only_when_it_found_the_box(tmp_path):
    """A real classifier with a synthetic-trained localiser: the page warns; an answer on the localiser's
    box rests on synthetic images, one on the user's own box does not."""
    with serving(tmp_path, "real", "synthetic") as client:
        assert DEMO_NOTICE in client.get("/?lang=en").text
        assert predict(client, hip_png(220))["synthetic_training"] is True
        own = predict(client, user_box_png(), box="10,10,40,40")
        assert own["box_source"] == "user" and own["synthetic_training"] is False and own["notice"] is None


def test_a_model_that_does_not_say_is_unknown_never_real(tmp_path):
    with serving(tmp_path, None, None) as client:
        assert 'id="demo-banner"' not in client.get("/?lang=en").text
        answer = predict(client, hip_png(220))
        assert answer["synthetic_training"] is None and answer["model"]["trained_on"] is None
        assert client.get("/api/v1/health").json()["synthetic_training"] is None
    with serving(tmp_path, "real", None) as client:  # the localiser that found the box does not say
        assert predict(client, hip_png(220))["synthetic_training"] is None
        assert predict(client, user_box_png(), box="10,10,40,40")["synthetic_training"] is False
