"""Job, batch, API key, callback and model version tables. The schema itself is created only by the Alembic
migrations."""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SOURCE_KINDS = ("url", "upload", "test-set")
STATUSES = ("queued", "downloading", "extracting", "classifying", "done", "failed", "cancelled")
RUNNING = ("downloading", "extracting", "classifying")
FINAL = ("done", "failed", "cancelled")


# Every column a run writes; a job that runs again (retry) starts with all of them empty, so
# the API never shows a previous run's result beside the new run's status.
RUN_RESULT_COLUMNS = (
    "stage_timings", "label", "confidence", "probabilities", "subcategory", "subcategory_confidence",
    "member_probabilities", "agreement", "model_version", "pipeline_version", "error_code",
    "error_message", "started_at", "heartbeat_at", "finished_at", "worker", "task_id",
    "callback_status", "callback_error", "thumbnail_paths", "uncertain", "segments", "whole_video", "clip_features",
    "features_pipeline", "review_score")


def utcnow() -> datetime:
    """Naive UTC: SQLite has no time zones, so every timestamp is stored as naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    return str(uuid.uuid4())


def new_ids(n: int) -> list[str]:
    """n random (version 4) UUID strings at once: uuid.uuid4() costs ~10 us each, too much
    for a 10,000-URL batch that must be accepted in well under 2 s."""
    raw = bytearray(os.urandom(16 * n))
    out = []
    for i in range(0, 16 * n, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40      # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80      # RFC 4122 variant
        h = raw[i:i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


class Base(DeclarativeBase):
    pass


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)          # jobs queued
    # {"count": N, "lines": [the first INVALID_LINES_KEPT]}; older rows hold a plain list. A JSON
    # value, not a new column, so rejected lines stay bounded without a schema change.
    invalid_lines: Mapped[dict | list] = mapped_column(JSON, default=list)
    # Idempotency-Key of the POST that made it, and a digest of that request's body: a retry with
    # the same key and body gets this batch back, the same key with another body a 422.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ux_batches_idempotency_key", "idempotency_key", unique=True),)

    def to_dict(self) -> dict:
        stored = self.invalid_lines or []
        lines = stored.get("lines", []) if isinstance(stored, dict) else stored
        count = stored.get("count", len(lines)) if isinstance(stored, dict) else len(stored)
        return {"id": self.id, "name": self.name, "created_at": _iso(self.created_at),
                "total": self.total, "invalid_lines": lines, "invalid_count": count}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    batch_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("batches.id"))
    source_kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)                   # URL, upload file name or test-set name
    file_path: Mapped[str | None] = mapped_column(Text)         # stored upload
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    stage_timings: Mapped[dict | None] = mapped_column(JSON)
    label: Mapped[str | None] = mapped_column(String(32))
    confidence: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[dict | None] = mapped_column(JSON)
    subcategory: Mapped[str | None] = mapped_column(String(64))
    subcategory_confidence: Mapped[float | None] = mapped_column(Float)
    member_probabilities: Mapped[list | None] = mapped_column(JSON)
    agreement: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(64))
    pipeline_version: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # The outbox flag: NULL until the broker has the job's message (the API publishes after its
    # commit, and the reconciler publishes rows still NULL a few seconds later).
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    worker: Mapped[str | None] = mapped_column(String(128))     # host:pid running it
    task_id: Mapped[str | None] = mapped_column(String(64))     # Celery task id that owns the run
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))    # see Batch.request_hash
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_status: Mapped[str | None] = mapped_column(String(32))
    callback_error: Mapped[str | None] = mapped_column(Text)     # why the last attempt failed
    thumbnails_count: Mapped[int] = mapped_column(Integer, default=0)
    thumbnail_paths: Mapped[list | None] = mapped_column(JSON)
    # Top-class confidence under the model's threshold: the answer is not to be relied on.
    uncertain: Mapped[bool | None] = mapped_column(Boolean, index=True)
    # Per-segment timeline [{start, end, label, confidence, probabilities}] (seconds).
    segments: Mapped[list | None] = mapped_column(JSON)
    # Options of the job as submitted: {"segments": true/false/null = auto, "min_segment_s": s/null}.
    options: Mapped[dict | None] = mapped_column(JSON)
    # With a timeline: the whole video's own result (the job's label is the timeline's).
    whole_video: Mapped[dict | None] = mapped_column(JSON)
    # The clip's pooled features ([mean | std] over its frames, float16 bytes) and the digest of the
    # pipeline that made them (pipeline_version): what a correction needs once the video is gone.
    clip_features: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    features_pipeline: Mapped[str | None] = mapped_column(String(64))
    # How much a correction of this result would teach the model (review_priority): higher first.
    review_score: Mapped[float | None] = mapped_column(Float)
    # The label a user says is right, and when (their own labelled data for `vidclass train`).
    true_label: Mapped[str | None] = mapped_column(String(32), index=True)
    labelled_at: Mapped[datetime | None] = mapped_column(DateTime)

    # (sort column, id) for every history sort: keyset pages are index range scans.
    __table_args__ = (
        Index("ix_jobs_created_id", "created_at", "id"),
        Index("ix_jobs_confidence_id", "confidence", "id"),
        Index("ix_jobs_label_id", "label", "id"),
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_label_created", "label", "created_at"),
        Index("ix_jobs_batch_status", "batch_id", "status"),
        Index("ix_jobs_review_id", "review_score", "id"),
        Index("ix_jobs_model_version", "model_version"),
    )

    def to_dict(self) -> dict:
        return {
            "id": self.id, "batch_id": self.batch_id, "source_kind": self.source_kind,
            "source": self.source, "status": self.status, "progress": self.progress,
            "stage_timings": self.stage_timings or {}, "label": self.label,
            "confidence": self.confidence, "uncertain": self.uncertain,
            "probabilities": self.probabilities, "subcategory": self.subcategory, "subcategory_confidence": self.subcategory_confidence,
            "members": self.member_probabilities, "agreement": self.agreement,
            "model_version": self.model_version, "pipeline_version": self.pipeline_version,
            "error": ({"code": self.error_code, "message": self.error_message}
                      if self.error_code else None),
            "attempts": self.attempts, "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
            "callback_url": self.callback_url, "callback_status": self.callback_status,
            "callback_error": self.callback_error,
            "thumbnails": [f"/api/jobs/{self.id}/thumbnails/{n}.jpg"
                           for n in range(self.thumbnails_count or 0)],
            "true_label": self.true_label, "labelled_at": _iso(self.labelled_at),
            "options": self.options or {},
            # Running, but its heartbeat is late: its worker may be gone, and the job is about to
            # be taken over (the progress shown is its last).
            "recovering": bool(self.status in RUNNING and self.heartbeat_at is not None
                               and self.heartbeat_at < utcnow() - timedelta(seconds=3 * _heartbeat_s())),
            "segments": segments_out(self.id, self.segments),
            "whole_video": self.whole_video,
            "features_pipeline": self.features_pipeline, "review_score": self.review_score,
            **timeline_summary(self.segments),
        }


class ApiKey(Base):
    """An API key: only the SHA-256 of the token is stored; the token is shown once, at creation."""
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))            # first characters, to tell keys apart
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    # What the key may do (KEY_SCOPES, each including the ones before it): read, write (submit,
    # cancel, correct, delete), admin (retrain, promote, roll back models).
    scope: Mapped[str] = mapped_column(String(16), default="write", server_default="write")


KEY_SCOPES = ("read", "write", "admin")
MODEL_STATUSES = ("training", "candidate", "active", "retired", "failed")


class ModelVersion(Base):
    """A version of the classifier. Version 1 is the shipped (configured) model; later ones are
    retrained from users' corrections, evaluated, and promoted or not. One is `active`: the one the
    workers classify with (they check before each task). At most one is `training` at a time."""
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str | None] = mapped_column(String(64))          # Ensemble.version of its members
    parent_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("models.id"))   # active when trained
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16))
    # Its models folder; "" for version 1, the configured folder (unique: recorded once).
    path: Mapped[str | None] = mapped_column(Text, unique=True)
    pipeline_version: Mapped[str | None] = mapped_column(String(64))   # features it reads (jobs.features_pipeline)
    training: Mapped[dict | None] = mapped_column(JSON)             # data summary, correction job ids
    metrics: Mapped[dict | None] = mapped_column(JSON)              # evaluation beside its parent
    progress: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime)
    replaced_id: Mapped[int | None] = mapped_column(Integer)        # the active version it replaced: rollback
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # The database, not a check-then-insert, keeps one active and one training version.
        Index("uq_models_one_active", "status", unique=True, sqlite_where=text("status = 'active'"),
              postgresql_where=text("status = 'active'")),
        Index("uq_models_one_training", "status", unique=True, sqlite_where=text("status = 'training'"),
              postgresql_where=text("status = 'training'")),
    )

    def to_dict(self, full: bool = True) -> dict:
        training = dict(self.training or {})
        training.pop("correction_job_ids", None)       # may be thousands: for the next retrain, not shown
        out = {"id": self.id, "digest": self.digest, "parent_id": self.parent_id, "status": self.status,
               "created_at": _iso(self.created_at), "finished_at": _iso(self.finished_at),
               "promoted_at": _iso(self.promoted_at), "progress": self.progress,
               "pipeline_version": self.pipeline_version, "training": training, "note": self.note,
               "error": self.error_message, "replaced_id": self.replaced_id}
        if full:
            out["metrics"] = self.metrics
        return out


CALLBACK_STATUSES = ("pending", "delivered", "failed")


class Callback(Base):
    """One callback POST owed for one job ending. Written in the transaction that ends the job, so
    a broker outage at that moment loses nothing; the workers' deliverer sends due ones."""
    __tablename__ = "callbacks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_callbacks_status_next", "status", "next_attempt_at"),)


