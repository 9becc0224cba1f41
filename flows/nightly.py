"""The scheduled night: refresh, then train only when the labelled set changed (a new snapshot digest)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.refresh import refresh_flow
from flows.train import train_flow
from osteo.settings import get_settings
from tasks.nightly import decide_training


@flow(name="nightly")
def nightly_flow(dicom_dir: str, dexa_dir: str, annotations_dir: str | None = None,
                 column_map_file: str | None = None, train: bool = True, force_train: bool = False,
                 preset: str = "demo", arch: str | None = None, test_year: int | None = None,
                 seed: int = 0) -> dict:
    """Refresh (ingest, pair, label, export), then train when the snapshot digest is new.

    train=False never trains; force_train=True trains even on an already-trained snapshot.
    """
    from osteo_model.train import get_preset

    settings = get_settings()
    counts = refresh_flow(dicom_dir=dicom_dir, dexa_dir=dexa_dir, annotations_dir=annotations_dir,
                          column_map_file=column_map_file)
    config = get_preset(preset, **({"arch": arch} if arch else {}))
    year = test_year or settings.test_year
    decision = decide_training(year, config.folds, seed, enabled=train, force=force_train)
    get_run_logger().info("training: %s", decision["reason"])
    result = None
    if decision["train"]:
        result = train_flow(preset=preset, arch=arch, test_year=year, seed=seed)
    create_markdown_artifact(
        key="nightly-decision",
        markdown=f"**training**: {'yes' if decision['train'] else 'no'}: {decision['reason']}"
        + (f"\n\nregistered {result['model_name']} version {result['model_version']}" if result else ""),
        description="Why this night did or did not train",
    )
    return {"refresh": counts, "decision": decision, "training": result}
