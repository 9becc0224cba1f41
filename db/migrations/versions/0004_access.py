"""Sign-in and roles (issue 26): the account, api_token and auth_session tables (db/access.py), their role and
kind as closed values, and prediction_audit.asked_by, the user or token:NAME that asked (never a patient).

Rows of the releases before were answered with no sign-in: asked_by stays null.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# the sets as this revision makes them, frozen here (db/values.py may widen them in a later revision)
ROLES = ("screening", "referrals", "audit", "admin")
SESSION_KINDS = ("password", "oidc")


def _one_of(table: str, column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    return sa.CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=f"ck_{table}_{column}")


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_signin_at", sa.DateTime(), nullable=True),
        _one_of("account", "role", ROLES))
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        _one_of("api_token", "role", ROLES))
    op.create_table(
        "auth_session",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("id_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("roles", sa.String(80), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        _one_of("auth_session", "kind", SESSION_KINDS))
    op.create_index("ix_auth_session_user_name", "auth_session", ["user_name"])
    with op.batch_alter_table("prediction_audit") as batch:
        batch.add_column(sa.Column("asked_by", sa.String(136), nullable=True))
        batch.create_index("ix_prediction_audit_asked_by", ["asked_by"])


def downgrade() -> None:
    with op.batch_alter_table("prediction_audit") as batch:
        batch.drop_index("ix_prediction_audit_asked_by")
        batch.drop_column("asked_by")
    op.drop_index("ix_auth_session_user_name", table_name="auth_session")
    for table in ("auth_session", "api_token", "account"):
        op.drop_table(table)
