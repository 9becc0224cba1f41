"""Localiser tasks: a decorator and one call each (policy in the decorator)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from osteo.ingest.report import LocateCounts
from osteo.localiser import locate, training
from osteo.localiser.training import RoiDataset, RoiEvaluation
from osteo.settings import get_settings, session_factory
from osteo.training.results import Registration
from osteo_mlflow import roi as tracked
from osteo_mlflow.client import client
from tasks.policy import RETRY


@task(name="locate-femoral-necks", **RETRY)
def locate_boxes() -> LocateCounts:
    s = get_settings()
    locator = tracked.champion_locator(s)
    if locator is None:  # no localiser registered yet: every unboxed image waits for a person
        return LocateCounts()
    return locate.locate_missing(session_factory(s), locator, workers=s.workers, min_confidence=s.roi_min_confidence)


@task(name="collect-roi-views", **RETRY)
def collect_roi_views(test_year: int, input_size: int, seed: int) -> RoiDataset:
    s = get_settings()
    return training.collect_dataset(session_factory(s, create=True), Path(s.data_dir) / "roi",
                                        test_year=test_year, input_size=input_size, seed=seed, workers=s.workers)


@task(name="start-roi-run", **RETRY)
def start_roi_run(dataset: RoiDataset, config: dict) -> str:
    s = get_settings()
    return tracked.start_roi_run(client(s), s, dataset, config)


@task(name="train-localiser")
def train_localiser(dataset: RoiDataset, config: dict, out_dir: str, run_id: str) -> tuple[str, RoiEvaluation]:
    return tracked.train_roi_tracked(client(get_settings()), run_id, dataset, config, out_dir)


@task(name="register-localiser", **RETRY)
def register_localiser(checkpoint: str, evaluation: RoiEvaluation, dataset: RoiDataset, run_id: str) -> Registration:
    s = get_settings()
    return tracked.register_localiser(client(s), s, checkpoint, evaluation, dataset, run_id)
