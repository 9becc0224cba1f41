"""Closed values: CHECK constraints on source_file.status, quarantine.stage, export.status, annotation.source
and prediction_audit.box_source (issue 25).

Rows outside a set are reported first, every column at once, and nothing is changed: a revision half
applied on a database whose DDL commits as it goes (SQLite, Oracle) would be worse than a refusal. In
offline mode (`osteo db upgrade --sql`) the database cannot be asked: Oracle refuses the ALTER with
ORA-02293 while such a row exists.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import context, op

from db.migrate import MigrationRefused

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# the sets as this revision makes them, frozen here (db/values.py may widen them in a later revision)
CHECKS = {
    ("source_file", "status"): ("ingested", "quarantined", "out_of_scope", "waiting", "superseded"),
    ("quarantine", "stage"): ("ingest_dicom", "ingest_dexa", "ingest_annotation", "locate", "export"),
    ("export", "status"): ("exported", "excluded"),
    ("annotation", "source"): ("human", "model"),
    ("prediction_audit", "box_source"): ("user", "model", "image"),
}


def outside(bind) -> list[str]:
    found = []
    for (table, column), values in CHECKS.items():
        col = sa.column(column)
        query = sa.select(col, sa.func.count()).select_from(sa.table(table, col)).where(
            sa.or_(col.not_in(values), col.is_(None))).group_by(col).order_by(col)
        found += [f"{table}.{column} {value!r} ({n} rows)" for value, n in bind.execute(query)]
    return found


def upgrade() -> None:
    if not context.is_offline_mode():
        found = outside(op.get_bind())
        if found:
            raise MigrationRefused(f"revision 0003 changed nothing: rows hold values outside their closed sets: "
                                   f"{'; '.join(found)}. Correct those rows (they are not values any osteo writes), "
                                   "then run `osteo db upgrade` again")
    for (table, column), values in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            batch.create_check_constraint(f"ck_{table}_{column}",
                                          f"{column} IN ({', '.join(repr(v) for v in values)})")


def downgrade() -> None:
    for table, column in CHECKS:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"ck_{table}_{column}", type_="check")
