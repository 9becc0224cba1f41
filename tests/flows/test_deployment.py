"""deployment.yaml: offline validation, the nightly training decision, the refresh lock, and a real
deployment on a throw-away Prefect server with a process worker (slow)."""

from __future__ import annotations

import base64
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from osteo.settings import REPO_ROOT
from tests.prefect_server import VENV_BIN, server_env, start_prefect_server, stop, wait_until

DEPLOYMENT_FILE = REPO_ROOT / "deployment.yaml"


def _config() -> dict:
    return yaml.safe_load(DEPLOYMENT_FILE.read_text())


# --- offline validation ------------------------------------------------------------------------

def _allowed_keys():
    """Prefect's own models of prefect.yaml (they ignore unknown keys, so we compare names ourselves)."""
    from prefect.cli.deploy._models import (
        ConcurrencyLimitSpec,
        DeploymentConfig,
        PrefectYamlModel,
        RawScheduleConfig,
        WorkPoolConfig,
    )

    top = {f.alias or name for name, f in PrefectYamlModel.model_fields.items()} | {"definitions"}
    return {
        "top": top,
        "deployment": set(DeploymentConfig.model_fields),
        "work_pool": set(WorkPoolConfig.model_fields),
        "schedule": set(RawScheduleConfig.model_fields),
        "concurrency_limit": set(ConcurrencyLimitSpec.model_fields),
    }


def test_file_parses_with_prefect_model_and_has_no_unknown_keys():
    from prefect.cli.deploy._models import PrefectYamlModel

    raw = _config()
    model = PrefectYamlModel.model_validate(raw)
    assert {d.name for d in model.deployments} == {"nightly-refresh", "train"}
    allowed = _allowed_keys()
    assert set(raw) <= allowed["top"], set(raw) - allowed["top"]
    for dep in raw["deployments"]:
        assert set(dep) <= allowed["deployment"], (dep["name"], set(dep) - allowed["deployment"])
        assert set(dep["work_pool"]) <= allowed["work_pool"]
        assert dep["work_pool"]["name"] == "osteo-process"
        for sched in dep.get("schedules") or []:
            assert set(sched) <= allowed["schedule"], set(sched) - allowed["schedule"]
        limit = dep.get("concurrency_limit")
        if isinstance(limit, dict):
            assert set(limit) <= allowed["concurrency_limit"]


def test_every_entrypoint_loads_and_every_parameter_set_validates():
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    for dep in _config()["deployments"]:
        flow = load_flow_from_entrypoint(dep["entrypoint"])
        schema = parameter_schema(flow.fn).model_dump_for_openapi()
        assert validate(dep.get("parameters") or {}, schema, raise_on_error=True) == []
        for sched in dep.get("schedules") or []:
            assert validate(sched.get("parameters") or {}, schema, raise_on_error=True, ignore_required=True) == []
    # and a bad parameter set is caught the same way (the check above can fail)
    from prefect.utilities.schema_tools.validation import ValidationError

    flow = load_flow_from_entrypoint("flows/nightly.py:nightly_flow")
    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    with pytest.raises(ValidationError):
        validate({"dicom_dir": "/x", "dexa_dir": "/y", "train": "often"}, schema, raise_on_error=True)
    with pytest.raises(ValidationError):
        validate({"dicom_dir": "/x"}, schema, raise_on_error=True)


def test_every_schedule_parses_and_the_nightly_runs_at_two_in_taipei():
    import datetime as dt
    from zoneinfo import ZoneInfo

    from prefect.cli.deploy._models import RawScheduleConfig
    from prefect.client.schemas.schedules import CronSchedule

    seen = 0
    for dep in _config()["deployments"]:
        for sched in dep.get("schedules") or []:
            RawScheduleConfig.model_validate(sched)
            cron = CronSchedule(cron=sched["cron"], timezone=sched.get("timezone"))
            seen += 1
            if dep["name"] == "nightly-refresh":
                assert sched["timezone"] == "Asia/Taipei"
                from cronsim import CronSim

                start = dt.datetime(2024, 3, 9, 12, 0, tzinfo=ZoneInfo(cron.timezone))
                nxt = next(iter(CronSim(cron.cron, start)))
                assert (nxt.hour, nxt.minute, nxt.date()) == (2, 0, dt.date(2024, 3, 10))
    assert seen == 1
    with pytest.raises(ValueError):
        CronSchedule(cron="0 25 * * *", timezone="Asia/Taipei")
    with pytest.raises(ValueError):
        CronSchedule(cron="0 2 * * *", timezone="Asia/Taipeh")


def test_one_nightly_at_a_time_on_the_server():
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    deps = {d["name"]: d for d in _config()["deployments"]}
    limit = deps["nightly-refresh"]["concurrency_limit"]
    assert limit["limit"] == 1
    assert ConcurrencyLimitStrategy(limit["collision_strategy"]) is ConcurrencyLimitStrategy.CANCEL_NEW


# --- the nightly decision ------------------------------------------------------------------------

