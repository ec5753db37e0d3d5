"""Result columns: uncertain flag, per-segment timeline, a user's corrected label

Revision ID: 0003_results_segments_labels
Revises: 0002_keys_outbox_callbacks
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0003_results_segments_labels"
down_revision = "0002_keys_outbox_callbacks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        # top-class confidence under the model's threshold (history filter `uncertain=1`)
        batch.add_column(sa.Column("uncertain", sa.Boolean()))
        # [{start, end, label, confidence, probabilities}] for segmented videos (timeline)
        batch.add_column(sa.Column("segments", sa.JSON()))
        # the label a user says is right (PUT /api/jobs/<id>/label), and when they said it
        batch.add_column(sa.Column("true_label", sa.String(32)))
        batch.add_column(sa.Column("labelled_at", sa.DateTime()))
    op.create_index("ix_jobs_uncertain", "jobs", ["uncertain"])
    op.create_index("ix_jobs_true_label", "jobs", ["true_label"])


def downgrade() -> None:
    op.drop_index("ix_jobs_true_label", "jobs")
    op.drop_index("ix_jobs_uncertain", "jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in ("labelled_at", "true_label", "segments", "uncertain"):
            batch.drop_column(name)
