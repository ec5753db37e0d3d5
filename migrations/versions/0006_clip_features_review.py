"""What a correction needs after the video is gone, the review order, and why a callback failed

Revision ID: 0006_clip_features_review
Revises: 0005_whole_video
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa

revision = "0006_clip_features_review"
down_revision = "0005_whole_video"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        # the clip's pooled feature vector ([mean | std] over its frames, float16) and the digest of
        # the pipeline that made it: a corrected job can be learned from after its file is gone
        batch.add_column(sa.Column("clip_features", sa.LargeBinary()))
        batch.add_column(sa.Column("features_pipeline", sa.String(64)))
        # how much a user's correction of this result would teach (higher first)
        batch.add_column(sa.Column("review_score", sa.Float()))
        batch.create_index("ix_jobs_review_id", ["review_score", "id"])
        # why the last callback attempt failed (the receiver's status or the connection error)
        batch.add_column(sa.Column("callback_error", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("callback_error")
        batch.drop_index("ix_jobs_review_id")
        batch.drop_column("review_score")
        batch.drop_column("features_pipeline")
        batch.drop_column("clip_features")
