"""Chunking in one place: batches of work and bounded IN lists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# Oracle allows at most 1000 expressions in an IN list
IN_CHUNK = 500


def batched(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` cut into lists of at most `size` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """Lazy slices of at most `size`, for IN lists that a database bounds."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
