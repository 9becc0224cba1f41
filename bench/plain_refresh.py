"""The refresh flow's steps called directly (no Prefect): the orchestration baseline, and the
set-up of the export bench. Mirrors flows/refresh.py step for step."""

from __future__ import annotations

from collections import Counter
from typing import Any

from db import create_schema, make_engine, make_session_factory
from db.pairing import sync_pairs
from osteo import refresh


def refresh_direct(dicom_dir: str, dexa_dir: str, annotations_dir: str | None, *, export: bool = True) -> dict[str, Any]:
    from osteo.settings import get_settings

    s = get_settings()
    engine = make_engine(s.resolved_database_url())
    try:
        create_schema(engine)
        factory = make_session_factory(engine)
        key = s.resolved_pseudonym_key()
        dicoms = refresh.discover(dicom_dir)
        csvs = refresh.discover(dexa_dir, (".csv", ".txt"))
        xmls = refresh.discover(annotations_dir, (".xml",)) if annotations_dir else []
        new: Counter = Counter()
        for batch in refresh.batched(dicoms, s.ingest_batch_size):
            new.update(refresh.ingest_dicom(factory, batch, key, workers=s.workers))
        new.update({f"dexa_{k}": v for k, v in refresh.ingest_dexa(factory, csvs, key, s).items()})
        new.update({f"ann_{k}": v for k, v in refresh.ingest_annotations(factory, xmls).items()})
        with factory() as session, session.begin():
            pairing = sync_pairs(session, window_days=s.pair_window_days, osteoporosis_t=s.osteoporosis_t,
                                 normal_t=s.normal_t)
        todo = refresh.plan_exports(factory, s)
        if export:
            for batch in refresh.batched(todo, s.export_batch_size):
                new.update({f"export_{k}": v for k, v in refresh.export_images(factory, batch, s, workers=s.workers).items()})
        state = refresh.summarise(factory)
        return {"files_seen": len(dicoms) + len(csvs) + len(xmls), "images": new["images"],
                "pairs": pairing["pairs"], "planned_exports": len(todo), "exported": state["exported"], **state}
    finally:
        engine.dispose()
