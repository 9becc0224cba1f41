"""The registry's champion guarded (issue 26), on an MLflow server started as production runs it
(tests/mlflow_server.py: MLflow's basic-auth app with osteo's page, everyone READ, the promoter MANAGE on the
registered models).

osteo's promotion (its client from its settings, set_alias as register_best calls it) runs as the promoter and
moves `champion` (the whole register_best as the promoter: tests/flows/test_production_topology.py); an ordinary
MLflow user reads the registry but is refused (403) when moving or deleting the alias, through MLflow's client and
through osteo's; nobody signed in is refused (401). Then Chromium opens the links osteo prints: the runs table,
never MLflow's GenAI overview."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.mlflow_server import ADMIN, PROMOTER, as_user, start_guarded_mlflow

ENGINEER, ENGINEER_PASSWORD = "lin", "an-ordinary-password-1"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    """The server, an ordinary engineer's account, and a training run whose version osteo registers and promotes as
    the promoter, through osteo's settings and osteo's client (register_best itself runs as the promoter in
    tests/flows/test_production_topology.py, where the night trains; here no model is trained)."""
    from mlflow.server import get_app_client

    from osteo_mlflow.client import client, experiment_id, set_alias
    from tests.helpers import isolated_settings

    root = tmp_path_factory.mktemp("guarded")
    with start_guarded_mlflow(root / "mlflow") as server, as_user(None, None), isolated_settings(
            root / "home", MLFLOW_TRACKING_URI=server.url, MLFLOW_TRACKING_USERNAME=PROMOTER,
            MLFLOW_TRACKING_PASSWORD=server.promoter_password) as settings:
        with as_user(ADMIN, server.admin_password):
            get_app_client("basic-auth", tracking_uri=server.url).create_user(ENGINEER, ENGINEER_PASSWORD)
        c = client(settings)
        run = c.create_run(experiment_id(c, settings), run_name="toy-training", tags={"preset": "demo"})
        c.log_param(run.info.run_id, "arch", "resnet18")
        c.log_metric(run.info.run_id, "test_auc", 0.9)
        c.set_terminated(run.info.run_id)
        version = c.create_model_version(settings.registered_model, f"{run.info.artifact_uri}/model",
                                         run_id=run.info.run_id)
        set_alias(c, settings.registered_model, "challenger", version.version)
        set_alias(c, settings.registered_model, "champion", version.version)  # as register_best promotes
        yield {"server": server, "version": str(version.version), "run_id": run.info.run_id, "settings": settings}


def _alias_request(url: str, user: str | None, password: str | None, method: str = "POST") -> int:
    """MLflow's REST call that moves (POST) or deletes (DELETE) `champion`, as `user`; the HTTP status."""
    body = {"name": "osteo-classifier", "alias": "champion", "version": "1"}
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/registered-models/alias", method=method,
                                 data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    if user is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_osteo_promotes_as_the_promoter_and_never_shows_its_password(promoted):
    from mlflow import MlflowClient

    server, settings = promoted["server"], promoted["settings"]
    assert promoted["version"] == "1"
    with as_user(ENGINEER, ENGINEER_PASSWORD):  # everyone reads the registry
        c = MlflowClient(server.url, server.url)
        assert c.get_model_version_by_alias("osteo-classifier", "champion").version == "1"
        run = c.get_run(promoted["run_id"])
    # the password is osteo's setting, and nowhere in what osteo shows or logs
    assert settings.mlflow_tracking_username == PROMOTER
    assert settings.mlflow_tracking_password.get_secret_value() == server.promoter_password
    shown = [repr(settings), str(settings.model_dump()), json.dumps(run.data.params), json.dumps(run.data.tags),
             server.log.read_text()]
    assert not [text for text in shown if server.promoter_password in text]
    assert _alias_request(server.url, PROMOTER, server.promoter_password) == 200  # the promoter may


