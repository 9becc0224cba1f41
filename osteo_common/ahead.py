"""Work made ahead on a thread: one helper for every producer/consumer overlap."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def made_ahead(items: Iterable[T], depth: int = 2, *, name: str = "osteo-ahead") -> Generator[T, None, None]:
    """`items`, in order, produced on a thread at most `depth` items ahead of the consumer.

    The producer's work overlaps the consumer's where both release the GIL (NumPy, torch, I/O). An exception in
    the producer is raised here, at the item where it happened; a consumer that stops early (break, error,
    close) stops the producer after the item it is on, and the thread is joined before this returns.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                ready.put((item, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            ready.put((_DONE, exc))
            return
        ready.put((_DONE, None))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, exc = ready.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
