"""The flows' task runner, chosen when a flow run starts (not when the module is imported).

`SettingsTaskRunner` is what the flows' decorators hold; Prefect asks it for a copy when a flow
run starts (`duplicate()`), and that is when the settings are read: a Dask scheduler address
(OSTEO_DASK_ADDRESS) gives a DaskTaskRunner on that cluster, anything else a thread pool.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from osteo.settings import Settings, get_settings


def make_task_runner(settings: Settings, threads: int = 1) -> TaskRunner:
    """DaskTaskRunner on the scheduler at settings.dask_address, else a pool of `threads` threads."""
    if settings.dask_address:
        from prefect_dask.task_runners import DaskTaskRunner  # only when asked: it loads dask.distributed

        return DaskTaskRunner(address=settings.dask_address)
    return ThreadPoolTaskRunner(max_workers=max(1, threads))


class SettingsTaskRunner(TaskRunner[PrefectFuture[Any]]):
    """A placeholder that becomes the settings' task runner when a flow run starts.

    Prefect's flow engine enters `flow.task_runner.duplicate()`; returning the concrete runner
    there means the choice follows the environment of the process that runs the flow (a worker's
    job variables, a test's isolated settings), not the one that imported the module.
    """

    def __init__(self, threads: int = 1):
        super().__init__()
        self.threads = threads

    @property
    def name(self) -> str:
        return "settings"

    def duplicate(self) -> TaskRunner:  # type: ignore[override]
        return make_task_runner(get_settings(), self.threads)

    def submit(self, task, parameters, wait_for=None, dependencies=None):  # pragma: no cover - never entered
        raise RuntimeError("SettingsTaskRunner is resolved by duplicate() when a flow run starts")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SettingsTaskRunner) and other.threads == self.threads

    __hash__ = None  # type: ignore[assignment]


@contextmanager
def in_process_runs() -> Iterator[None]:
    """Flows called in this process (`osteo refresh`, the bench) on an ephemeral server: no heartbeat thread.

    Prefect 3.8 starts a heartbeat thread per flow run (default every 180 s) that sleeps in 1 s steps, and
    joins it when the run ends: up to 1 s per flow run (a no-op flow: 1.15 s, 0.1 s without). Heartbeats let a
    long-lived server mark the runs of a dead worker as crashed; an ephemeral server dies with this process,
    so they tell it nothing. With PREFECT_API_URL set (a real server, or the local one osteo.runtime found)
    they stay on. Prefect's settings take no "off" from the environment (an integer >= 30), hence this block.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
