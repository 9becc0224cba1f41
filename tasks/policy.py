"""The one retry policy of every task that retries: transient faults only, with backoff."""

from __future__ import annotations

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


# 2 s, 10 s, 30 s, each +-20 % jitter, on transient faults only
RETRY = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_jitter_factor=0.2, retry_condition_fn=transient_only)