def segments_out(job_id: str, stored: list | None) -> list | None:
    """The stored timeline as the API shows it: each segment's thumbnail as a URL, not a path."""
    if not stored:
        return None
    out = []
    for n, seg in enumerate(stored):
        seg = {k: v for k, v in seg.items() if k != "thumbnail_path"}
        seg["thumbnail"] = f"/api/jobs/{job_id}/segments/{n}.jpg" if stored[n].get("thumbnail_path") else None
        out.append(seg)
    return out


def timeline_summary(stored: list | None) -> dict:
    """{"label_shares": {class: share of the duration}, "mixed": no class reaches
    SEGMENT_MIXED_SHARE} of a stored timeline; mixed is null without one."""
    if not stored:
        return {"mixed": None, "label_shares": None}
    from db import settings

    total = sum(s["end"] - s["start"] for s in stored) or 1.0
    shares: dict = {}
    for s in stored:
        shares[s["label"]] = shares.get(s["label"], 0.0) + (s["end"] - s["start"]) / total
    return {"mixed": max(shares.values()) < settings.get("SEGMENT_MIXED_SHARE"),
            "label_shares": {k: round(v, 4) for k, v in shares.items()}}


def _heartbeat_s() -> float:
    from db import settings

    return float(settings.get("HEARTBEAT_S"))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


def review_priority(result: dict) -> float:
    """How much a user's correction of a result would teach: an uncertain answer, members that
    disagree, a mixed timeline and a low confidence each add (0 for a confident, unanimous one)."""
    score = 1.0 if result.get("uncertain") else 0.0
    score += 1.0 - float(result.get("agreement") if result.get("agreement") is not None else 1.0)
    score += 1.0 if result.get("mixed") else 0.0
    confidence = result.get("confidence")
    score += 1.0 - float(confidence) if confidence is not None else 0.5
    return round(score, 4)
