"""Surviving faults: retries on transient faults only, finished folds not retrained, and a refresh
killed with SIGKILL mid-ingest and mid-export that, started again, ends exactly like a clean run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osteo.settings import REPO_ROOT
from tests.helpers import tree_digest

OSTEO = Path(sys.executable).parent / "osteo"


def table_contents(db_file: Path, home: Path) -> dict[str, list[tuple]]:
    """Every table's rows without ids, foreign keys and timestamps (they differ between equal runs),
    with the run's home folder written as <home>; sorted, duplicates kept (so they show)."""
    from sqlalchemy import DateTime

    from db.models import Base

    out: dict[str, list[tuple]] = {}
    with sqlite3.connect(db_file) as conn:
        for table in Base.metadata.sorted_tables:
            if table.name == "refresh_run":
                continue
            cols = [c.name for c in table.columns
                    if not c.primary_key and not c.foreign_keys and not isinstance(c.type, DateTime)]
            rows = conn.execute(f'SELECT {", ".join(cols)} FROM "{table.name}"').fetchall()
            out[table.name] = sorted(tuple(str(v).replace(str(home), "<home>") for v in row) for row in rows)
    return out


# --- retries: transient faults only -------------------------------------------------------------

def test_dropped_connection_is_retried_and_bad_input_is_not(tmp_path, monkeypatch, prefect_harness):
    from sqlalchemy.exc import OperationalError

    import tasks.refresh as task_mod
    from osteo.etl.errors import InputError
    from osteo.ingest import refresh as plain
    from tests.helpers import isolated_settings

    with isolated_settings(tmp_path):
        calls = {"factory": 0, "plan": 0}
        real_factory = task_mod.session_factory

        def flaky_factory(settings, **kw):
            calls["factory"] += 1
            if calls["factory"] == 1:
                raise OperationalError("SELECT 1", {}, ConnectionResetError("server closed the connection"))
            return real_factory(settings, **kw)

        monkeypatch.setattr(task_mod, "session_factory", flaky_factory)
        refresh_id = task_mod.start_refresh_run.with_options(retry_delay_seconds=0)({"dicom_dir": "x"})
        assert refresh_id == 1 and calls["factory"] == 2  # failed once, retried, succeeded

        def bad_input(*_a, **_k):
            calls["plan"] += 1
            raise InputError("bad_csv_row", "a malformed row")

        monkeypatch.setattr(plain, "plan_exports", bad_input)
        with pytest.raises(Exception) as info:
            task_mod.plan_exports.with_options(retry_delay_seconds=0)()
        assert not isinstance(info.value, OperationalError)
        assert calls["plan"] == 1, "bad input must fail at once, not be retried"


def test_transient_only_classifies_faults():
    from prefect.states import Completed, Failed
    from sqlalchemy.exc import OperationalError

    from tasks.policy import RETRY, transient_only

    def failed(exc):
        return Failed(data=exc)

    assert transient_only(None, None, failed(OperationalError("x", {}, Exception("gone"))))
    assert transient_only(None, None, failed(ConnectionResetError("reset")))
    assert transient_only(None, None, failed(BlockingIOError("busy")))
    assert not transient_only(None, None, failed(ValueError("bad input")))
    assert not transient_only(None, None, failed(KeyError("missing tag")))
    assert not transient_only(None, None, Completed(data=1))
    assert RETRY["retries"] >= 2 and list(RETRY["retry_delay_seconds"]) == sorted(RETRY["retry_delay_seconds"])


# --- training: a finished fold is not trained again ----------------------------------------------

def test_finished_fold_is_not_trained_again(tmp_path, monkeypatch):
    import osteo_model.train as model_train
    from osteo.training.folds import run_fold
    from osteo_common.files import write_json
    from osteo_model.config import get_preset

    def must_not_train(*_a, **_k):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(model_train, "train_fold", must_not_train)
    done = {"fold": 1, "arch": "resnet18", "checkpoint": str(tmp_path / "fold-1.pth"), "best_epoch": 3,
            "val_loss": 0.4, "val_auc": 0.8, "val_recall": 0.7, "n_train": 10, "n_val": 3, "val_metrics": {},
            "history": [], "seconds": 1.0, "resumed": False, "val_labels": [0, 1, 0], "val_probs": [0.2, 0.9, 0.4]}
    write_json(tmp_path / "fold-1.json", done)
    # a fold finished with its validation predictions: the manifest is not even looked at
    result = run_fold(None, 1, get_preset("demo"), tmp_path)
    assert result.resumed is True and result.val_loss == 0.4


