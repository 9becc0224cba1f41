"""Chunking in one place: batches of work and bounded IN lists."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

# Oracle allows at most 1000 expressions in an IN list
IN_CHUNK = 500


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of at most `size`, cut as the items stream in (a walk of a million files is never a list)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def batched(items: Iterable[T], size: int) -> list[list[T]]:
    """`items` cut into lists of at most `size` (the last may be shorter)."""
    return list(batches(items, size))


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """Lazy slices of at most `size`, for IN lists that a database bounds."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
