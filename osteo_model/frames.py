"""Reading pandas tables row by row, typed for the checker (pandas types itertuples' rows as plain tuples)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd


def named_rows(table: pd.DataFrame) -> Iterator[Any]:
    """The table's rows as namedtuples of its columns (no index field)."""
    return table.itertuples(index=False)
