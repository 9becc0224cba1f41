"""Screening (issue 27): screening_result, one row per hip image and classifier version (box, source and
confidence per side, probability, label at the version's threshold, status), and screening_push, each SR and
secondary capture sent back to the PACS; statuses, box sources, kinds and transports as closed values.

New tables only: no row of an earlier release changes.

Revision ID: 0006
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

# the sets as this revision makes them, frozen here (db/values.py may widen them in a later revision)
STATUSES = ("screened", "not_located", "excluded: metal", "excluded: blur", "excluded: unreadable")
BOX_SOURCES = ("human", "model")
KINDS = ("SR", "SC")
TRANSPORTS = ("stow-rs", "c-store")
PUSH_STATUSES = ("pushed", "failed")


def _one_of(table: str, column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    return sa.CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=f"ck_{table}_{column}")


def _side(suffix: str) -> list[sa.Column]:
    return [sa.Column(f"box_{suffix}", sa.JSON(), nullable=True),
            sa.Column(f"box_source_{suffix}", sa.String(8), nullable=True),
            sa.Column(f"confidence_{suffix}", sa.Float(), nullable=True),
            sa.Column(f"probability_{suffix}", sa.Float(), nullable=True)]


def upgrade() -> None:
    op.create_table(
        "screening_result",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("dicom_image.id"), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("localiser_name", sa.String(128), nullable=True),
        sa.Column("localiser_version", sa.String(32), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        *_side("l"), *_side("r"),
        sa.Column("side", sa.String(1), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=True),
        sa.Column("screened_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("image_id", "model_name", "model_version", name="uq_screening_result_version"),
        _one_of("screening_result", "status", STATUSES),
        _one_of("screening_result", "box_source_l", BOX_SOURCES),
        _one_of("screening_result", "box_source_r", BOX_SOURCES))
    op.create_index("ix_screening_result_image_id", "screening_result", ["image_id"])
    op.create_index("ix_screening_result_version", "screening_result", ["model_name", "model_version"])
    op.create_index("ix_screening_result_screened_at", "screening_result", ["screened_at"])
    op.create_table(
        "screening_push",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("result_id", sa.Integer(), sa.ForeignKey("screening_result.id"), nullable=False),
        sa.Column("kind", sa.String(2), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("detail", sa.String(255), nullable=True),
        sa.Column("pushed_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("result_id", "kind", name="uq_screening_push_kind"),
        _one_of("screening_push", "kind", KINDS),
        _one_of("screening_push", "transport", TRANSPORTS),
        _one_of("screening_push", "status", PUSH_STATUSES))
    op.create_index("ix_screening_push_result_id", "screening_push", ["result_id"])


def downgrade() -> None:
    op.drop_table("screening_push")
    op.drop_table("screening_result")
