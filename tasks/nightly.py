"""Nightly task: should the refresh be followed by a training? (osteo/orchestration.py decides)."""

from __future__ import annotations

from prefect import task

from osteo import orchestration
from osteo.orchestration import TrainingDecision
from osteo.settings import get_settings, session_factory
from tasks.policy import RETRY


@task(name="decide-training", tags=["db"], **RETRY)
def decide_training(test_year: int, folds: int, seed: int, enabled: bool = True, force: bool = False
                    ) -> TrainingDecision:
    return orchestration.training_decision(session_factory(get_settings(), create=True), test_year=test_year,
                                           folds=folds, seed=seed, enabled=enabled, force=force)
