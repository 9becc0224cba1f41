"""dicom_image.synthetic: the image was marked synthetic by `osteo synth` (commit a9b1351, issue 22).

Rows of the release before are real as far as anyone knew: false, as the server default says.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dicom_image") as batch:
        batch.add_column(sa.Column("synthetic", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("dicom_image") as batch:
        batch.drop_column("synthetic")
