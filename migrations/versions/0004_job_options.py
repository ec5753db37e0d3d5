"""Per-job options (timeline on/off, minimum segment length)

Revision ID: 0004_job_options
Revises: 0003_results_segments_labels
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0004_job_options"
down_revision = "0003_results_segments_labels"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        # {"segments": true/false/null (auto), "min_segment_s": float/null} as submitted
        batch.add_column(sa.Column("options", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("options")
