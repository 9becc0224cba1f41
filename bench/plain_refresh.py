"""The refresh flow's steps called directly (no Prefect): the orchestration baseline, and the
set-up of the export bench. Mirrors flows/refresh.py step for step, through the same plain functions."""

from __future__ import annotations

from functools import reduce
from operator import add

from db import create_schema, make_engine, make_session_factory
from osteo.etl.dexa import load_mapping
from osteo.ingest import refresh
from osteo.ingest.report import ExportCounts, RefreshReport, StageCounts, ThisRun
from osteo_common.chunks import batched


def refresh_direct(dicom_dir: str, dexa_dir: str, annotations_dir: str | None, *, export: bool = True
                   ) -> RefreshReport:
    from osteo.settings import get_settings

    s = get_settings()
    engine = make_engine(s.resolved_database_url())
    try:
        create_schema(engine)
        factory = make_session_factory(engine)
        key = s.resolved_pseudonym_key()
        refresh_id = refresh.start_refresh_run(factory, {"dicom_dir": dicom_dir, "dexa_dir": dexa_dir,
                                                         "annotations_dir": annotations_dir})
        dicoms = refresh.walk(dicom_dir)  # streamed into batches, as the flow does
        csvs = refresh.discover(dexa_dir, (".csv", ".txt"))
        xmls = refresh.discover(annotations_dir, (".xml",)) if annotations_dir else []
        dicom = reduce(add, (refresh.ingest_dicom(factory, b, key, workers=s.workers, scope=s.scope_rules())
                             for b in refresh.batches(dicoms, s.ingest_batch_size)), StageCounts())
        dexa = refresh.ingest_dexa(factory, csvs, key, s, load_mapping(None))
        boxes = refresh.ingest_annotations(factory, xmls)
        pairing = refresh.pair_and_label(factory, s)
        todo = refresh.plan_exports(factory, s) if export else []
        exported = reduce(add, (refresh.export_images(factory, b, s, workers=s.workers)
                                for b in batched(todo, s.export_batch_size)), ExportCounts())
        this_run = ThisRun(dicom.files + len(csvs) + len(xmls), dicom, dexa, boxes, pairing, exported)
        return refresh.finish_refresh_run(factory, refresh_id, this_run)
    finally:
        engine.dispose()
