"""The scheduled night: pull from the PACS (when one is configured), refresh, screen (the champion on the images
it has not screened), then train only when the labelled set changed (a new snapshot digest)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.pacs import pull_before_refresh
from flows.refresh import refresh_flow
from flows.screen import screen_flow
from flows.train import train_flow
from osteo.ingest.options import RefreshOptions
from osteo.settings import get_settings
from osteo.training.decision import TrainingDecision
from osteo.training.params import Arch, Preset, TrainParams
from osteo.training.results import TrainingReport
from tasks.nightly import decide_training


@flow(name="nightly")
def nightly_flow(dexa_dir: str, dicom_dir: str | None = None, annotations_dir: str | None = None,
                 column_map_file: str | None = None, train: bool = True, force_train: bool = False,
                 preset: Preset = "demo", arch: Arch | None = None, test_year: int | None = None,
                 seed: int = 0, rehash: bool = False, epochs: int | None = None, folds: int | None = None) -> dict:
    """Pull from the PACS into the DICOM folder, refresh (ingest, pair, label, export), screen with the champion
    (the SR and SC of what OSTEO_SCREEN_PUSH picks back to the PACS; no champion: nothing), then train when the
    snapshot digest is new.

    dicom_dir: the refresh's DICOM folder, where the pull files what it retrieves (default: the inbox,
    OSTEO_PACS_INBOX); with no PACS configured the pull does nothing.

    train=False never trains; force_train=True trains even on an already-trained snapshot;
    rehash=True reads every input file again (by default an unchanged one is not opened); epochs and
    folds override the preset's (a short training on a staging server, the topology test).
    """
    dicom_dir = dicom_dir or str(get_settings().pacs_inbox)
    pulled = pull_before_refresh(into=dicom_dir)  # a PACS down all night: a warning, the refresh goes on
    report = refresh_flow(options=RefreshOptions(dicom_dir=dicom_dir, dexa_dir=dexa_dir,
                                                 annotations_dir=annotations_dir, column_map_file=column_map_file,
                                                 rehash=rehash))
    screened = screen_flow()  # the champion on every hip image it has not screened; none: a no-op
    year = test_year or get_settings().test_year
    folds = folds or TrainParams(preset=preset, arch=arch).config().folds
    decision = decide_training(year, folds, seed, enabled=train, force=force_train)
    get_run_logger().info("training: %s", decision.reason)
    params = TrainParams(preset=preset, arch=arch, test_year=year, seed=seed, folds=folds, epochs=epochs)
    result = train_flow(params=params) if decision.train else None
    create_markdown_artifact(key="nightly-decision", markdown=decision_markdown(decision, result),
                             description="Why this night did or did not train")
    return {"pull": pulled, "refresh": report.to_dict(), "screening": screened.to_dict(),
            "decision": decision.to_dict(), "training": result.to_dict() if result else None}


def decision_markdown(decision: TrainingDecision, result: TrainingReport | None) -> str:
    text = f"**training**: {'yes' if decision.train else 'no'}: {decision.reason}"
    if result is not None:
        reg = result.registration
        text += f"\n\nregistered {reg.model_name} version {reg.model_version}"
    return text
