from __future__ import annotations

import pytest

from tests.db.migration_support import fresh_pg_schema


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """An empty database: a SQLite file, or a new schema on the PostgreSQL server (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'var' / 'osteo.sqlite'}"
        return
    with fresh_pg_schema("mig") as url:
        yield url
