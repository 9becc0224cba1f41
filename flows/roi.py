"""Localiser training: the human boxes as views -> train -> test-year IoU -> MLflow `osteo-roi`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.runner import SettingsTaskRunner
from osteo.localiser.training import RoiReport
from osteo.settings import get_settings
from osteo_model.roi import RoiConfig
from tasks.roi import collect_roi_views, register_localiser, start_roi_run, train_localiser


@flow(name="train-roi", task_runner=SettingsTaskRunner(threads=1))
def train_roi_flow(test_year: int | None = None, epochs: int | None = None, input_size: int | None = None,
                   head: str | None = None, seed: int = 0) -> RoiReport:
    settings = get_settings()
    given: dict[str, Any] = dict(epochs=epochs, input_size=input_size, head=head, seed=seed,
                                 min_confidence=settings.roi_min_confidence)
    config = RoiConfig(**{k: v for k, v in given.items() if v is not None})
    # every person's box as a low-resolution hip view, split by patient (test year held out)
    dataset = collect_roi_views(test_year or settings.test_year, config.input_size, seed)
    run_id = start_roi_run(dataset, config.to_dict())
    out_dir = str(Path(settings.data_dir) / "roi" / dataset.digest[:16] / run_id[:12])
    checkpoint, evaluation = train_localiser(dataset, config.to_dict(), out_dir, run_id)
    registration = register_localiser(checkpoint, evaluation, dataset, run_id)  # champion by test mean IoU
    report = RoiReport(run_id, dataset, evaluation, registration)
    create_markdown_artifact(key="roi-training-summary", markdown=report.markdown(),
                             description="The localiser's test-year boxes and the registry decision")
    return report
