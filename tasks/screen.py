"""Screening tasks: a decorator and one call each. A batch task loads the champion itself (once per process:
osteo_mlflow.screening keeps it), so that a Dask worker needs only the champion's name and version."""

from __future__ import annotations

from prefect import task

from osteo.pacs.target import pacs_target
from osteo.screening import plan, push, score
from osteo.screening.model import Champion
from osteo.screening.report import PushCounts, ScreenCounts
from osteo.settings import get_settings, session_factory
from osteo_mlflow import screening as registry
from tasks.policy import RETRY


@task(name="find-champion", **RETRY)
def find_champion() -> Champion | None:
    return registry.find_champion(get_settings())


@task(name="plan-screening", **RETRY)
def plan_screening(champion: Champion, rescreen: bool = False) -> tuple[list[int], int]:
    return plan.images_to_screen(session_factory(get_settings(), create=True), champion.name, champion.version,
                                 rescreen=rescreen)


@task(name="screen-images", **RETRY)
def screen_batch(champion: Champion, image_ids: list[int]) -> ScreenCounts:
    s = get_settings()
    return score.screen_images(session_factory(s), registry.screening_model(s, champion), image_ids,
                               metal_threshold=s.metal_threshold, blur_threshold=s.blur_threshold)


@task(name="push-results", **RETRY)
def push_results(champion: Champion, mode: str) -> PushCounts:
    s = get_settings()
    return push.push_results(session_factory(s), registry.screening_model(s, champion), pacs_target(s), mode)
