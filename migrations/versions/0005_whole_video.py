"""The whole video's own result beside a timeline's duration-weighted one

Revision ID: 0005_whole_video
Revises: 0004_job_options
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa

revision = "0005_whole_video"
down_revision = "0004_job_options"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        # {label, confidence, probabilities, ...} of the video's uniform frames, when the job
        # has a timeline (whose duration-weighted answer, or "mixed", is the job's label)
        batch.add_column(sa.Column("whole_video", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("whole_video")
