"""Rows, timers, machine description and the isolated working home of one bench run."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of `repeats` runs: on a shared, noisy machine the minimum is the least disturbed."""
    return min(timed(fn)[0] for _ in range(max(1, repeats)))


def percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def target(on: str, op: str, value: float) -> dict[str, Any]:
    """A goal on the row's `ratio` (ours / baseline) or on `ours` itself."""
    return {"on": on, "op": op, "value": value, "text": f"{on} {op} {value:g}"}


def row(name: str, *, stage: str, ours: float | None, baseline: float | None, unit: str, work: str,
        goal: dict[str, Any] | None = None, note: str = "", **extra: Any) -> dict[str, Any]:
    """One bench row. ratio = ours / baseline in the row's unit: for a rate (files/s, images/s)
    higher is better, for a time (s, ms) lower is better; the target says which way it must go.
    status: PASS/MISS against the target, INFO where the issue sets no target."""
    ratio = (ours / baseline) if (baseline not in (None, 0) and ours is not None) else None
    status = "INFO"
    if goal is not None:
        value = ratio if goal["on"] == "ratio" else ours
        if value is None or (isinstance(value, float) and math.isnan(value)):
            status = "MISS"
        else:
            status = "PASS" if (value >= goal["value"] if goal["op"] == ">=" else value <= goal["value"]) else "MISS"
    return {"name": name, "stage": stage, "ours": _r(ours), "baseline": _r(baseline),
            "ratio": _r(ratio), "unit": unit, "work": work,
            "target": goal["text"] if goal else None, "status": status, "note": note, **extra}


def _r(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return v
    return round(v, max(3, 3 - int(math.floor(math.log10(abs(v))))))


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def machine_info() -> dict[str, Any]:
    import numpy
    import pydicom
    import sqlalchemy
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    cuda = torch.cuda.is_available()
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": cores(),
        "memory_gib": mem_gib,
        "load_average_start": load_average(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "numpy": numpy.__version__,
        "pydicom": pydicom.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


@contextmanager
def isolated_home(home: Path):
    """Every store of the settings (database, data, MLflow, Prefect) inside `home`, restored after."""
    from osteo.settings import settings_from

    env: dict[str, str | None] = {
        "OSTEO_VAR_DIR": str(home / "var"),
        "OSTEO_DATA_DIR": str(home / "data"),
        "OSTEO_DATABASE_URL": f"sqlite:///{home / 'var' / 'osteo.sqlite'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "OSTEO_MLFLOW_ARTIFACT_ROOT": str(home / "artifacts"),
        "OSTEO_PSEUDONYM_KEY": "osteo-bench-key",
    }
    try:
        with settings_from(env) as settings:
            yield settings
    finally:
        _forget_session_factories()


def _forget_session_factories() -> None:
    mod = sys.modules.get("db.session")
    if mod is not None:
        mod._factory.cache_clear()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")
