"""The femoral-neck localiser: test-year box quality (held-out human boxes) and its cost in a refresh.

Trains the localiser on the bench cohort's human boxes exactly as `osteo roi train` does (the plain
functions of osteo/roi_training.py, no MLflow), scores the test year, then times locating every
paired image (render + views + network, confidence included) against rendering it alone (the
plain baseline any pixel step pays: read, decode, grey-level mapping)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import isolated_home, row

GOALS = {
    "mean_iou": {"on": "ours", "op": ">=", "value": 0.80, "text": "mean IoU >= 0.80"},
    "iou_ge_050": {"on": "ours", "op": ">=", "value": 0.97, "text": ">= 97% of boxes at IoU >= 0.5"},
    "ms": {"on": "ours", "op": "<=", "value": 50.0, "text": "< 50 ms per image on CPU"},
}


def run(cohort: Path, scratch: Path, epochs: int | None = None) -> list[dict[str, Any]]:
    from bench.plain_refresh import refresh_direct
    from db import make_engine, make_session_factory
    from osteo.roi import FileLocator
    from osteo.roi_training import collect_dataset, train_and_evaluate
    from osteo_model.roi import RoiConfig

    with isolated_home(scratch / "roi-home") as s:
        refresh_direct(str(cohort / "dicom"), str(cohort / "dexa"), str(cohort / "annotations"), export=False)
        engine = make_engine(s.resolved_database_url())
        factory = make_session_factory(engine)
        try:
            config = RoiConfig() if epochs is None else RoiConfig(epochs=epochs)
            data = collect_dataset(factory, scratch / "roi", test_year=s.test_year, input_size=config.input_size,
                                   workers=s.workers)
            checkpoint, ev = train_and_evaluate(data, config, scratch / "roi" / "run")
            work = (f"{data.n_train} train / {data.n_val} val views, {data.n_test} test-year views "
                    f"({data.pelvis_views} from pelvis halves), {config.head} head, {config.epochs} epochs, "
                    f"{ev.seconds:.0f} s training")
            m = ev.metrics
            rows = [
                row("localiser: test mean IoU", stage="localiser", ours=m.get("mean_iou"), baseline=None, unit="IoU",
                    work=work, goal=GOALS["mean_iou"], note="held-out human boxes of the test year"),
                row("localiser: share IoU >= 0.5", stage="localiser", ours=m.get("iou_ge_050"), baseline=None,
                    unit="share", work=work, goal=GOALS["iou_ge_050"]),
                row("localiser: share IoU >= 0.75", stage="localiser", ours=m.get("iou_ge_075"), baseline=None,
                    unit="share", work=work),
                row("localiser: centre error", stage="localiser", ours=m.get("centre_error_mm"), baseline=None,
                    unit="mm", work=work, note=f"{m.get('centre_error_px', float('nan')):.1f} px"),
                row("localiser: network per view (batch of 1)", stage="localiser", ours=ev.ms_per_view,
                    baseline=None, unit="ms", work=work, goal=GOALS["ms"],
                    note="confidence included (test-time copies)"),
            ]
            rows.append(_locate_vs_render(factory, FileLocator.load(checkpoint), s))
        finally:
            engine.dispose()
    return rows


def _locate_vs_render(factory, locator, settings) -> dict[str, Any]:
    """Locating every paired image (one process) against only rendering each (the plain baseline)."""
    from sqlalchemy import select

    from db.models import Annotation, DicomImage, Pair, SourceFile
    from osteo.etl.imaging import load_dicom, prepare_display
    from osteo.roi import locate_missing

    with factory() as session:
        session.execute(Annotation.__table__.delete())  # every paired image unboxed: all of them are located
        session.commit()
        paths = list(session.scalars(select(SourceFile.path)
                                     .join(DicomImage, DicomImage.source_file_id == SourceFile.id)
                                     .join(Pair, Pair.image_id == DicomImage.id)))
    t0 = time.perf_counter()
    for p in paths:
        prepare_display(load_dicom(p)[0]).display_u8()
    render = (time.perf_counter() - t0) / max(1, len(paths)) * 1000
    t0 = time.perf_counter()
    counts = locate_missing(factory, locator, workers=1, min_confidence=settings.roi_min_confidence)
    locate = (time.perf_counter() - t0) / max(1, counts.images) * 1000
    return row("localiser: locate per image vs render alone", stage="localiser", ours=locate, baseline=render,
               unit="ms", work=f"{counts.images} paired images, one process ({counts.confident} confident, "
                                f"{counts.unsure} unsure)",
               note="ratio = the locate step's cost over the pixel read every export pays anyway")
