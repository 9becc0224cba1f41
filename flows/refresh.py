"""Nightly refresh: ingest -> pair and label -> export labelled femoral-neck PNGs."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact
from tqdm import tqdm

from osteo.orchestration import SettingsTaskRunner, quarantine_table, refresh_lock, sweep_partial_files
from osteo.refresh import batched
from osteo.settings import get_settings
from tasks.refresh import (
    discover_files,
    export_batch,
    ingest_annotation_files,
    ingest_dexa_files,
    ingest_dicom_batch,
    pair_and_label,
    plan_exports,
    prepare_database,
    summarise_refresh,
)


def _bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)


# export batches are submitted: one thread here (each batch has its own process pool), separate
# Dask workers when OSTEO_DASK_ADDRESS is set (osteo/orchestration.py)
@flow(name="nightly-refresh", log_prints=False, task_runner=SettingsTaskRunner(threads=1))
def refresh_flow(dicom_dir: str, dexa_dir: str, annotations_dir: str | None = None,
                 column_map_file: str | None = None) -> dict:
    settings = get_settings()
    # one refresh at a time on this machine's database and export folder; a second is refused
    with refresh_lock(settings):
        sweep_partial_files(Path(settings.data_dir) / "export")  # half-written PNGs of a killed run
        return _refresh(settings, dicom_dir, dexa_dir, annotations_dir, column_map_file)


def _refresh(settings, dicom_dir: str, dexa_dir: str, annotations_dir: str | None,
             column_map_file: str | None) -> dict:
    prepare_database()

    # 1. find the inputs (DICOM files often carry no suffix, so every file is a candidate)
    dicoms = discover_files(dicom_dir)
    csvs = discover_files(dexa_dir, (".csv", ".txt"))
    xmls = discover_files(annotations_dir, (".xml",)) if annotations_dir else []

    # 2. ingest DICOM headers in batches (pixels are not read here)
    new: Counter = Counter()
    with _bar(len(dicoms), "ingest DICOM") as bar:
        for batch in batched(dicoms, settings.ingest_batch_size):
            new.update(ingest_dicom_batch(batch))
            bar.update(len(batch))

    # 3. DEXA rows, row by row with validation; 4. femoral-neck boxes
    new.update({f"dexa_{k}": v for k, v in ingest_dexa_files(csvs, column_map_file).items()})
    new.update({f"ann_{k}": v for k, v in ingest_annotation_files(xmls).items()})

    # 5. pair X-rays with DEXA exams and label them (sql/pair_xray_dexa.sql)
    pairing = pair_and_label()

    # 6. export labelled PNGs of the annotated femoral neck, in batches
    todo = plan_exports()
    with _bar(len(todo), "export PNG") as bar:
        batches = batched(todo, settings.export_batch_size)
        futures = [export_batch.submit(batch) for batch in batches]
        for batch, future in zip(batches, futures):
            new.update({f"export_{k}": v for k, v in future.result().items()})
            bar.update(len(batch))

    # 7. report
    state = summarise_refresh()
    counts = {
        "files_seen": len(dicoms) + len(csvs) + len(xmls),
        "ingested": new["images"] + new["dexa_exams"] + new["ann_annotations"],
        **state,
        "new": {
            "images": new["images"],
            "dexa_exams": new["dexa_exams"],
            "annotations": new["ann_annotations"] + new["ann_annotations_updated"],
            "pairs": pairing.get("new", 0),
            "pairs_changed": pairing.get("changed", 0),
            "pngs": new["export_exported"],
            "excluded": new["export_excluded"],
            "quarantined": new["quarantined"] + new["dexa_quarantined"] + new["ann_quarantined"]
            + new["export_quarantined"],
        },
    }
    counts["new_rows"] = sum(v for k, v in counts["new"].items() if k != "pngs")
    counts["new_files"] = counts["new"]["pngs"]
    create_table_artifact(
        key="refresh-counts",
        table=[{"count": k, "value": v} for k, v in counts.items() if isinstance(v, int)]
        + [{"count": f"quarantined: {k}", "value": v} for k, v in counts["quarantined"].items()],
        description="Counts of this refresh (totals in the database, and what this run added)",
    )
    from tasks.context import session_factory

    create_table_artifact(
        key="refresh-quarantine",
        table=quarantine_table(session_factory()) or [{"stage": "-", "reason": "nothing quarantined", "count": 0}],
        description="Quarantined inputs by stage and reason (totals in the database)",
    )
    return counts
