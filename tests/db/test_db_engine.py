"""Schema creation: an empty database is made through the migrations; one not at head is refused in words."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text


def test_create_schema_is_idempotent(engine):
    from db import create_schema
    from db.migrate import head, schema_state

    create_schema(engine)
    create_schema(engine)
    assert {"source_file", "training_run", "refresh_run"} <= set(inspect(engine).get_table_names())
    assert schema_state(engine).current == head()


def test_a_database_made_before_migrations_is_refused_naming_the_upgrade(tmp_path):
    from db import make_engine
    from db.engine import SchemaOutdated, create_schema

    eng = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    with eng.begin() as conn:  # refresh_run as an earlier release made it, with no version table
        conn.execute(text("CREATE TABLE refresh_run (id INTEGER PRIMARY KEY, started_at DATETIME, "
                          "finished_at DATETIME, counts JSON)"))
    with pytest.raises(SchemaOutdated, match="before schema migrations.*osteo db upgrade"):
        create_schema(eng)


def test_the_command_line_says_so_in_one_line(tmp_path, capsys):
    from db import make_engine
    from osteo_cli.main import main
    from tests.helpers import isolated_settings

    with isolated_settings(tmp_path) as settings:
        with make_engine(settings.resolved_database_url()).begin() as conn:
            conn.execute(text("CREATE TABLE training_run (id INTEGER PRIMARY KEY, snapshot_id INTEGER)"))
        assert main(["lineage", "patient", "x" * 16, "--json"]) == 2
    out = capsys.readouterr().out
    assert '"reason": "database_outdated"' in out and "osteo db upgrade" in out and len(out.splitlines()) == 1