def test_training_follows_only_a_new_snapshot_digest():
    from osteo.training.decision import decide_training

    assert decide_training("a" * 64, set()).train
    assert decide_training("b" * 64, {"a" * 64}).train
    same = decide_training("a" * 64, {"a" * 64})
    assert not same.train and "did not change" in same.reason
    assert not decide_training(None, set()).train
    assert not decide_training("b" * 64, set(), enabled=False).train
    assert decide_training("a" * 64, {"a" * 64}, force=True).train


def test_nightly_decision_on_an_empty_database(tmp_path):
    from osteo.settings import session_factory
    from osteo.training.decision import TrainingDecision, training_decision
    from tests.helpers import isolated_settings

    with isolated_settings(tmp_path) as settings:
        factory = session_factory(settings, create=True)
        assert training_decision(factory, test_year=2022, folds=5, seed=0) == TrainingDecision(
            False, "no exported, labelled images yet", None)
        off = training_decision(factory, test_year=2022, folds=5, seed=0, enabled=False)
        assert not off.train and "switched off" in off.reason


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    from tests.helpers import synthetic_cohort

    return synthetic_cohort(tmp_path_factory.mktemp("cohort"), patients=20, seed=1)


def test_candidate_digest_is_the_digest_training_records(engine, tmp_path, small_cohort):
    """The nightly decision predicts take_snapshot's digest, and sees it as trained once a run is recorded."""
    from sqlalchemy.orm import sessionmaker

    from osteo.settings import Settings
    from osteo.training.decision import candidate_digest, trained_digests
    from osteo.training.snapshot import record_training_run, take_snapshot
    from tests.helpers import plain_refresh

    factory = sessionmaker(engine, expire_on_commit=False)
    assert candidate_digest(factory, test_year=2022, folds=2, seed=0) is None
    settings = Settings(var_dir=tmp_path / "var", data_dir=tmp_path / "data", pseudonym_key="k" * 32, workers=1)
    plain_refresh(factory, small_cohort, settings)
    predicted = candidate_digest(factory, test_year=2022, folds=2, seed=0)
    snap = take_snapshot(factory, tmp_path / "snapshots", test_year=2022, folds=2, seed=0)
    assert predicted == snap.digest
    assert trained_digests(factory) == set()
    record_training_run(factory, snapshot_id=snap.snapshot_id, run_id="r1", arch="resnet18", preset="demo",
                        model_name="m", model_version="1", test_auc=0.9)
    assert trained_digests(factory) == {predicted}
    assert candidate_digest(factory, test_year=2022, folds=3, seed=0) != predicted


# --- one refresh at a time (ephemeral / CLI runs) ---------------------------------------------------

def test_second_refresh_is_refused_while_one_runs(tmp_path):
    from osteo.ingest.lock import RefreshAlreadyRunning, refresh_lock
    from tests.helpers import isolated_settings

    with isolated_settings(tmp_path) as settings:
        with refresh_lock(settings) as path:
            assert f"pid {os.getpid()}" in path.read_text()
            # another process (a second `osteo refresh`) is refused with a clear message
            probe = subprocess.run(
                [sys.executable, "-c", "from osteo.ingest.lock import refresh_lock\n"
                 "from osteo.settings import get_settings\n"
                 "with refresh_lock(get_settings()): pass"],
                capture_output=True, text=True, env=os.environ.copy(), cwd=REPO_ROOT, timeout=120)
            assert probe.returncode != 0
            assert "another refresh is running" in probe.stderr and f"pid {os.getpid()}" in probe.stderr
            with pytest.raises(RefreshAlreadyRunning, match="another refresh is running"):
                with refresh_lock(settings):
                    pass
        with refresh_lock(settings):  # released: the next night gets it
            pass


def test_lock_dies_with_its_holder(tmp_path):
    """kill -9 of a running refresh leaves no stale lock (the kernel drops a dead process's flock)."""
    import signal

    from osteo.ingest.lock import refresh_lock
    from tests.helpers import isolated_settings

    with isolated_settings(tmp_path) as settings:
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, time\nfrom osteo.ingest.lock import refresh_lock\n"
             "from osteo.settings import get_settings\n"
             "with refresh_lock(get_settings()):\n    print('held', flush=True)\n    time.sleep(600)"],
            stdout=subprocess.PIPE, text=True, env=os.environ.copy(), cwd=REPO_ROOT)
        try:
            assert holder.stdout.readline().strip() == "held"
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
        finally:
            if holder.poll() is None:
                holder.kill()
        with refresh_lock(settings):
            pass


def test_refresh_flow_refuses_while_locked(tmp_path, prefect_harness):
    """The flow itself takes the lock, so `osteo refresh`, the nightly flow and deployments all obey it."""
    from osteo.ingest.lock import RefreshAlreadyRunning, refresh_lock
    from tests.helpers import isolated_settings

    with isolated_settings(tmp_path) as settings:
        from flows.refresh import refresh_flow
        from osteo.ingest.options import RefreshOptions

        (tmp_path / "in").mkdir()
        with refresh_lock(settings):
            with pytest.raises(RefreshAlreadyRunning):
                refresh_flow(options=RefreshOptions(dicom_dir=str(tmp_path / "in"), dexa_dir=str(tmp_path / "in")))
        report = refresh_flow(options=RefreshOptions(dicom_dir=str(tmp_path / "in"), dexa_dir=str(tmp_path / "in")))
        assert report.this_run.files_seen == 0


