"""Nightly tasks: should the refresh be followed by a training? (osteo/orchestration.py decides)."""

from __future__ import annotations

from prefect import task

from osteo import orchestration
from tasks.context import RETRY, ensure_schema, session_factory


@task(name="decide-training", tags=["db"], **RETRY)
def decide_training(test_year: int, folds: int, seed: int, enabled: bool = True, force: bool = False) -> dict:
    if not enabled:
        return orchestration.decide_training(None, set(), enabled=False).to_dict()
    ensure_schema()
    factory = session_factory()
    try:
        digest = orchestration.candidate_digest(factory, test_year=test_year, folds=folds, seed=seed)
    except ValueError as exc:  # e.g. fewer patients of a class than folds: training would fail the same way
        return orchestration.TrainingDecision(False, f"the labelled set cannot be split for training yet: {exc}"
                                              ).to_dict()
    return orchestration.decide_training(digest, orchestration.trained_digests(factory), enabled=enabled,
                                         force=force).to_dict()
