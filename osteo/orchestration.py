"""Orchestration decisions as plain functions: task runner, the one-refresh-at-a-time lock, and
whether the nightly run trains (nothing here runs at import time).

- Task runner: `SettingsTaskRunner` is what the flows' decorators hold; Prefect asks it for a copy
  when a flow run starts (`duplicate()`), and that is when the settings are read: a Dask scheduler
  address (OSTEO_DASK_ADDRESS) gives a DaskTaskRunner on that cluster, anything else a thread pool.
- Refresh lock: an exclusive, non-blocking `flock` on `<var_dir>/refresh.lock` holding the owner's
  PID. The kernel drops it when the owner dies (kill -9 included), so a crash never leaves a stale
  lock behind. It guards one machine; across machines the deployment's concurrency limit does.
- Training decision: the nightly run trains when the snapshot the training would take now has a
  digest that no finished training (a TrainingRun row) used.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from osteo.settings import Settings, get_settings


# --- task runner ----------------------------------------------------------------------------

def make_task_runner(settings: Settings, threads: int = 1) -> TaskRunner:
    """DaskTaskRunner on the scheduler at settings.dask_address, else a pool of `threads` threads."""
    if settings.dask_address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise RuntimeError("OSTEO_DASK_ADDRESS is set but prefect-dask is not installed "
                               "(pip install 'prefect-dask>=0.3,<0.4')") from exc
        return DaskTaskRunner(address=settings.dask_address)
    return ThreadPoolTaskRunner(max_workers=max(1, threads))


class SettingsTaskRunner(TaskRunner):
    """A placeholder that becomes the settings' task runner when a flow run starts.

    Prefect's flow engine enters `flow.task_runner.duplicate()`; returning the concrete runner
    there means the choice follows the environment of the process that runs the flow (a worker's
    job variables, a test's isolated settings), not the one that imported the module.
    """

    def __init__(self, threads: int = 1):
        super().__init__()
        self.threads = threads

    @property
    def name(self) -> str:
        return "settings"

    def duplicate(self) -> TaskRunner:  # type: ignore[override]
        return make_task_runner(get_settings(), self.threads)

    def submit(self, task, parameters, wait_for=None, dependencies=None):  # pragma: no cover - never entered
        raise RuntimeError("SettingsTaskRunner is resolved by duplicate() when a flow run starts")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SettingsTaskRunner) and other.threads == self.threads

    __hash__ = None  # type: ignore[assignment]


# --- one refresh at a time ------------------------------------------------------------------

class RefreshAlreadyRunning(RuntimeError):
    """Another refresh holds the lock on this machine's var folder."""


def lock_path(settings: Settings) -> Path:
    return Path(settings.var_dir) / "refresh.lock"


@contextmanager
def refresh_lock(settings: Settings | None = None) -> Iterator[Path]:
    """Hold the refresh lock for the block, or raise RefreshAlreadyRunning at once (never wait)."""
    import fcntl

    path = lock_path(settings or get_settings())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise RefreshAlreadyRunning(
                f"another refresh is running ({holder}); this one was refused so that records are never "
                f"ingested twice at once. Wait for it to finish (lock file {path})."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def sweep_partial_files(root: Path) -> int:
    """Remove temporary files a killed writer left (`atomic_write_bytes` names them `.NAME.*.tmp`).

    Only called under the refresh lock, when no other writer can be mid-write in this folder.
    """
    removed = 0
    if Path(root).is_dir():
        for tmp in Path(root).rglob("*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


# --- should the nightly run train? ---------------------------------------------------------

@dataclass(frozen=True)
class TrainingDecision:
    train: bool
    reason: str
    digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_training(candidate_digest: str | None, trained_digests: set[str] | frozenset[str], *,
                    enabled: bool = True, force: bool = False) -> TrainingDecision:
    """Train when the labelled set (as the training would snapshot it) has not been trained on yet."""
    if not enabled:
        return TrainingDecision(False, "training after the refresh is switched off", candidate_digest)
    if candidate_digest is None:
        return TrainingDecision(False, "no exported, labelled images yet", None)
    if force:
        return TrainingDecision(True, "training forced", candidate_digest)
    if candidate_digest in trained_digests:
        return TrainingDecision(False, f"snapshot {candidate_digest[:12]} is already trained; the labelled set "
                                       "did not change", candidate_digest)
    return TrainingDecision(True, f"new snapshot {candidate_digest[:12]}: the labelled set changed",
                            candidate_digest)


def candidate_digest(factory, *, test_year: int, folds: int, seed: int) -> str | None:
    """The digest `take_snapshot` would record now (same split, same columns), without recording it."""
    from osteo.snapshot import MANIFEST_COLUMNS, current_exports, manifest_digest
    from osteo_model.splits import assign_splits

    with factory() as session:
        exports = current_exports(session)
    if exports.empty:
        return None
    manifest = assign_splits(exports, test_year=test_year, folds=folds, seed=seed)
    manifest = manifest[manifest["split"] != "unused"].reset_index(drop=True)[MANIFEST_COLUMNS]
    return manifest_digest(manifest)


def trained_digests(factory) -> set[str]:
    """Digests of snapshots that a finished training (recorded at registration) used."""
    from sqlalchemy import select

    from db.models import Snapshot, TrainingRun

    with factory() as session:
        return set(session.scalars(select(Snapshot.digest).join(TrainingRun, TrainingRun.snapshot_id == Snapshot.id)))


# --- artifacts -------------------------------------------------------------------------------

def quarantine_table(factory) -> list[dict[str, Any]]:
    """Quarantined inputs by stage and reason (totals in the database)."""
    from sqlalchemy import func, select

    from db.models import Quarantine

    with factory() as session:
        rows = session.execute(select(Quarantine.stage, Quarantine.reason, func.count(Quarantine.id))
                               .group_by(Quarantine.stage, Quarantine.reason)
                               .order_by(Quarantine.stage, Quarantine.reason)).all()
    return [{"stage": stage, "reason": reason, "count": int(n)} for stage, reason, n in rows]


def mlflow_links(tracking_uri: str, experiment_id: str | None, run_id: str, model_name: str | None,
                 model_version: str | None) -> dict[str, str]:
    """Links to the MLflow run and the registered version: UI pages on a tracking server, URIs otherwise."""
    links: dict[str, str] = {}
    base = tracking_uri.rstrip("/")
    if base.startswith(("http://", "https://")):
        if experiment_id:
            links["run"] = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
        if model_name and model_version:
            links["model_version"] = f"{base}/#/models/{model_name}/versions/{model_version}"
    else:
        links["run"] = f"runs:/{run_id}"
        if model_name and model_version:
            links["model_version"] = f"models:/{model_name}/{model_version}"
    return links
