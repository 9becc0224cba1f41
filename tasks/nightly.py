"""Nightly tasks: should the refresh be followed by a training? (osteo/orchestration.py decides)."""

from __future__ import annotations

from prefect import task

from osteo import orchestration
from tasks.context import RETRY, ensure_schema, session_factory


@task(name="decide-training", tags=["db"], **RETRY)
def decide_training(test_year: int, folds: int, seed: int, enabled: bool = True, force: bool = False) -> dict:
    ensure_schema()
    factory = session_factory()
    digest = orchestration.candidate_digest(factory, test_year=test_year, folds=folds, seed=seed)
    return orchestration.decide_training(digest, orchestration.trained_digests(factory), enabled=enabled,
                                         force=force).to_dict()
