"""Screening: the champion on every in-scope hip image it has not screened -> results -> SR and SC to the PACS."""

from __future__ import annotations

import sys
from functools import reduce
from operator import add

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from tqdm import tqdm

from flows.runner import SettingsTaskRunner
from osteo.pacs.target import PacsUnavailable
from osteo.screening.report import PushCounts, ScreenCounts, ScreenReport
from osteo.settings import get_settings
from osteo_common.chunks import batched
from tasks.screen import find_champion, plan_screening, push_results, screen_batch


# batches are submitted: one thread here (ONNX Runtime uses the cores itself), separate Dask workers when
# OSTEO_DASK_ADDRESS is set (flows/runner.py), each loading the champion once
@flow(name="screen", log_prints=False, task_runner=SettingsTaskRunner(threads=1))
def screen_flow(rescreen: bool = False, push: str | None = None) -> ScreenReport:
    """rescreen: every image again (by default only those the champion has no result for); push: positive | all |
    none (default OSTEO_SCREEN_PUSH). Without a champion, nothing is done."""
    settings = get_settings()
    champion = find_champion()
    if champion is None:
        return ScreenReport(champion=None)
    todo, already = plan_screening(champion, rescreen)
    batches = list(batched(todo, settings.screen_batch_size))
    futures = [screen_batch.submit(champion, b) for b in batches]
    counts = reduce(add, _results(futures, [len(b) for b in batches]), ScreenCounts())
    pushed = push_or_warn(champion, push or settings.screen_push)
    card = champion.to_dict()
    report = ScreenReport(card, counts, already, rescreen, pushed)
    create_table_artifact(key="screening-counts", table=report.table(),
                          description=f"What {card['model']} screened and pushed this run")
    return report


def push_or_warn(champion, mode: str) -> PushCounts:
    """The push; a PACS still down after the task's retries is a warning (the results are recorded, the next run
    pushes them), so that the nightly goes on to its training. Any other fault fails."""
    state = push_results(champion, mode, return_state=True)
    try:
        return state.result()
    except PacsUnavailable as exc:
        get_run_logger().warning("screening push: %s; the next run pushes what this one could not", exc)
        return PushCounts(mode=mode, errors=(f"PACS unavailable: {exc}",))


def _results(futures: list, sizes: list[int]) -> list[ScreenCounts]:
    """Every batch's counts, with a bar of images on a terminal; on a failure the other batches still end."""
    bar = tqdm(total=sum(sizes), desc="screen", unit="image", file=sys.stderr, disable=not sys.stderr.isatty(),
               leave=False)
    try:
        out = []
        for f, n in zip(futures, sizes, strict=True):
            out.append(f.result())
            bar.update(n)
        return out
    finally:
        bar.close()
        for f in futures:
            f.wait()