def test_an_ordinary_user_cannot_move_or_delete_champion(promoted):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from osteo.errors import UserError
    from osteo_mlflow.client import set_alias

    url = promoted["server"].url
    assert _alias_request(url, ENGINEER, ENGINEER_PASSWORD) == 403
    assert _alias_request(url, ENGINEER, ENGINEER_PASSWORD, method="DELETE") == 403
    assert _alias_request(url, None, None) == 401
    assert _alias_request(url, ENGINEER, "a-wrong-password-9") == 401
    with as_user(ENGINEER, ENGINEER_PASSWORD):
        c = MlflowClient(url, url)
        with pytest.raises(MlflowException) as refused:
            c.set_registered_model_alias("osteo-classifier", "champion", "1")
        assert refused.value.error_code == "PERMISSION_DENIED"
        with pytest.raises(UserError) as osteo_refused:  # osteo's own call says who was refused, and why
            set_alias(c, "osteo-classifier", "champion", "1")
        assert osteo_refused.value.reason == "registry_refused" and "lin" in osteo_refused.value.detail
        assert "MANAGE" in osteo_refused.value.detail and ENGINEER_PASSWORD not in osteo_refused.value.detail
        assert c.get_model_version_by_alias("osteo-classifier", "champion").version == "1"


@pytest.mark.slow
def test_the_links_osteo_prints_open_on_the_runs_table(promoted):
    """Chromium (Debian's, driven by Playwright) signed in as the engineer: the runs-table link of a training, a bare
    experiment link (osteo's page makes model training the view a new browser lands on), and the version page."""
    from mlflow import MlflowClient
    from playwright.sync_api import HttpCredentials, expect, sync_playwright

    from osteo_mlflow.registry import experiment_runs_table, links

    server, run_id = promoted["server"], promoted["run_id"]
    with as_user(ENGINEER, ENGINEER_PASSWORD):
        experiment = MlflowClient(server.url).get_run(run_id).info.experiment_id
        # what `osteo ui` prints: the classifier experiment's runs table, nothing before a training
        ui_link = experiment_runs_table(server.url, promoted["settings"].mlflow_experiment)
        assert experiment_runs_table(server.url, "never-trained") is None
    printed = links(server.url, experiment, run_id, "osteo-classifier", "1")  # the training's Prefect artifacts
    assert printed["runs"] == ui_link and printed["runs"].startswith(f"{server.url}/#/experiments/{experiment}/runs")
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it (make system-packages)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            credentials: HttpCredentials = {"username": ENGINEER, "password": ENGINEER_PASSWORD}
            page = browser.new_context(http_credentials=credentials).new_page()  # a browser new to MLflow
            for url in (f"{server.url}/#/experiments/{experiment}", printed["runs"]):
                page.goto(url)
                expect(page.get_by_text("1 matching run")).to_be_visible(timeout=60_000)  # the runs table
                assert f"#/experiments/{experiment}/runs" in page.url and "workflowType=machine_learning" in page.url
            # a browser that chose MLflow's GenAI view keeps its choice (a bare experiment link opens elsewhere: the
            # landing above was osteo's page's doing), and the printed link still shows the runs table
            genai = browser.new_context(http_credentials=credentials)
            genai.add_init_script("localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('genai'))")
            page = genai.new_page()
            page.goto(f"{server.url}/#/experiments/{experiment}")
            page.wait_for_url(lambda u: f"/experiments/{experiment}/" in u and "/runs" not in u, timeout=60_000)
            page = genai.new_page()
            page.goto(printed["runs"])
            expect(page.get_by_text("1 matching run")).to_be_visible(timeout=60_000)
            page.goto(printed["model_version"])
            expect(page.get_by_text("Version 1").first).to_be_visible(timeout=60_000)
        finally:
            browser.close()


def test_the_settings_user_is_the_one_mlflow_sends(monkeypatch):
    """MLflow's client reads its user from the environment only: osteo's client puts the settings' pair there, and
    the settings never show the password."""
    from mlflow.utils.credentials import get_default_host_creds
    from pydantic import SecretStr

    from osteo.settings import Settings
    from osteo_mlflow.client import client
    from osteo_mlflow.serving import registry_client

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings(mlflow_tracking_uri="http://127.0.0.1:9", mlflow_tracking_username=PROMOTER,
                        mlflow_tracking_password=SecretStr("s3cret-of-the-promoter"))
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
    for make in (client, registry_client):
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        make(settings)
        creds = get_default_host_creds("http://127.0.0.1:9")
        assert (creds.username, creds.password) == (PROMOTER, "s3cret-of-the-promoter")
