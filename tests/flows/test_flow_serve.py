"""The screening service after the demo (the session's demo_run, as `make demo` leaves the stores):
it answers with the registry's champion and localiser, through ONNX Runtime with the same
probability as the registered pyfunc, writes an audit row that `osteo lineage predictions` shows,
and follows the champion alias to a new version."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def served(demo_run):
    from fastapi.testclient import TestClient
    from mlflow.tracking import MlflowClient

    from osteo.settings import get_settings
    from osteo_service.app import create_app

    s = get_settings().model_copy(update={"serve_reload_seconds": 0.0})  # every request asks the registry
    with TestClient(create_app(s)) as client:
        yield client, s, MlflowClient(s.resolved_tracking_uri(), s.resolved_tracking_uri()), demo_run


def a_hip(cohort: Path, view: str = "hip") -> Path:
    row = next(r for r in csv.DictReader((cohort / "truth.csv").open())
               if r["view"] == view and r["expected_export"] == "1")
    return cohort / row["file"]


def located(client, cohort: Path, view: str, sides: int, tries: int = 12) -> tuple[bytes, dict]:
    """The first film of the view (of the first ``tries``) that the localiser boxes on ``sides`` sides: the
    localiser refuses films it is unsure of (its recall is measured by the localiser's own tests), the
    service must answer the others with the champion."""
    rows = [r for r in csv.DictReader((cohort / "truth.csv").open())
            if r["view"] == view and r["expected_export"] == "1"]
    for r in rows[:tries]:
        data = (cohort / r["file"]).read_bytes()
        resp = client.post("/api/v1/predict", files={"image": ("x.dcm", data)})
        j = resp.json() if resp.status_code == 200 else {}
        if j.get("box_source") == "model" and (sides == 1 or len({x["side"] for x in j.get("sides") or []}) == 2):
            return data, j
    raise AssertionError(f"the localiser boxed none of the first {tries} {view} films")


def test_the_service_answers_with_the_champion_through_onnx(served):
    client, s, mlc, demo = served
    champion = mlc.get_model_version_by_alias(s.registered_model, "champion")
    roi = mlc.get_model_version_by_alias(s.roi_model, "champion")
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["model"]["version"] == str(champion.version)
    assert health["model"]["runtime"] == "onnxruntime" and champion.tags.get("onnx") == "true"
    assert health["localiser"] == f"{s.roi_model}/{roi.version}"
    from osteo.etl.synthetic import DEMO_NOTICE

    # the demo's models learned from synthetic films: the health, every answer and every page say so
    assert health["model"]["trained_on"] == "synthetic" and health["synthetic_training"] is True
    assert health["notice"] == DEMO_NOTICE
    page = client.get("/?lang=en").text
    assert 'id="demo-banner"' in page and DEMO_NOTICE in page
    data, j = located(client, demo["cohort"], "hip", 1)
    assert j["box_source"] == "model" and j["localiser"] == health["localiser"] and j["model"]["version"] == \
        str(champion.version)
    assert j["synthetic_training"] is True and j["notice"] == DEMO_NOTICE
    # the version's test-year figures, from its registered training run, with their n (issue 23)
    train = demo["train"]
    figures = j["model"]["test_year"]
    assert figures == health["model"]["test_year"] and figures["year"] == s.test_year
    assert figures["auc"] == pytest.approx(train["test_auc"]) and figures["n"] == train["n_test"]
    assert figures["auc_ci_low"] == pytest.approx(train["test_auc_ci"][0]) and figures["auc_ci_low"] > 0.5
    assert figures["recall"] == pytest.approx(train["test_recall"]) and figures["positives"] > 0
    assert figures["specificity"] == pytest.approx(train["test_specificity"]) and figures["negatives"] > 0
    assert figures["positives"] + figures["negatives"] == figures["n"]
    assert f"AUC {train['test_auc']:.3f}" in page and f"(n = {figures['positives']})" in page
    # the registered pyfunc scores the same radiograph the same way (same crop, same weights)
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(s.resolved_tracking_uri())
    pyfunc = mlflow.pyfunc.load_model(f"models:/{s.registered_model}/{champion.version}")
    row = pyfunc.predict(pd.DataFrame({"image": [data]}), params={"heatmap": False}).iloc[0]
    assert row["probability"] == pytest.approx(j["probability"], abs=1e-5) and json.loads(row["box"]) == j["box"]


def test_a_pelvis_is_scored_on_both_sides(served):
    client, _s, _mlc, demo = served
    _, j = located(client, demo["cohort"], "pelvis", 2)
    assert j["box_source"] == "model" and {x["side"] for x in j["sides"]} == {"L", "R"}
    assert j["probability"] == max(x["probability"] for x in j["sides"])


def test_every_answer_is_audited_and_shown_by_lineage(served, capsys):
    client, s, _mlc, demo = served
    data = a_hip(demo["cohort"]).read_bytes()
    j = client.post("/api/v1/predict", files={"image": ("x.dcm", data)}, data={"box": "10,10,60,60"}).json()
    from osteo_cli.main import main

    assert main(["lineage", "predictions", "--json", "--last", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    top = out["predictions"][0]
    assert top["input_sha256"] == j["input_sha256"] and top["box"] == [10, 10, 60, 60] and top["box_source"] == "user"
    assert top["model"] == f"{s.registered_model}/{j['model']['version']}"


def test_the_service_follows_the_champion_alias(served):
    """A registered model of its own (the champion's files as versions 1 and 2), so that the demo's
    registry keeps its version numbers for the other tests."""
    from fastapi.testclient import TestClient

    from osteo_service.app import create_app

    _client, s, mlc, _demo = served
    champion = mlc.get_model_version_by_alias(s.registered_model, "champion")
    name = "osteo-classifier-alias-check"
    mlc.create_registered_model(name)
    first, second = (mlc.create_model_version(name, champion.source, run_id=champion.run_id,
                                              tags={"onnx": champion.tags.get("onnx", "")}) for _ in range(2))
    mlc.set_registered_model_alias(name, "champion", first.version)
    own = s.model_copy(update={"serve_model": f"models:/{name}@champion"})
    with TestClient(create_app(own)) as client:
        assert client.get("/api/v1/health").json()["model"]["version"] == str(first.version)
        mlc.set_registered_model_alias(name, "champion", second.version)
        assert client.get("/api/v1/health").json()["model"]["version"] == str(second.version)
