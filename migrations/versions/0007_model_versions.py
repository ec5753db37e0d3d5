"""Model versions (retrain, evaluate, promote, roll back) and API key scopes

Revision ID: 0007_model_versions
Revises: 0006_clip_features_review
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa

revision = "0007_model_versions"
down_revision = "0006_clip_features_review"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(64)),
        sa.Column("parent_id", sa.Integer(), sa.ForeignKey("models.id")),
        sa.Column("created_at", sa.DateTime()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("path", sa.Text(), unique=True),     # "" = the configured folder (version 1)
        sa.Column("pipeline_version", sa.String(64)),
        sa.Column("training", sa.JSON()),
        sa.Column("metrics", sa.JSON()),
        sa.Column("progress", sa.Integer(), server_default="0"),
        sa.Column("error_message", sa.Text()),
        sa.Column("heartbeat_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
        sa.Column("promoted_at", sa.DateTime()),
        sa.Column("replaced_id", sa.Integer()),
        sa.Column("note", sa.Text()),
    )
    # At most one active and one training version, kept by the database itself.
    for status in ("active", "training"):
        op.create_index(f"uq_models_one_{status}", "models", ["status"], unique=True,
                        sqlite_where=sa.text(f"status = '{status}'"),
                        postgresql_where=sa.text(f"status = '{status}'"))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scope", sa.String(16), nullable=False, server_default="write"))
    with op.batch_alter_table("jobs") as batch:
        batch.create_index("ix_jobs_model_version", ["model_version"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_model_version")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scope")
    for status in ("active", "training"):
        op.drop_index(f"uq_models_one_{status}", table_name="models")
    op.drop_table("models")
