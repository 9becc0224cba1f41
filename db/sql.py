"""Named SQL from sql/: `name.sql`, or `name.<dialect>.sql` beside it where one database needs its own."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import TextClause, text

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@lru_cache(maxsize=64)
def sql_path(name: str, dialect: str) -> Path:
    override = SQL_DIR / f"{name}.{dialect}.sql"
    return override if override.exists() else SQL_DIR / f"{name}.sql"


def load_sql(name: str, dialect: str) -> TextClause:
    return text(sql_path(name, dialect).read_text(encoding="utf-8"))
