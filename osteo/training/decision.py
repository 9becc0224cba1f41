"""Should the nightly run train? It does when the snapshot the training would take now has a digest that
no finished training (a TrainingRun row) used (plain functions, no Prefect)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
    from osteo.training.snapshot import MANIFEST_COLUMNS, current_exports, manifest_digest
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
