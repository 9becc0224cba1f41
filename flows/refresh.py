"""Nightly refresh: ingest -> pair and label -> locate -> export labelled femoral-neck PNGs -> report."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from functools import partial, reduce
from operator import add
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact
from tqdm import tqdm

from flows.runner import SettingsTaskRunner
from osteo.ingest.discovery import batches, discover, walk
from osteo.ingest.lock import assert_still_held, refresh_lock
from osteo.ingest.options import RefreshOptions
from osteo.ingest.quarantine import quarantined_files
from osteo.ingest.refresh import fail_refresh_run, quarantine_table
from osteo.ingest.report import ExportCounts, RefreshReport, StageCounts, ThisRun
from osteo.ingest.sweep import sweep_partial_files
from osteo.settings import get_settings, session_factory
from osteo_common.chunks import batched
from tasks.refresh import (
    export_batch,
    finish_refresh_run,
    ingest_annotation_files,
    ingest_dexa_files,
    ingest_dicom_batch,
    pair_and_label,
    plan_exports,
    start_refresh_run,
)
from tasks.roi import locate_boxes


# export batches are submitted: one thread here (each batch has its own process pool), separate
# Dask workers when OSTEO_DASK_ADDRESS is set (flows/runner.py)
@flow(name="nightly-refresh", log_prints=False, task_runner=SettingsTaskRunner(threads=1))
def refresh_flow(options: RefreshOptions) -> RefreshReport:
    """The folders and choices of this refresh, one typed object (Prefect validates it: an unknown or
    wrongly typed field is refused before the run starts)."""
    settings = get_settings()
    # one refresh at a time on this database and export folder, across worker machines (a database
    # lock on PostgreSQL and Oracle); a second is refused at once
    with refresh_lock(settings) as held:
        sweep_partial_files(Path(settings.data_dir) / "export")  # half-written PNGs of a killed run
        refresh_id = start_refresh_run(options.inputs())
        still_held = partial(assert_still_held, held)  # a lost database lock stops the run before its next write
        try:
            dicoms = walk(options.dicom_dir, threads=settings.io_threads)  # streamed; folders checked now
            csvs = discover(options.dexa_dir)  # every file: one we cannot read is quarantined, never ignored
            xmls = discover(options.annotations_dir, (".xml",)) if options.annotations_dir else []
            dicom, n_dicoms = _ingest_dicoms(dicoms, settings.ingest_batch_size, still_held, options)
            still_held()
            dexa = ingest_dexa_files(csvs, options)  # through the column map; quarantined: judged again
            still_held()
            # quarantined box files judged again too; the map names their images: hip_0012.xml -> UID
            boxes = ingest_annotation_files(xmls, options)
            still_held()
            pairing = pair_and_label()  # sql/pair_xray_dexa.sql
            still_held()
            located = locate_boxes()  # the champion localiser on paired image sides without a person's box
            still_held()
            futures = [export_batch.submit(b) for b in batched(plan_exports(), settings.export_batch_size)]
            export = _sum(_results(futures), ExportCounts())
            still_held()
            this_run = ThisRun(n_dicoms + len(csvs) + len(xmls), dicom, dexa, boxes, pairing, export, located)
            report = finish_refresh_run(refresh_id, this_run)
        except Exception as exc:
            _record_failure(settings, refresh_id, exc)
            raise
    _publish(report, settings)
    return report


def _ingest_dicoms(paths: Iterator[str], batch_size: int, still_held: Callable[[], None],
                   options: RefreshOptions) -> tuple[StageCounts, int]:
    """The DICOM ingest, one task run a batch, each batch handed over as the walk finds it. Discovery
    is a plain generator here in the flow, not a task: a task's result would be the whole list, and a
    million-file tree would be in memory before the first file is read. DICOM files often carry no
    suffix: every file is a candidate. Returns the counts and the files walked (counted as they stream)."""
    dicom, walked = StageCounts(), 0
    with _files_bar("ingest") as bar:
        for b in batches(paths, batch_size):
            still_held()
            dicom = dicom + ingest_dicom_batch(b, options)
            walked += len(b)
            bar.update(len(b))
            bar.set_postfix(unchanged=dicom.unchanged, read=dicom.files - dicom.unchanged, refresh=False)
    return dicom, walked


ARTIFACT_FILES = 1000  # quarantined files named in the artifact; `osteo quarantine` lists them all


def _sum(parts: list, empty):
    return reduce(add, parts, empty)


def _results(futures: list) -> list:
    """Every batch's result; on a failure, the other batches still end before the error leaves the
    lock's block, so that none of them writes after the lock is released."""
    try:
        return [f.result() for f in _bar(futures, "export")]
    finally:
        for f in futures:
            f.wait()


def _record_failure(settings, refresh_id: int, exc: Exception) -> None:
    """The refresh_run row says 'failed' and why; best effort: the database may be what failed (the
    row then stays 'running', as after a kill)."""
    try:
        fail_refresh_run(session_factory(settings), refresh_id, exc)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


def _bar(items: list, desc: str) -> tqdm:
    """Progress by batch on a terminal; silent in logs and tests."""
    return tqdm(items, desc=desc, unit="batch", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)


def _files_bar(desc: str) -> tqdm:
    """Files walked (no total: the walk streams), with how many were unchanged and how many read."""
    return tqdm(desc=desc, unit="file", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)


def _publish(report: RefreshReport, settings) -> None:
    create_table_artifact(key="refresh-counts", table=report.table(),
                          description="This refresh beside the database's totals")
    factory = session_factory(settings)
    totals = [{**row, "path": "(all)"} for row in quarantine_table(factory)]
    files = [{**row, "count": ""} for row in quarantined_files(factory)]
    if len(files) > ARTIFACT_FILES:
        files = files[:ARTIFACT_FILES] + [{"stage": "-", "reason": "-", "count": "",
                                           "path": f"... {len(files) - ARTIFACT_FILES} more: osteo quarantine"}]
    create_table_artifact(
        key="refresh-quarantine",
        table=totals + files or [{"stage": "-", "reason": "nothing quarantined", "count": 0, "path": "-"}],
        description="Active quarantine entries by stage and reason, then each quarantined file (no details: "
                    "`osteo quarantine` has them)")
