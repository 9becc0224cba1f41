"""The one retry policy of every task that retries: transient faults only, with backoff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

from sqlalchemy.exc import DisconnectionError, OperationalError

TRANSIENT = (OperationalError, DisconnectionError, TimeoutError, ConnectionError, BlockingIOError)


def transient_only(task, task_run, state) -> bool:
    """Retry a dropped connection or a briefly unreadable file, never bad input (that is quarantined)."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception:  # noqa: BLE001 - anything else is a bug or bad input: fail now
        return False
    return False


class RetryOptions(TypedDict):
    """`@task(**RETRY)`'s keywords, typed so that the checker matches each to Prefect's parameter."""

    retries: int
    retry_delay_seconds: list[float]
    retry_jitter_factor: float
    retry_condition_fn: Callable[[Any, Any, Any], bool]


# 2 s, 10 s, 30 s, each +-20 % jitter, on transient faults only
RETRY: RetryOptions = {"retries": 3, "retry_delay_seconds": [2, 10, 30], "retry_jitter_factor": 0.2,
                       "retry_condition_fn": transient_only}
