"""jobs and batches

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("invalid_lines", sa.JSON()),
    )
    op.create_index("ix_batches_created_at", "batches", ["created_at"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("batch_id", sa.String(36), sa.ForeignKey("batches.id")),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("file_path", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("stage_timings", sa.JSON()),
        sa.Column("label", sa.String(32)),
        sa.Column("confidence", sa.Float()),
        sa.Column("probabilities", sa.JSON()),
        sa.Column("subcategory", sa.String(64)),
        sa.Column("subcategory_confidence", sa.Float()),
        sa.Column("member_probabilities", sa.JSON()),
        sa.Column("agreement", sa.Float()),
        sa.Column("model_version", sa.String(64)),
        sa.Column("pipeline_version", sa.String(64)),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime()),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("heartbeat_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
        sa.Column("worker", sa.String(128)),
        sa.Column("task_id", sa.String(64)),
        sa.Column("idempotency_key", sa.String(255), unique=True),
        sa.Column("callback_url", sa.Text()),
        sa.Column("callback_status", sa.String(32)),
        sa.Column("thumbnails_count", sa.Integer(), nullable=False),
        sa.Column("thumbnail_paths", sa.JSON()),
    )
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"])
    op.create_index("ix_jobs_label_created", "jobs", ["label", "created_at"])
    op.create_index("ix_jobs_batch_status", "jobs", ["batch_id", "status"])
    op.create_index("ix_jobs_confidence", "jobs", ["confidence"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("batches")
