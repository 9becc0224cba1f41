"""Orchestration: the refresh through Prefect (flows.refresh.refresh_flow) against the same plain
functions called directly (bench.plain_refresh), each on a fresh database over the same files.
The Prefect server start (ephemeral mode: a local server subprocess) is measured separately by a
no-op flow run first, and is excluded from the refresh row."""

from __future__ import annotations

import os
from pathlib import Path

from bench.common import isolated_home, row, target, timed


def _warm(folder: str) -> None:
    for p in Path(folder).rglob("*"):
        if p.is_file():
            p.read_bytes()


def _warm_pool() -> None:
    """Start the shared worker processes before either side is timed: whichever ran first would
    otherwise pay their start for both."""
    from osteo.etl.pool import shared_pool
    from osteo.settings import get_settings

    workers = get_settings().workers
    if workers > 1:
        list(shared_pool(workers).map(abs, range(4 * workers)))


def run(dicom_dir: str, dexa_dir: str, ann_dir: str, tmp: Path, n_files: int) -> list[dict]:
    _warm(dicom_dir)
    _warm_pool()
    with isolated_home(tmp / "orch-plain"):
        from bench.plain_refresh import refresh_direct

        t_plain, plain_counts = timed(lambda: refresh_direct(dicom_dir, dexa_dir, ann_dir))

    from osteo.runtime import configure_environment
    from osteo.settings import get_settings

    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    configure_environment(get_settings())
    from flows.probe import noop_flow as noop

    t_start, _ = timed(noop)  # the first flow call starts the ephemeral server
    t_noop, _ = timed(noop)
    with isolated_home(tmp / "orch-prefect"):
        from flows.refresh import refresh_flow

        t_flow, flow_counts = timed(lambda: refresh_flow(dicom_dir=dicom_dir, dexa_dir=dexa_dir,
                                                          annotations_dir=ann_dir))
    same = plain_counts.this_run == flow_counts.this_run and plain_counts.totals == flow_counts.totals
    t = plain_counts.totals
    work = f"{n_files} DICOM files ({t.images} images, {t.pairs} pairs, {t.exported} PNGs)"
    api = os.environ.get("PREFECT_API_URL") or "ephemeral"
    return [
        row("refresh through Prefect vs direct", stage="orchestration", ours=t_flow, baseline=t_plain, unit="s",
            work=work, goal=target("ratio", "<=", 1.05), same_result=same, prefect_api=api,
            note="server start excluded (next row); same inputs, fresh database each"),
        row("Prefect server start + first flow", stage="orchestration", ours=t_start, baseline=t_noop, unit="s",
            work="one no-op flow run", prefect_api=api,
            note="first no-op flow (starts the ephemeral server) vs a second no-op flow; paid once per process"),
    ]