def test_half_written_fold_marker_means_unfinished(tmp_path, monkeypatch):
    """A kill during write_json leaves only fold-k.json.tmp: the fold is not finished and trains again."""
    import osteo_model.train as model_train
    from osteo.training.folds import run_fold
    from osteo_model.config import get_preset

    class Trained(Exception):
        pass

    def trainer(*_a, **_k):
        raise Trained

    monkeypatch.setattr(model_train, "train_fold", trainer)
    monkeypatch.setattr("osteo.training.folds.fold_frames", lambda manifest, fold: (None, None))
    (tmp_path / ".fold-0.json.x1.tmp").write_text('{"fold": 0, "val_lo')
    with pytest.raises(Trained):
        run_fold(None, 0, get_preset("demo"), tmp_path)


# --- kill -9 and resume (slow) --------------------------------------------------------------------

def _env(home: Path, api: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OSTEO_", "MLFLOW_"))}
    if api:  # one Prefect server for all runs of the test (else each run starts its own ephemeral one)
        env.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(home / "prefect-client")})
    env.update({
        "OSTEO_VAR_DIR": str(home / "var"), "OSTEO_DATA_DIR": str(home / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "OSTEO_MLFLOW_ARTIFACT_ROOT": str(home / "artifacts"),
        "OSTEO_PSEUDONYM_KEY": "resume-test-key-0123456789abcdef",
        "OSTEO_WORKERS": "1",
        "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    return env


def _refresh_cmd(cohort: Path) -> list[str]:
    return [str(OSTEO), "refresh", "--json", "--dicom", str(cohort / "dicom"), "--dexa", str(cohort / "dexa"),
            "--annotations", str(cohort / "annotations")]


def _count(db_file: Path, table: str) -> int:
    if not db_file.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    except sqlite3.Error:
        return 0


def _run_and_kill(cohort: Path, home: Path, api: str | None, ready, timeout: float = 150) -> bool:
    """Start a refresh, SIGKILL its whole process group as soon as ready() holds; True if it was killed."""
    # one file per batch: many small transactions, so the kill lands between and inside them
    env = _env(home, api) | {"OSTEO_INGEST_BATCH_SIZE": "1", "OSTEO_EXPORT_BATCH_SIZE": "1"}
    proc = subprocess.Popen(_refresh_cmd(cohort), env=env, cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            time.sleep(0.05)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        else:
            try:  # the ephemeral Prefect server is in the same group: leave nothing behind
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _run(cohort: Path, home: Path, api: str | None) -> dict:
    r = subprocess.run(_refresh_cmd(cohort), env=_env(home, api), cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def prefect_api(tmp_path):
    """A Prefect server for the test's runs (started once: each CLI run would otherwise start its own)."""
    from tests.prefect_server import start_prefect_server

    with start_prefect_server(tmp_path / "prefect-server") as api:
        assert api is not None, "our Prefect server did not start: " + (tmp_path / "prefect-server" / "server.log"
                                                                        ).read_text()[-2000:]
        yield api


@pytest.mark.slow
def test_refresh_killed_mid_ingest_and_mid_export_resumes_to_the_clean_state(tmp_path, prefect_api):
    from concurrent.futures import ThreadPoolExecutor

    from tests.helpers import synthetic_cohort

    cohort = synthetic_cohort(tmp_path / "cohort", patients=20, seed=1)
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    db = crashed / "var" / "osteo.sqlite"

    with ThreadPoolExecutor(1) as pool:
        fresh_future = pool.submit(_run, cohort, clean, prefect_api)  # the clean run, meanwhile
        # 1. killed during the DICOM header ingest: some images are in, others not yet
        killed_ingest = _run_and_kill(cohort, crashed, prefect_api, lambda: _count(db, "dicom_image") >= 3)
        n_ingested = _count(db, "dicom_image")
        # 2. started again, killed during the PNG export: some exports recorded, others not yet
        killed_export = _run_and_kill(cohort, crashed, prefect_api, lambda: _count(db, "export") >= 2)
        n_exported = _count(db, "export")
        assert killed_ingest or killed_export, "both runs finished before they could be killed"
        # 3. started again: finishes
        resumed = _run(cohort, crashed, prefect_api)
        fresh = fresh_future.result()

    assert table_contents(db, crashed) == table_contents(clean / "var" / "osteo.sqlite", clean)
    assert tree_digest(crashed / "data" / "export") == tree_digest(clean / "data" / "export")
    assert not list((crashed / "data").rglob("*.tmp")), "a half-written file was left behind"
    for key in ("images", "pairs", "positives", "exported", "excluded", "quarantined"):
        assert resumed["totals"][key] == fresh["totals"][key], key
    with sqlite3.connect(db) as conn:  # no record twice
        assert conn.execute("SELECT count(*) - count(DISTINCT sop_instance_uid) FROM dicom_image").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) - count(DISTINCT image_id || recipe_digest) FROM export"
                            ).fetchone()[0] == 0
    print(f"killed mid-ingest={killed_ingest} ({n_ingested} images), "
          f"mid-export={killed_export} ({n_exported} exports)")
