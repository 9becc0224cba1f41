"""The answering version's test-year figures (issue 23 item 5): its AUC with the interval, osteoporosis recall and
specificity with their n, in the API's JSON and on the page in both languages; a version without figures says so,
a figure not recorded is a dash (an interval not recorded is left out)."""

from __future__ import annotations

import pytest

from tests.osteo_service.conftest import MODEL_URI, ROI_URI, Clock, FakeRegistry, hip_png

FIGURES = {"year": 2022, "n": 57, "auc": 0.9134, "auc_ci_low": 0.8412, "auc_ci_high": 0.9701, "recall": 0.9,
           "positives": 20, "specificity": 0.7567, "negatives": 37}


def _client(tmp_path, figures):
    from fastapi.testclient import TestClient

    from osteo.settings import Settings
    from osteo_service.app import create_app
    from osteo_service.models import ModelCache

    fake = FakeRegistry(versions={MODEL_URI: ("osteo-classifier", "3"), ROI_URI: ("osteo-roi", "7")},
                        test_year=figures)
    cache = ModelCache(fake.registry(), MODEL_URI, ROI_URI, every_s=60, clock=Clock())
    return TestClient(create_app(Settings(home=tmp_path), models=cache, audit=None)), fake, cache


def test_the_api_carries_the_versions_test_year_with_n(tmp_path):
    client, *_ = _client(tmp_path, FIGURES)
    with client:
        answer = client.post("/api/v1/predict", files={"image": ("hip.png", hip_png(220), "image/png")})
        health = client.get("/api/v1/health").json()
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"]["test_year"] == FIGURES
    assert health["model"]["test_year"] == FIGURES
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"auc", "auc_ci_low", "recall", "positives", "specificity", "negatives", "n"} <= set(
        schema["TestYearOut"]["properties"])


@pytest.mark.parametrize(("lang", "words"), [
    ("en", ["Test year 2022: AUC 0.913 (95% CI 0.84–0.97)", "osteoporosis recall 90.0% (n = 20)",
            "specificity 75.7% (n = 37)", "57 images"]),
    ("zh-TW", ["測試年度 2022：AUC 0.913（95% 信賴區間 0.84–0.97）", "骨質疏鬆敏感度 90.0%（n = 20）",
               "特異度 75.7%（n = 37）", "共 57 張影像"]),
])
def test_the_page_and_its_printout_show_them_in_both_languages(tmp_path, lang, words):
    import re

    client, *_ = _client(tmp_path, FIGURES)
    with client:
        index = client.get(f"/?lang={lang}")
        token = re.search(r'name="csrf_token" value="([^"]+)"', index.text).group(1)
        result = client.post(f"/predict?lang={lang}", files={"image": ("hip.png", hip_png(220), "image/png")},
                             data={"csrf_token": token})
    assert result.status_code == 200, result.text
    footer = re.search(r'id="model-test">([^<]*)<', index.text).group(1)
    printed = re.search(r'id="result-test">([^<]*)<', result.text).group(1)  # in the result card: it prints
    for text in (footer, printed):
        assert all(w in text for w in words), (text, words)


def test_a_version_without_figures_says_so_and_a_missing_figure_is_a_dash(tmp_path):
    client, *_ = _client(tmp_path, None)
    with client:
        assert client.get("/api/v1/health").json()["model"]["test_year"] is None
        assert "No test-year figures are recorded for this model version." in client.get("/?lang=en").text
        assert "此模型版本沒有測試年度的成績紀錄。" in client.get("/?lang=zh-TW").text
    client, *_ = _client(tmp_path, FIGURES | {"recall": None, "auc_ci_low": None, "auc_ci_high": None})
    with client:
        text = client.get("/?lang=en").text
    assert "Test year 2022: AUC 0.913; osteoporosis recall — (n = 20)" in text