# --- a real deployment on a throw-away server (slow) ---------------------------------------------


@pytest.mark.slow
def test_deploy_and_run_nightly_refresh_on_a_local_server(tmp_path):
    """prefect server + process work pool + `prefect deploy` of deployment.yaml + a worker: a run completes. The
    server runs as production does, with its basic authentication string (docs/production.md): a client without
    it, or with another, is refused (401); the deploy, the worker and its flow run carry it and work."""
    import asyncio
    import secrets
    import urllib.error
    import urllib.request

    from tests.helpers import synthetic_cohort

    cohort = synthetic_cohort(tmp_path / "cohort", patients=20, seed=1)
    home = tmp_path / "home"
    logs = tmp_path / "logs"
    logs.mkdir()
    prefect = str(VENV_BIN / "prefect")

    auth = f"osteo:{secrets.token_urlsafe(18)}"
    with start_prefect_server(tmp_path / "prefect", auth_string=auth) as api:
        # our own server failing to start is a failure, never a skip
        assert api is not None, ("the Prefect server did not start: "
                                 + (tmp_path / "prefect" / "server.log").read_text()[-2000:])
        for header in ({}, {"Authorization": "Basic " + base64.b64encode(b"osteo:not-the-string").decode()}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(f"{api}/flows/filter", data=b"{}", headers={
                    "Content-Type": "application/json", **header}), timeout=30)
            assert refused.value.code == 401
        env = server_env(tmp_path / "prefect", int(api.rsplit(":", 1)[1].split("/")[0]), auth) | {
            # the worker passes its environment to the flow runs: every store of the run goes into tmp_path
            "OSTEO_VAR_DIR": str(home / "var"), "OSTEO_DATA_DIR": str(home / "data"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "OSTEO_MLFLOW_ARTIFACT_ROOT": str(home / "artifacts"), "OSTEO_WORKERS": "1",
        }

        def cli(*args: str, timeout: float = 180) -> str:
            r = subprocess.run([prefect, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=timeout)
            assert r.returncode == 0, f"prefect {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
            return r.stdout

        cli("work-pool", "create", "osteo-process", "--type", "process")
        cli("--no-prompt", "deploy", "--all", "--prefect-file", str(DEPLOYMENT_FILE), timeout=300)
        listed = cli("deployment", "ls")
        assert "nightly/nightly-refresh" in listed and "train/train" in listed

        out = cli("deployment", "run", "nightly/nightly-refresh",
                  "--param", f"dicom_dir={cohort / 'dicom'}", "--param", f"dexa_dir={cohort / 'dexa'}",
                  "--param", f"annotations_dir={cohort / 'annotations'}", "--param", "train=false")
        run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
        worker = subprocess.Popen([prefect, "worker", "start", "--pool", "osteo-process", "--run-once"],
                                  env=env, cwd=REPO_ROOT, start_new_session=True,
                                  stdout=(logs / "worker.log").open("w"), stderr=subprocess.STDOUT)
        try:
            from prefect.client.orchestration import get_client
            from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

            async def read():
                async with get_client() as client:
                    flow_run = await client.read_flow_run(run_id)
                    return flow_run, await client.read_deployment(flow_run.deployment_id)

            with temporary_settings({PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: auth}):
                def finished():
                    fr = asyncio.run(read())[0]
                    return fr if fr.state is not None and fr.state.is_final() else None

                flow_run = wait_until(finished, 300, "the nightly-refresh flow run", interval=1.0)
                deployment = asyncio.run(read())[1]
            worker.wait(timeout=60)  # --run-once: it exits after the run
        finally:
            stop(worker)
        worker_log = (logs / "worker.log").read_text()
        assert flow_run.state.is_completed(), f"{flow_run.state}\n{worker_log[-4000:]}"
        # one nightly at a time, a second start cancelled (the server holds the limit)
        assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"
        assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [("0 2 * * *", "Asia/Taipei")]
        # the run used the isolated settings: its database and exports are under tmp_path
        assert (home / "var" / "osteo.sqlite").exists()
        with open(cohort / "truth.csv", encoding="utf-8") as fh:  # one crop per hip (two on a pelvis)
            crops = sum(int(r["crops"] or 0) for r in csv.DictReader(fh))
        assert crops > 0 and len(list((home / "data" / "export").rglob("*.png"))) == crops


def test_nightly_decision_artifact_with_and_without_a_training():
    from types import SimpleNamespace

    from flows.nightly import decision_markdown
    from osteo.training.decision import TrainingDecision

    assert decision_markdown(TrainingDecision(False, "no exported, labelled images yet"), None) == (
        "**training**: no: no exported, labelled images yet")
    trained = SimpleNamespace(registration=SimpleNamespace(model_name="osteo-classifier", model_version="3"))
    assert decision_markdown(TrainingDecision(True, "new snapshot"), trained).endswith(
        "registered osteo-classifier version 3")
