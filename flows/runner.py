"""The flows' task runner, chosen when a flow run starts (not when the module is imported).

`SettingsTaskRunner` is what the flows' decorators hold; Prefect asks it for a copy when a flow
run starts (`duplicate()`), and that is when the settings are read: a Dask scheduler address
(OSTEO_DASK_ADDRESS) gives a DaskTaskRunner on that cluster, anything else a thread pool.
"""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from osteo.settings import Settings, get_settings


def make_task_runner(settings: Settings, threads: int = 1) -> TaskRunner:
    """DaskTaskRunner on the scheduler at settings.dask_address, else a pool of `threads` threads."""
    if settings.dask_address:
        from prefect_dask import DaskTaskRunner  # only when asked: it loads dask.distributed

        return DaskTaskRunner(address=settings.dask_address)
    return ThreadPoolTaskRunner(max_workers=max(1, threads))


class SettingsTaskRunner(TaskRunner):
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
