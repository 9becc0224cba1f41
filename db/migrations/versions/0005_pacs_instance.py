"""pacs_instance: each instance `osteo pacs pull` retrieved or `osteo pacs receive` was sent, by UID, with its
transport (a closed value), path in the inbox and time (issue 27). No patient data.

A new table only: no row of an earlier release changes.

Revision ID: 0005
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0006"
branch_labels = None
depends_on = None

TRANSPORTS = ("dicomweb", "dimse", "c-store")  # frozen here (db/values.py may widen it in a later revision)


def upgrade() -> None:
    op.create_table(
        "pacs_instance",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("retrieved_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(f"transport IN ({', '.join(repr(v) for v in TRANSPORTS)})",
                           name="ck_pacs_instance_transport"))
    op.create_index("ix_pacs_instance_series_instance_uid", "pacs_instance", ["series_instance_uid"])
    op.create_index("ix_pacs_instance_retrieved_at", "pacs_instance", ["retrieved_at"])


def downgrade() -> None:
    op.drop_index("ix_pacs_instance_retrieved_at", table_name="pacs_instance")
    op.drop_index("ix_pacs_instance_series_instance_uid", table_name="pacs_instance")
    op.drop_table("pacs_instance")
