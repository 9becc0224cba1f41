"""Orchestration decisions as plain functions (no Prefect here): the one-refresh-at-a-time lock, and
whether the nightly run trains (nothing here runs at import time).

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

from osteo.settings import Settings, get_settings

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


def training_decision(factory, *, test_year: int, folds: int, seed: int, enabled: bool = True,
                      force: bool = False) -> TrainingDecision:
    """Whether tonight trains: the candidate snapshot's digest against those already trained."""
    if not enabled:
        return decide_training(None, set(), enabled=False)
    try:
        digest = candidate_digest(factory, test_year=test_year, folds=folds, seed=seed)
    except ValueError as exc:  # e.g. fewer patients of a class than folds: training would fail the same way
        return TrainingDecision(False, f"the labelled set cannot be split for training yet: {exc}")
    return decide_training(digest, trained_digests(factory), enabled=enabled, force=force)
