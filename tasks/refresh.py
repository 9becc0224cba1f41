"""Refresh tasks: a decorator and one call each; batches of paths or ids in, small typed counts out."""

from __future__ import annotations

from prefect import task

from osteo.etl.annotations import load_annotation_map
from osteo.etl.dexa import load_mapping
from osteo.ingest import refresh
from osteo.ingest.options import RefreshOptions
from osteo.ingest.report import ExportCounts, PairCounts, RefreshReport, StageCounts, ThisRun
from osteo.settings import get_settings, session_factory
from tasks.policy import RETRY

# No task tags here: Prefect 3.8 makes a blocking API call per tagged task run to take tag
# concurrency slots (even when no limit exists), ~0.3 s each while the ingest workers hold both
# cores: 6.2 s of a 10 s flow over 1k files that took 1.9 s called directly (docs/performance.md).
# The flow runs are tagged by their deployment, and one refresh at a time is the deployment's limit.


@task(name="start-refresh-run", **RETRY)
def start_refresh_run(inputs: dict[str, str | bool | None]) -> int:
    return refresh.start_refresh_run(session_factory(get_settings(), create=True), inputs)


# No discovery task: the flow walks the folders itself (osteo.ingest.discovery.walk, a generator) and hands
# each batch of paths to the ingest as it is found; a task would have to return the whole list.


@task(name="ingest-dicom-headers", **RETRY)
def ingest_dicom_batch(paths: list[str], options: RefreshOptions) -> StageCounts:
    s = get_settings()
    return refresh.ingest_dicom(session_factory(s), paths, s.resolved_pseudonym_key(), workers=s.workers,
                                scope=s.scope_rules(), retry_quarantined=options.retry_quarantined,
                                rehash=options.rehash, io_threads=s.io_threads)


@task(name="ingest-dexa", **RETRY)
def ingest_dexa_files(paths: list[str], options: RefreshOptions) -> StageCounts:
    s = get_settings()
    return refresh.ingest_dexa(session_factory(s), paths, s.resolved_pseudonym_key(), s,
                               load_mapping(options.column_map_file), retry_quarantined=options.retry_quarantined,
                               rehash=options.rehash)


@task(name="ingest-annotations", **RETRY)
def ingest_annotation_files(paths: list[str], options: RefreshOptions) -> StageCounts:
    return refresh.ingest_annotations(session_factory(get_settings()), paths,
                                      retry_quarantined=options.retry_quarantined,
                                      mapping=load_annotation_map(options.annotation_map_file), rehash=options.rehash)


@task(name="pair-and-label", **RETRY)
def pair_and_label() -> PairCounts:
    s = get_settings()
    return refresh.pair_and_label(session_factory(s), s)


@task(name="plan-exports", **RETRY)
def plan_exports() -> list[int]:
    s = get_settings()
    return refresh.plan_exports(session_factory(s), s)


@task(name="export-pngs", **RETRY)
def export_batch(box_ids: list[int]) -> ExportCounts:
    s = get_settings()
    return refresh.export_images(session_factory(s), box_ids, s, workers=s.workers)


@task(name="finish-refresh-run", **RETRY)
def finish_refresh_run(refresh_id: int, this_run: ThisRun) -> RefreshReport:
    s = get_settings()
    return refresh.finish_refresh_run(session_factory(s), refresh_id, this_run, s.roi_min_confidence)
