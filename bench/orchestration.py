"""Orchestration: the refresh through Prefect (flows.refresh.refresh_flow) against the same plain
functions called directly (bench.plain_refresh, plus the flow's localiser step), each on a fresh
database over the same files.

Both sides do the same work: the flow's `locate_boxes` asks the MLflow registry for a champion
localiser, so the baseline asks too (bench.plain_refresh has no locate step), and each fresh home's
MLflow store is created before the clock starts (a new SQLite store runs ~60 MLflow migrations, 3-8 s
here: a first-use cost of the store, not of Prefect). The Prefect server start (ephemeral mode: a local
server subprocess) is measured separately by a no-op flow run first, and is excluded from the refresh
row. With `repeats` > 1 the two sides alternate and the fastest of each counts (a shared, noisy machine).
"""

from __future__ import annotations

import os
import time
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


def _locate_direct():
    """The flow's locate step as plain calls (tasks/roi.py locate_boxes without its decorator)."""
    from osteo.ingest.report import LocateCounts
    from osteo.localiser import locate
    from osteo.settings import get_settings, session_factory
    from osteo_mlflow.roi import champion_locator

    s = get_settings()
    locator = champion_locator(s)
    if locator is None:
        return LocateCounts()
    return locate.locate_missing(session_factory(s), locator, workers=s.workers, min_confidence=s.roi_min_confidence)


def _create_mlflow_store() -> None:
    """The fresh home's MLflow store, created (migrated) before timing; its registry has no localiser."""
    from osteo.settings import get_settings
    from osteo_mlflow.roi import champion_locator

    if champion_locator(get_settings()) is not None:  # pragma: no cover - a fresh home has no models
        raise RuntimeError("the bench home has a registered localiser: the sides would differ")


def _plain(dicom_dir: str, dexa_dir: str, ann_dir: str):
    from bench.plain_refresh import refresh_direct

    _locate_direct()  # nothing to locate in a fresh store: the registry look-up is the work
    return refresh_direct(dicom_dir, dexa_dir, ann_dir)


def _server_cpu_s() -> float | None:
    """CPU seconds used so far by this process's Prefect server subprocess (ephemeral mode), if any."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with mlflow
        return None
    total, found = 0.0, False
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            if "uvicorn" in cmd or "prefect" in cmd:
                t = child.cpu_times()
                total, found = total + t.user + t.system, True
        except psutil.Error:
            continue
    return total if found else None


def run(dicom_dir: str, dexa_dir: str, ann_dir: str, tmp: Path, n_files: int, repeats: int = 1) -> list[dict]:
    _warm(dicom_dir)
    _warm_pool()
    from osteo.runtime import configure_environment
    from osteo.settings import get_settings

    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    reused = configure_environment(get_settings())
    from flows.probe import noop_flow as noop
    from flows.refresh import refresh_flow
    from flows.runner import in_process_runs
    from osteo.ingest.options import RefreshOptions

    with in_process_runs():
        t_start, _ = timed(noop)  # the first flow call starts the ephemeral server (or finds the local one)
        t_noop, _ = timed(noop)

    plain_times, flow_times, server_cpu = [], [], []
    plain_counts = flow_counts = None
    for i in range(max(1, repeats)):
        tag = f"{i}-{time.time_ns()}"
        with isolated_home(tmp / f"orch-plain-{tag}"):
            _create_mlflow_store()
            t, plain_counts = timed(lambda: _plain(dicom_dir, dexa_dir, ann_dir))
            plain_times.append(t)
        with isolated_home(tmp / f"orch-prefect-{tag}"):
            _create_mlflow_store()
            cpu0 = _server_cpu_s()
            with in_process_runs():  # as `osteo refresh` calls it
                options = RefreshOptions(dicom_dir=dicom_dir, dexa_dir=dexa_dir, annotations_dir=ann_dir)
                t, flow_counts = timed(lambda: refresh_flow(options=options))
            cpu1 = _server_cpu_s()
            flow_times.append(t)
            if cpu0 is not None and cpu1 is not None:
                server_cpu.append(cpu1 - cpu0)
    t_plain, t_flow = min(plain_times), min(flow_times)
    assert plain_counts is not None and flow_counts is not None  # repeats >= 1
    same = plain_counts.this_run == flow_counts.this_run and plain_counts.totals == flow_counts.totals
    t = plain_counts.totals
    work = f"{n_files} DICOM files ({t.images} images, {t.pairs} pairs, {t.exported} PNGs)"
    api = os.environ.get("PREFECT_API_URL") or "ephemeral"
    extra = {"prefect_api": api, "runs": {"plain_s": [round(x, 2) for x in plain_times],
                                          "flow_s": [round(x, 2) for x in flow_times]},
             "server_cpu_s": round(min(server_cpu), 2) if server_cpu else None}
    return [
        row("refresh through Prefect vs direct", stage="orchestration", ours=t_flow, baseline=t_plain, unit="s",
            work=work, goal=target("ratio", "<=", 1.05), same_result=same, **extra,
            note=f"server start excluded (next row); same inputs and steps, fresh database each; fastest of "
                 f"{len(flow_times)} alternating runs; server_cpu_s: the Prefect server's CPU during the flow"),
        row("Prefect server start + first flow", stage="orchestration", ours=t_start, baseline=t_noop, unit="s",
            work="one no-op flow run", prefect_api=api, reused_local_server=bool(reused),
            note="first no-op flow (starts the ephemeral server) vs a second no-op flow; paid once per process"),
    ]

