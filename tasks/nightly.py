"""Nightly task: should the refresh be followed by a training? (osteo/training/decision.py decides)."""

from __future__ import annotations

from prefect import task

from osteo.settings import get_settings, session_factory
from osteo.training import decision
from osteo.training.decision import TrainingDecision
from tasks.policy import RETRY


@task(name="decide-training", tags=["db"], **RETRY)
def decide_training(test_year: int, folds: int, seed: int, enabled: bool = True, force: bool = False
                    ) -> TrainingDecision:
    return decision.training_decision(session_factory(get_settings(), create=True), test_year=test_year,
                                           folds=folds, seed=seed, enabled=enabled, force=force)
