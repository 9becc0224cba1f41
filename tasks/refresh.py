"""Refresh tasks: batches of paths or ids in, small count dicts out."""

from __future__ import annotations

from prefect import task

from osteo import refresh
from osteo.etl.dexa import load_mapping
from osteo.settings import get_settings
from tasks.context import ensure_schema, session_factory, transient_only

RETRY = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=transient_only)
# No task tags here: Prefect 3.8 makes a blocking API call per tagged task run to take tag
# concurrency slots (even when no limit exists), ~0.3 s each while the ingest workers hold both
# cores: 6.2 s of a 10 s flow over 1k files that took 1.9 s called directly (docs/performance.md). The flow runs
# are tagged by their deployment, and one refresh at a time is the deployment's limit.


@task(name="prepare-database", **RETRY)
def prepare_database() -> None:
    ensure_schema()


@task(name="discover-files")
def discover_files(root: str | None, suffixes: tuple[str, ...] | None = None) -> list[str]:
    return refresh.discover(root, suffixes)


@task(name="ingest-dicom-headers", **RETRY)
def ingest_dicom_batch(paths: list[str]) -> dict:
    s = get_settings()
    return dict(refresh.ingest_dicom(session_factory(), paths, s.resolved_pseudonym_key(), workers=s.workers))


@task(name="ingest-dexa", **RETRY)
def ingest_dexa_files(paths: list[str], mapping_file: str | None = None) -> dict:
    s = get_settings()
    mapping = load_mapping(mapping_file) if mapping_file else None
    return dict(refresh.ingest_dexa(session_factory(), paths, s.resolved_pseudonym_key(), s, mapping))


@task(name="ingest-annotations", **RETRY)
def ingest_annotation_files(paths: list[str]) -> dict:
    return dict(refresh.ingest_annotations(session_factory(), paths))


@task(name="pair-and-label", **RETRY)
def pair_and_label() -> dict:
    from db.pairing import sync_pairs

    s = get_settings()
    with session_factory()() as session, session.begin():
        return dict(sync_pairs(session, window_days=s.pair_window_days, osteoporosis_t=s.osteoporosis_t,
                               normal_t=s.normal_t))


@task(name="plan-exports", **RETRY)
def plan_exports() -> list[int]:
    return refresh.plan_exports(session_factory(), get_settings())


@task(name="export-pngs", **RETRY)
def export_batch(image_ids: list[int]) -> dict:
    s = get_settings()
    return dict(refresh.export_images(session_factory(), image_ids, s, workers=s.workers))


@task(name="summarise-refresh", **RETRY)
def summarise_refresh() -> dict:
    return refresh.summarise(session_factory())
