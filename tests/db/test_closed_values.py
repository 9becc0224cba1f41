"""Closed values (db/values.py, migration 0003): the database refuses a status or source outside its set, the
code writes only values of the sets, and the migration reports rows outside them before it changes anything."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import insert, inspect, text
from sqlalchemy.exc import IntegrityError

from db.values import AUDIT_BOX_SOURCES, QUARANTINE_STAGES, SOURCE_STATUSES


def test_the_database_refuses_a_value_outside_the_set(engine):
    from db.models import SourceFile

    row = {"kind": "dicom", "path": "/x.dcm", "sha256": "0" * 64, "size_bytes": 1,
           "first_seen": dt.datetime(2026, 1, 1)}
    with engine.begin() as conn:
        conn.execute(insert(SourceFile), {**row, "status": "waiting"})
    with pytest.raises(IntegrityError, match="ck_source_file_status|CHECK constraint failed"):
        with engine.begin() as conn:
            conn.execute(insert(SourceFile), {**row, "path": "/y.dcm", "status": "lost"})


def test_the_code_writes_the_values_of_the_sets():
    """The constants the pipeline and the service write from are the database's sets."""
    from osteo.ingest.boxes import OUT_OF_SCOPE, WAITING
    from osteo.ingest.quarantine import STAGES
    from osteo_service.screening import BOX_SOURCES

    assert set(STAGES) == set(QUARANTINE_STAGES)
    assert set(BOX_SOURCES) == set(AUDIT_BOX_SOURCES)
    assert {WAITING, OUT_OF_SCOPE} <= set(SOURCE_STATUSES)


def test_rows_outside_the_sets_are_reported_and_nothing_is_changed(database_url):
    """A database at 0002 with an unknown status and stage: the upgrade names both and stops at 0002 with no
    constraint added; once the rows are corrected, it goes through."""
    from db import make_engine
    from db.migrate import MigrationRefused, head, run_upgrade, schema_state, upgrade

    engine = make_engine(database_url)
    run_upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO source_file (kind, path, sha256, size_bytes, first_seen, status) VALUES "
                          "('dicom', '/a.dcm', 'aa', 1, '2026-01-01', 'archived')"))
        conn.execute(text("INSERT INTO quarantine (stage, source_path, source_sha256, source_row, reason, created_at, "
                          "first_seen, last_seen) VALUES ('ingest_xml', '/b.xml', 'bb', 0, 'bad_xml', '2026-01-01', "
                          "'2026-01-01', '2026-01-01')"))
    with pytest.raises(MigrationRefused, match=r"source_file.status 'archived' \(1 rows\); "
                                               r"quarantine.stage 'ingest_xml' \(1 rows\)"):
        upgrade(engine, backup=False)
    assert schema_state(engine).current == "0002"
    assert not inspect(engine).get_check_constraints("source_file")
    with engine.begin() as conn:
        conn.execute(text("UPDATE source_file SET status = 'ingested'"))
        conn.execute(text("UPDATE quarantine SET stage = 'ingest_annotation'"))
    upgrade(engine, backup=False)
    assert schema_state(engine).current == head()
    assert [c["name"] for c in inspect(engine).get_check_constraints("source_file")] == ["ck_source_file_status"]
    engine.dispose()


def test_each_enum_is_the_migrated_databases_set(database_url):
    """Each StrEnum of db/values.py holds exactly the values its column's CHECK constraint allows, as the
    migrations (0003 to head) make it on this database: the code can write no value the database refuses, and
    the database allows none the code does not know."""
    from db import make_engine
    from db.migrate import upgrade
    from db.values import CLOSED_COLUMNS

    engine = make_engine(database_url)
    upgrade(engine, backup=False)
    inspector = inspect(engine)
    found = {}  # every ck_<table>_<column> of the database: its quoted values
    for table in inspector.get_table_names():
        for check in inspector.get_check_constraints(table):
            column = (check["name"] or "").removeprefix(f"ck_{table}_")
            if column != check["name"]:
                found[table, column] = set(re.findall(r"'([^']*)'", check["sqltext"]))
    engine.dispose()
    assert found == {key: {member.value for member in enum} for key, enum in CLOSED_COLUMNS.items()}
