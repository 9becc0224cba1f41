"""The schema of commit 82910aa (the release before migrations), written out by hand from its db/models.py.

A database that release made with create_all has exactly these tables; `osteo db upgrade` stamps it
with this revision (db.migrate.legacy_revision) and runs the later ones.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SHA256, UID, PATH = 64, 64, 1024


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "source_file", _id(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("path", sa.String(PATH), nullable=False),
        sa.Column("sha256", sa.String(SHA256), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=True),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.UniqueConstraint("path", "sha256", name="uq_source_file_path_sha"),
    )
    op.create_index("ix_source_file_sha256", "source_file", ["sha256"])
    op.create_table(
        "patient", _id(),
        sa.Column("patient_key", sa.String(32), nullable=False),
        sa.Column("sex", sa.String(1), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("patient_key"),
    )
    op.create_table(
        "dicom_image", _id(),
        sa.Column("sop_instance_uid", sa.String(UID), nullable=False),
        sa.Column("study_instance_uid", sa.String(UID), nullable=False),
        sa.Column("series_instance_uid", sa.String(UID), nullable=False),
        sa.Column("source_file_id", sa.Integer(), sa.ForeignKey("source_file.id"), nullable=False),
        sa.Column("patient_id", sa.Integer(), sa.ForeignKey("patient.id"), nullable=False),
        sa.Column("study_date", sa.Date(), nullable=False),
        sa.Column("study_day", sa.Integer(), nullable=False),
        sa.Column("age_at_exam", sa.Integer(), nullable=True),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("body_part", sa.String(64), nullable=True),
        sa.Column("laterality", sa.String(1), nullable=False),
        sa.Column("row_direction", sa.String(1), server_default="L", nullable=False),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("n_columns", sa.Integer(), nullable=False),
        sa.Column("bits_stored", sa.Integer(), nullable=False),
        sa.Column("photometric", sa.String(16), nullable=False),
        sa.Column("pixel_spacing_mm", sa.Float(), nullable=True),
        sa.Column("transfer_syntax", sa.String(UID), nullable=False),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("sop_instance_uid"),
    )
    op.create_index("ix_dicom_image_patient_day", "dicom_image", ["patient_id", "study_day", "laterality"])
    op.create_index("ix_dicom_image_source_file_id", "dicom_image", ["source_file_id"])
    op.create_index("ix_dicom_image_patient_id", "dicom_image", ["patient_id"])
    op.create_index("ix_dicom_image_study_date", "dicom_image", ["study_date"])
    op.create_table(
        "dexa_exam", _id(),
        sa.Column("patient_id", sa.Integer(), sa.ForeignKey("patient.id"), nullable=False),
        sa.Column("exam_date", sa.Date(), nullable=False),
        sa.Column("exam_day", sa.Integer(), nullable=False),
        sa.Column("side", sa.String(1), nullable=False),
        sa.Column("neck_bmd", sa.Float(), nullable=True),
        sa.Column("t_score", sa.Float(), nullable=False),
        sa.Column("t_score_derived", sa.Boolean(), nullable=False),
        sa.Column("z_score", sa.Float(), nullable=True),
        sa.Column("age_at_exam", sa.Integer(), nullable=True),
        sa.Column("source_file_id", sa.Integer(), sa.ForeignKey("source_file.id"), nullable=False),
        sa.Column("source_row", sa.Integer(), nullable=False),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("patient_id", "exam_date", "side", name="uq_dexa_exam_natural"),
    )
    op.create_index("ix_dexa_exam_patient_date", "dexa_exam", ["patient_id", "exam_date"])
    op.create_index("ix_dexa_exam_patient_day", "dexa_exam", ["patient_id", "exam_day", "side", "t_score"])
    op.create_index("ix_dexa_exam_source_file_id", "dexa_exam", ["source_file_id"])
    op.create_table(
        "annotation", _id(),
        sa.Column("sop_instance_uid", sa.String(UID), nullable=False),
        sa.Column("side", sa.String(1), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("box_xmin", sa.Integer(), nullable=False),
        sa.Column("box_ymin", sa.Integer(), nullable=False),
        sa.Column("box_xmax", sa.Integer(), nullable=False),
        sa.Column("box_ymax", sa.Integer(), nullable=False),
        sa.Column("source_file_id", sa.Integer(), sa.ForeignKey("source_file.id"), nullable=True),
        sa.Column("model_name", sa.String(128), nullable=True),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("sop_instance_uid", "side", "source", "model_version", name="uq_annotation_box"),
    )
    op.create_index("ix_annotation_sop_instance_uid", "annotation", ["sop_instance_uid"])
    op.create_index("ix_annotation_source_file_id", "annotation", ["source_file_id"])
    op.create_table(
        "pair", _id(),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("dicom_image.id"), nullable=False),
        sa.Column("dexa_exam_id", sa.Integer(), sa.ForeignKey("dexa_exam.id"), nullable=False),
        sa.Column("gap_days", sa.Integer(), nullable=False),
        sa.Column("t_score", sa.Float(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("label3", sa.String(16), nullable=False),
        sa.Column("rule_version", sa.String(32), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("paired_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("image_id"),
    )
    op.create_index("ix_pair_dexa_exam_id", "pair", ["dexa_exam_id"])
    op.create_table(
        "export", _id(),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("dicom_image.id"), nullable=False),
        sa.Column("side", sa.String(1), nullable=False),
        sa.Column("annotation_id", sa.Integer(), sa.ForeignKey("annotation.id"), nullable=False),
        sa.Column("recipe_digest", sa.String(SHA256), nullable=False),
        sa.Column("transform", sa.JSON(), nullable=False),
        sa.Column("transform_digest", sa.String(SHA256), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exclusion", sa.String(16), nullable=True),
        sa.Column("metal_fraction", sa.Float(), nullable=False),
        sa.Column("blur_score", sa.Float(), nullable=False),
        sa.Column("path", sa.String(PATH), nullable=True),
        sa.Column("sha256", sa.String(SHA256), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("image_id", "recipe_digest", name="uq_export_image_recipe"),
    )
    op.create_index("ix_export_image_id", "export", ["image_id"])
    op.create_table(
        "quarantine", _id(),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("source_path", sa.String(PATH), nullable=False),
        sa.Column("source_sha256", sa.String(SHA256), nullable=False),
        sa.Column("source_row", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(1000), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("context_digest", sa.String(SHA256), nullable=True),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("stage", "source_sha256", "source_row", "reason", name="uq_quarantine_entry"),
    )
    op.create_index("ix_quarantine_resolved_at", "quarantine", ["resolved_at"])
    op.create_table(
        "out_of_scope", _id(),
        sa.Column("source_file_id", sa.Integer(), sa.ForeignKey("source_file.id"), nullable=False),
        sa.Column("sop_instance_uid", sa.String(UID), nullable=True),
        sa.Column("reason", sa.String(80), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("body_part", sa.String(64), nullable=True),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("source_file_id"),
    )
    op.create_index("ix_out_of_scope_sop_instance_uid", "out_of_scope", ["sop_instance_uid"])
    op.create_index("ix_out_of_scope_reason", "out_of_scope", ["reason"])
    op.create_table(
        "snapshot", _id(),
        sa.Column("digest", sa.String(SHA256), nullable=False),
        sa.Column("n_members", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("manifest_path", sa.String(PATH), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("digest"),
    )
    op.create_table(
        "snapshot_member", _id(),
        sa.Column("snapshot_id", sa.Integer(), sa.ForeignKey("snapshot.id"), nullable=False),
        sa.Column("export_id", sa.Integer(), sa.ForeignKey("export.id"), nullable=False),
        sa.Column("pair_id", sa.Integer(), sa.ForeignKey("pair.id"), nullable=False),
        sa.Column("patient_id", sa.Integer(), sa.ForeignKey("patient.id"), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("fold", sa.Integer(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.UniqueConstraint("snapshot_id", "export_id", name="uq_snapshot_member"),
    )
    op.create_index("ix_snapshot_member_snapshot_id", "snapshot_member", ["snapshot_id"])
    op.create_index("ix_snapshot_member_export_id", "snapshot_member", ["export_id"])
    op.create_index("ix_snapshot_member_patient_id", "snapshot_member", ["patient_id"])
    op.create_table(
        "augmented_copy", _id(),
        sa.Column("export_id", sa.Integer(), sa.ForeignKey("export.id"), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("params_digest", sa.String(SHA256), nullable=False),
        sa.Column("path", sa.String(PATH), nullable=False),
        sa.Column("sha256", sa.String(SHA256), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("export_id", "seed", "params_digest", name="uq_augmented_copy"),
    )
    op.create_index("ix_augmented_copy_export_id", "augmented_copy", ["export_id"])
    op.create_table(
        "training_run", _id(),
        sa.Column("snapshot_id", sa.Integer(), sa.ForeignKey("snapshot.id"), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=False),
        sa.Column("arch", sa.String(32), nullable=False),
        sa.Column("preset", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=True),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("test_auc", sa.Float(), nullable=True),
        sa.Column("checkpoint_sha256", sa.String(SHA256), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("model_name", "model_version", name="uq_training_run_version"),
    )
    op.create_index("ix_training_run_snapshot_id", "training_run", ["snapshot_id"])
    op.create_index("ix_training_run_mlflow_run_id", "training_run", ["mlflow_run_id"])
    op.create_table(
        "refresh_run", _id(),
        sa.Column("started_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("code_version", sa.String(80), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=True),
    )
    op.create_table(
        "prediction_audit", _id(),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("localiser", sa.String(160), nullable=True),
        sa.Column("input_sha256", sa.String(SHA256), nullable=False),
        sa.Column("input_kind", sa.String(8), nullable=False),
        sa.Column("box", sa.JSON(), nullable=True),
        sa.Column("box_source", sa.String(8), nullable=False),
        sa.Column("side", sa.String(1), nullable=True),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
    )
    op.create_index("ix_prediction_audit_created_at", "prediction_audit", ["created_at"])
    op.create_index("ix_prediction_audit_input_sha256", "prediction_audit", ["input_sha256"])
    op.create_table(
        "refresh_lock", _id(),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name"),
    )


def downgrade() -> None:
    for table in TABLES[::-1]:
        op.drop_table(table)


TABLES = ("source_file", "patient", "dicom_image", "dexa_exam", "annotation", "pair", "export", "quarantine",
          "out_of_scope", "snapshot", "snapshot_member", "augmented_copy", "training_run", "refresh_run",
          "prediction_audit", "refresh_lock")
