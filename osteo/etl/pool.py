"""One process pool per worker count, kept for the life of the process.

Starting a pool costs seconds (a forkserver, then imports in every worker); a refresh runs
many batches, so they share one. forkserver, because the caller may be a threaded Prefect
worker, where a plain fork is unsafe. pydicom is kept quiet inside the functions the workers run
(osteo/etl/quiet.py: dicom_headers.read_one, imaging.export_roi), so a worker needs no set-up for it
(tests/fuzz/test_quiet_workers.py runs them with every warning shown).
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

_POOLS: dict[int, ProcessPoolExecutor] = {}
_LOCK = threading.Lock()
PRELOAD = ["osteo.etl.dicom_headers", "osteo.etl.imaging"]


def shared_pool(workers: int) -> ProcessPoolExecutor:
    with _LOCK:
        pool = _POOLS.get(workers)
        if pool is None or getattr(pool, "_broken", False):  # a crashed worker breaks a pool for good
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            pool = _POOLS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        return pool


def shutdown_pools() -> None:
    with _LOCK:
        for pool in _POOLS.values():
            pool.shutdown(wait=True, cancel_futures=True)
        _POOLS.clear()


atexit.register(shutdown_pools)
