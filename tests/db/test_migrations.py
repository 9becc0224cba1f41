"""Schema migrations (db/migrate.py): the models and the revisions agree; 0001 is exactly the release before
(82910aa); a database that release made and filled upgrades with every row kept, and goes down one
revision and up again unchanged; the DDL for Oracle compiles offline."""

from __future__ import annotations

import re

import pytest
import sqlglot

from tests.db.migration_support import (
    columns_of,
    create_with_old_release,
    extract_old_release,
    fill_with_old_release,
    fresh_pg_schema,
    schema_dump,
    table_contents,
)


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory):
    return extract_old_release(tmp_path_factory.mktemp("old-release"))


def test_the_models_and_the_migrations_agree(engine):
    """The conftest's engine (SQLite, PostgreSQL) was made by the migrations: Alembic's compare finds nothing."""
    from db.migrate import drift, head, schema_state

    assert schema_state(engine).current == head()
    assert drift(engine) == []


def test_drift_is_found(tmp_path):
    """The check can fail: a column the models do not have is reported."""
    from sqlalchemy import text

    from db import create_schema, make_engine
    from db.migrate import drift

    eng = make_engine(f"sqlite:///{tmp_path / 'osteo.sqlite'}")
    create_schema(eng)
    with eng.begin() as conn:
        conn.execute(text("ALTER TABLE patient ADD COLUMN nickname VARCHAR(20)"))
    assert any("nickname" in d for d in drift(eng))


def test_the_first_revision_is_the_old_release_schema(old_tree, database_url):
    """Revision 0001 gives what 82910aa's create_all gave: every column, type, default, key and index."""
    from db import make_engine
    from db.migrate import run_upgrade

    old_url = database_url.replace("osteo.sqlite", "old.sqlite")
    if old_url == database_url:  # PostgreSQL: the old release in a schema of its own
        with fresh_pg_schema("old") as old_url:
            create_with_old_release(old_tree, old_url)
            old = schema_dump(make_engine(old_url))
    else:
        create_with_old_release(old_tree, old_url)
        old = schema_dump(make_engine(old_url))
    new = make_engine(database_url)
    run_upgrade(new, "0001")
    assert len(old) == 16 and schema_dump(new) == old
    new.dispose()


def test_an_old_release_database_upgrades_keeping_every_row(old_tree, database_url, tmp_path):
    """82910aa made and filled it (a refreshed cohort with quarantine entries, a snapshot, a registered model's
    row, augmented copies, prediction audit): upgraded to head, every table holds the same rows (count and
    digest); down one revision and up again, the same content; the current refresh then runs on it."""
    from sqlalchemy import select

    from db import make_engine, make_session_factory
    from db.engine import SchemaOutdated, create_schema
    from db.migrate import FIRST, downgrade, head, pending_revisions, schema_state, upgrade
    from db.models import DicomImage
    from tests.helpers import isolated_settings, plain_refresh

    home = tmp_path / "home"
    fill_with_old_release(old_tree, home, database_url)
    eng = make_engine(database_url)
    old_columns = columns_of(eng)
    before = table_contents(eng)
    assert len(before) == 16 and all(count > 0 for count, _ in before.values()), before
    assert schema_state(eng).state == "unversioned"
    with pytest.raises(SchemaOutdated, match="osteo db upgrade"):
        create_schema(eng)

    result = upgrade(eng)
    assert (result.stamped, result.applied, result.after) == (FIRST, tuple(pending_revisions(FIRST, "head")), head())
    assert result.applied[:2] == ("0002", "0003")  # every later release's revisions after these
    if eng.dialect.name == "sqlite":  # the copy taken first is the database as it was
        assert result.backup and result.backup.parent == tmp_path / "var"
        assert table_contents(make_engine(f"sqlite:///{result.backup}")) == before
    else:
        assert result.backup is None
    assert table_contents(eng, old_columns) == before
    with eng.connect() as conn:
        assert not any(conn.scalars(select(DicomImage.synthetic)))  # the old rows: not known to be synthetic
    upgraded = table_contents(eng)

    downgrade(eng, "-1")
    assert schema_state(eng).state == "behind" and table_contents(eng, old_columns) == before
    upgrade(eng)
    assert table_contents(eng) == upgraded

    create_schema(eng)  # the entry points' check passes now
    with isolated_settings(home, OSTEO_DATABASE_URL=database_url) as settings:
        plain_refresh(make_session_factory(eng), home / "cohort", settings)  # the same key: the same patients
    after_refresh = table_contents(eng)
    assert after_refresh["patient"] == upgraded["patient"]
    assert after_refresh["dicom_image"][0] == upgraded["dicom_image"][0]
    eng.dispose()


def oracle_statements(sql: str) -> list[str]:
    """The statements of Alembic's Oracle script (each ended by a line holding '/'), comments dropped."""
    parts = (re.sub(r"^\s*--.*$", "", p, flags=re.M).strip() for p in re.split(r"^/$", sql, flags=re.M))
    return [p for p in parts if p]


def test_the_oracle_ddl_compiles_offline():
    """What `osteo db upgrade --sql` gives an Oracle DBA: every table with identity columns, the version
    table, the later revisions' ALTERs; each statement parses as Oracle SQL. No server is connected to."""
    from db.migrate import VERSION_TABLE, first_release_columns, offline_sql
    from db.models import Base

    statements = oracle_statements(offline_sql("oracle+oracledb://scott:tiger@nohost:1/nosvc"))
    created = {m.group(1) for s in statements if (m := re.match(r"CREATE TABLE (\w+)", s))}
    assert created == set(Base.metadata.tables) | {VERSION_TABLE}
    assert any("GENERATED BY DEFAULT AS IDENTITY" in s for s in statements)
    assert "ALTER TABLE dicom_image ADD synthetic" in " ".join(statements)
    assert "ALTER TABLE source_file ADD CONSTRAINT ck_source_file_status CHECK (status IN ('ingested'" in \
        " ".join(statements)
    for statement in statements:
        parsed = sqlglot.parse_one(statement, read="oracle")
        assert not isinstance(parsed, sqlglot.exp.Command), statement

    only_new = oracle_statements(offline_sql("oracle+oracledb://", "0001"))
    recreated = {m.group(1) for s in only_new if (m := re.match(r"CREATE TABLE (\w+)", s))}
    assert not recreated & set(first_release_columns())  # only the tables later revisions add (0004's sign-in)
    assert only_new[0].startswith("ALTER TABLE dicom_image ADD synthetic")


def test_history_runs_oldest_first_from_the_old_release():
    from db.migrate import FIRST, head, history, pending_revisions

    revisions = [r["revision"] for r in history()]
    assert revisions[0] == FIRST and revisions[-1] == head()
    assert pending_revisions(None, "head") == revisions
    assert pending_revisions(FIRST, "head") == revisions[1:]
    assert pending_revisions(head(), "head") == []
