"""API keys, idempotent batches, callbacks table, keyset-pagination indexes

Revision ID: 0002_keys_outbox_callbacks
Revises: 0001
Create Date: 2025-01-02
"""
from alembic import op
import sqlalchemy as sa

revision = "0002_keys_outbox_callbacks"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime()),
        sa.Column("revoked_at", sa.DateTime()),
    )
    op.create_table(
        "callbacks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime()),
    )
    op.create_index("ix_callbacks_job_id", "callbacks", ["job_id"])
    op.create_index("ix_callbacks_status_next", "callbacks", ["status", "next_attempt_at"])
    # Plain ADD COLUMNs and a unique index: no table copy on SQLite, no rewrite on PostgreSQL.
    op.add_column("batches", sa.Column("idempotency_key", sa.String(255)))
    op.add_column("batches", sa.Column("request_hash", sa.String(64)))
    op.create_index("ux_batches_idempotency_key", "batches", ["idempotency_key"], unique=True)
    op.add_column("jobs", sa.Column("request_hash", sa.String(64)))
    # Keyset pagination: (sort column, id) for every sort; the single-column indexes they
    # replace would only slow down inserts.
    op.create_index("ix_jobs_created_id", "jobs", ["created_at", "id"])
    op.create_index("ix_jobs_confidence_id", "jobs", ["confidence", "id"])
    op.create_index("ix_jobs_label_id", "jobs", ["label", "id"])
    op.create_index("ix_jobs_status_id", "jobs", ["status", "id"])
    op.drop_index("ix_jobs_created_at", "jobs")
    op.drop_index("ix_jobs_confidence", "jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_confidence", "jobs", ["confidence"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    for name in ("ix_jobs_status_id", "ix_jobs_label_id", "ix_jobs_confidence_id", "ix_jobs_created_id"):
        op.drop_index(name, "jobs")
    with op.batch_alter_table("jobs") as b:
        b.drop_column("request_hash")
    op.drop_index("ux_batches_idempotency_key", "batches")
    with op.batch_alter_table("batches") as b:
        b.drop_column("request_hash")
        b.drop_column("idempotency_key")
    op.drop_table("callbacks")
    op.drop_table("api_keys")
