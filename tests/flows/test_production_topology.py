"""The production topology of docs/production.md, started by a test on this machine (loopback only):

- a Prefect server whose database is the local PostgreSQL (a fresh database, dropped after);
- the process work pool of deployment.yaml, `prefect deploy --all`, and a process worker;
- an MLflow tracking server on PostgreSQL (another fresh database) with a local artifact root, guarded as
  production guards it: MLflow's basic-auth app, the workers as `osteo-promoter` (tests/mlflow_server.py);
- the Prefect server with its basic authentication string, which the worker and the Dask workers carry;
- the data database on PostgreSQL (a third fresh database);
- a 2-worker Dask LocalCluster (worker processes) that runs the export batches and the training folds.

The nightly deployment is triggered through the server with a small synthetic cohort and a one-epoch,
two-fold training; then each server is asked what happened: Prefect (every flow run COMPLETED, stored
in its PostgreSQL database), MLflow (the registered version and its alias), the data database (pairs,
exports, the training run naming that version), and an ordinary MLflow user may read the registry but not move
`champion`. Everything is started and stopped here, under tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from osteo.settings import REPO_ROOT
from tests.mlflow_server import ADMIN, PROMOTER, GuardedServer, as_user, start_guarded_mlflow
from tests.prefect_server import (
    VENV_BIN,
    free_port,
    server_env,
    spawn,
    stop,
    stop_all,
    wait_healthy,
    wait_until,
)

DEPLOYMENT_FILE = REPO_ROOT / "deployment.yaml"
PG = "postgres@127.0.0.1:5432"
PATIENTS = 40  # enough for a 2-fold training with a test year; small enough for 2 cores
RUN_TIMEOUT_S = 420


@contextmanager
def fresh_databases(*roles: str):
    """One new PostgreSQL database per role (dropped after, open connections included); yields role -> name."""
    import psycopg

    try:
        admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True,
                                connect_timeout=5)
    except psycopg.OperationalError as exc:  # the machine provides PostgreSQL (README): a failure, never a skip
        pytest.fail(f"no PostgreSQL server answers on 127.0.0.1:5432 ({exc})")
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    names = {role: f"osteo_topology_{tag}_{role}" for role in roles}
    made: list[str] = []
    try:
        for name in names.values():
            admin.execute(f'CREATE DATABASE "{name}"')
            made.append(name)
        yield names
    finally:
        for name in made:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _spawn_servers(stack: ExitStack, tmp: Path, dbs: dict[str, str], auth: str):
    """The Prefect and MLflow servers, started side by side (each migrates a new PostgreSQL database);
    returns the Prefect API's URL, the MLflow server and a function that waits until both answer."""
    prefect_port = free_port()
    prefect_env = server_env(tmp / "prefect-server", prefect_port, auth) | {
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{PG}/{dbs['prefect']}"}
    (tmp / "prefect-server").mkdir()
    log = tmp / "logs" / "prefect-server.log"
    prefect = spawn([VENV_BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                    prefect_env, log, cwd=tmp / "prefect-server")
    stack.callback(stop_all, [prefect])
    mlflow = stack.enter_context(start_guarded_mlflow(tmp / "mlflow", f"postgresql+psycopg://{PG}/{dbs['mlflow']}",
                                                      wait=False))
    api = f"http://127.0.0.1:{prefect_port}/api"

    def wait() -> None:
        wait_healthy(prefect, f"{api}/health", log, 240, "the Prefect server on PostgreSQL")
        mlflow.ready()

    return api, mlflow, wait


def _flow_env(tmp: Path, api: str, auth: str, mlflow: GuardedServer, data_db: str) -> dict[str, str]:
    """What /etc/osteo/osteo.env holds in docs/production.md, pointed at this test's servers."""
    port = int(api.rsplit(":", 1)[1].split("/")[0])
    return server_env(tmp / "worker-prefect-home", port, auth) | {
        "OSTEO_PRODUCTION": "true", "OSTEO_PSEUDONYM_KEY": secrets.token_hex(32),
        "OSTEO_DATABASE_URL": f"postgresql+psycopg://{PG}/{data_db}",
        "OSTEO_VAR_DIR": str(tmp / "srv" / "var"), "OSTEO_DATA_DIR": str(tmp / "srv" / "data"),
        "MLFLOW_TRACKING_URI": mlflow.url, "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_USERNAME": PROMOTER, "MLFLOW_TRACKING_PASSWORD": mlflow.promoter_password,
        "OSTEO_WORKERS": "1",  # parallelism from Dask; its worker processes may not start a process pool
    }


def _prefect(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    r = subprocess.run([str(VENV_BIN / "prefect"), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"prefect {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _flow_runs(api: str, auth: str) -> list[tuple[str, str]]:
    """(flow name, state type) of every flow run the server holds."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            return [((await client.read_flow(fr.flow_id)).name, fr.state.type.value if fr.state else "NONE")
                    for fr in await client.read_flow_runs()]

    with temporary_settings({PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: auth}):
        return asyncio.run(read())


def _flow_run_state(api: str, auth: str, run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).state

    with temporary_settings({PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: auth}):
        return asyncio.run(read())


def _scalar(url: str, sql: str):
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_nightly_deployment_on_the_production_topology(tmp_path):
    from distributed import Client, LocalCluster, get_task_stream

    from osteo.synth import generate_cohort

    cohort = tmp_path / "cohort"
    with ExitStack() as stack:
        dbs = stack.enter_context(fresh_databases("prefect", "mlflow", "data"))
        auth = f"osteo:{secrets.token_urlsafe(18)}"
        api, mlflow, servers_answer = _spawn_servers(stack, tmp_path, dbs, auth)
        generate_cohort(cohort, patients=PATIENTS, seed=1, workers=1)  # while the servers start
        servers_answer()
        env = _flow_env(tmp_path, api, auth, mlflow, dbs["data"])
        # Dask workers: processes with the worker's environment (they run export batches and folds)
        cluster = stack.enter_context(LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
            env=env, local_directory=str(tmp_path / "dask")))
        env["OSTEO_DASK_ADDRESS"] = cluster.scheduler_address

        _prefect(env, "work-pool", "create", "osteo-process", "--type", "process")
        _prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", str(DEPLOYMENT_FILE))
        out = _prefect(env, "deployment", "run", "nightly/nightly-refresh",
                       "--param", f"dicom_dir={cohort / 'dicom'}", "--param", f"dexa_dir={cohort / 'dexa'}",
                       "--param", f"annotations_dir={cohort / 'annotations'}", "--param", "train=true",
                       "--param", "preset=demo", "--param", "epochs=1", "--param", "folds=2")
        run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
        worker_log = tmp_path / "logs" / "worker.log"
        worker = spawn([VENV_BIN / "prefect", "worker", "start", "--pool", "osteo-process", "--run-once"], env,
                       worker_log, cwd=REPO_ROOT)
        stack.callback(stop, worker)
        with Client(cluster) as dask_client, get_task_stream(dask_client) as stream:
            state = wait_until(lambda: (s := _flow_run_state(api, auth, run_id)) is not None and s.is_final() and s,
                               RUN_TIMEOUT_S, "the nightly flow run", interval=2.0)
        on_dask = {t["key"].split("-")[0] for t in stream.data}
        assert state.is_completed(), f"{state}\n{worker_log.read_text()[-6000:]}"
        worker.wait(timeout=60)  # --run-once: it exits after the run

        # Prefect: the night and its three subflows completed (the screening a no-op: no champion before this
        # night's training; no PACS configured, so the pull is nothing), stored in the server's PostgreSQL database
        runs = _flow_runs(api, auth)
        assert sorted(runs) == [("nightly", "COMPLETED"), ("nightly-refresh", "COMPLETED"), ("screen", "COMPLETED"),
                                ("train", "COMPLETED")]
        assert _scalar(f"postgresql+psycopg://{PG}/{dbs['prefect']}", "SELECT count(*) FROM flow_run") == 4
        # the export batches and the folds ran on the Dask workers
        assert {"export_batch", "train_fold"} <= on_dask, on_dask

        # MLflow: one registered version with its alias (set by the workers as osteo-promoter), in the tracking
        # server's PostgreSQL database; an ordinary user reads it and may not move champion
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
        from mlflow.server import get_app_client

        with as_user(ADMIN, mlflow.admin_password):
            get_app_client("basic-auth", tracking_uri=mlflow.url).create_user("lin", "an-ordinary-password-1")
        with as_user("lin", "an-ordinary-password-1"):
            client = MlflowClient(tracking_uri=mlflow.url, registry_uri=mlflow.url)
            versions = client.search_model_versions("name='osteo-classifier'")
            assert len(versions) == 1, versions
            version = client.get_model_version("osteo-classifier", versions[0].version)
            assert {"champion", "challenger"} & set(version.aliases), version.aliases
            with pytest.raises(MlflowException) as refused:
                client.set_registered_model_alias("osteo-classifier", "champion", version.version)
            assert refused.value.error_code == "PERMISSION_DENIED"
        assert _scalar(f"postgresql+psycopg://{PG}/{dbs['mlflow']}",
                       "SELECT count(*) FROM model_versions WHERE name = 'osteo-classifier'") == 1

        # the data database: pairs and exports, and the training run naming the registered version
        data_url = env["OSTEO_DATABASE_URL"]
        pairs = _scalar(data_url, "SELECT count(*) FROM pair")
        exported = _scalar(data_url, "SELECT count(DISTINCT path) FROM export WHERE status = 'exported'")
        pngs = list((tmp_path / "srv" / "data" / "export").rglob("*.png"))
        assert pairs > 0 and exported > 0 and len(pngs) == exported, (pairs, exported, len(pngs))
        assert _scalar(data_url, "SELECT model_version FROM training_run") == str(version.version)
