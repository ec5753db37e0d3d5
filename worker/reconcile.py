"""The reconciler: the database is the source of truth, the broker may lose messages.

Every OUTBOX_INTERVAL_S it publishes the outbox: queued jobs the API committed but never saw
published (enqueued_at NULL: the API died between commit and publish, or the broker was down).

Every RECONCILE_INTERVAL_S it re-publishes
  * running jobs whose heartbeat is older than HEARTBEAT_STALE_S (their worker vanished),
  * queued jobs that were never published (as above),
  * every queued job when the broker lost its data (Redis restarted without persistence): detected
    by a marker key that disappears with the data,
  * queued jobs not picked up for QUEUED_STALE_S (any other lost message).
Each job is published to the queue of the stage its row says (worker.enqueue.stage_of): a URL job
without its file to `download`, everything else to `classify`; so a worker that dies in either
stage, or between them, loses nothing. A duplicate message is harmless: worker.job_run.claim() lets
only one run own a job, and drops a message for the stage the job is not at.
It also deletes the uploads of failed and cancelled jobs that ended more than UPLOAD_RETENTION_H
ago (kept until then for a retry), and the downloaded videos of URL jobs cancelled between stages.

It runs as a thread in every Celery worker's parent process; a short Redis lock makes one
reconciler act per interval when several worker nodes run.
"""
from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select, update

from db import session as db_session
from db import settings
from db.models import FINAL, RUNNING, Job, utcnow
from worker import health_keys
from worker.enqueue import publish_jobs

log = logging.getLogger(__name__)


UPLOAD_SWEEP_INTERVAL_S = 300
# The API publishes right after its commit; rows younger than this are probably being published
# by it now (a duplicate would be harmless, but 10,000 of them are not free).
OUTBOX_GRACE_S = 2.0
OUTBOX_CHUNK = 5000

_thread: threading.Thread | None = None
_stop = threading.Event()


def reconcile_once(redis_client, now=None) -> dict:
    """One pass; returns how many jobs it re-published, by reason (None when another node acted)."""
    interval = settings.get("RECONCILE_INTERVAL_S")
    if not redis_client.set(health_keys.key("reconcile-lock"), uuid.uuid4().hex, nx=True, px=max(100, int(interval * 900))):
        return None
    now = now or utcnow()
    broker_lost = not redis_client.exists(health_keys.key("broker-marker"))
    stale_beat = now - timedelta(seconds=settings.get("HEARTBEAT_STALE_S"))
    stale_queue = now - timedelta(seconds=settings.get("QUEUED_STALE_S"))
    missed_beats = now - timedelta(seconds=2 * settings.get("HEARTBEAT_S"))
    counts = {"running_stale": 0, "queued_lost": 0}
    with db_session.session_scope() as s:
        dead = list(s.execute(select(Job.id).where(
            Job.status.in_(RUNNING),
            or_(Job.heartbeat_at < stale_beat, Job.heartbeat_at.is_(None)))).scalars().all())
        # Faster: two missed beats and its process is gone (this machine: the pid; another: its
        # worker nodes' heartbeats no longer list it, or no node of that host beats).
        late = s.execute(select(Job.id, Job.worker, Job.heartbeat_at).where(
            Job.status.in_(RUNNING), Job.heartbeat_at < missed_beats, Job.heartbeat_at >= stale_beat)).all()
        nodes = health_keys.read(redis_client)["worker_details"] if late else None
        dead_here = {j for j, worker, _ in late if _process_gone(worker, nodes)}
        dead += [j for j in dead_here if j not in dead]
        if dead:
            # Back to queued, in the outbox until published: the next claim() starts it afresh
            # and counts the attempt. Guarded by the heartbeat seen, so a beat meanwhile wins.
            beats = {j: b for j, _, b in late}
            for job_id in dead:
                seen = beats.get(job_id)
                guard = (Job.heartbeat_at == seen) if job_id in dead_here and seen is not None else \
                    or_(Job.heartbeat_at < stale_beat, Job.heartbeat_at.is_(None))
                s.execute(update(Job).where(Job.id == job_id, Job.status.in_(RUNNING), guard)
                          .values(status="queued", task_id=None, enqueued_at=None))
        queued_filter = [Job.status == "queued"]
        if not broker_lost:
            queued_filter.append(or_(Job.enqueued_at.is_(None), Job.enqueued_at < stale_queue))
        lost = s.execute(select(Job.id).where(*queued_filter).order_by(Job.created_at)).scalars().all()
        lost = [j for j in lost if j not in set(dead)]
    ids = list(dead) + list(lost)
    if ids:
        # Published first, marked after: if publishing fails the rows stay in the outbox.
        publish_jobs(ids)
        _mark_published(ids, now)
        log.warning("reconciler re-published %d stale running and %d lost queued job(s)%s",
                    len(dead), len(lost), " (broker lost its data)" if broker_lost else "")
    if broker_lost:
        redis_client.set(health_keys.key("broker-marker"), now.isoformat())
    counts["running_stale"], counts["queued_lost"] = len(dead), len(lost)
    counts["retrains_failed"] = fail_stalled_retrains(now)
    # Retention is counted in hours: sweeping every few minutes is enough, and spares the database
    # a scan of all failed jobs on every pass.
    sweep_due = redis_client.set(health_keys.key("uploads-sweep"), now.isoformat(), nx=True,
                                 ex=UPLOAD_SWEEP_INTERVAL_S)
    counts["uploads_deleted"] = delete_expired_uploads(now) if sweep_due else 0
    counts["features_cleared"] = clear_expired_features(now) if sweep_due else 0
    counts["thumbnails_deleted"] = delete_expired_thumbnails(now) if sweep_due else 0
    return counts


# A retrain reports progress after every fold (seconds apart): this long without one, its worker is gone.
RETRAIN_STALE_S = 600


def fail_stalled_retrains(now) -> int:
    """A `training` model version whose worker stopped reporting ends `failed`, so it no longer
    blocks the next retrain (a redelivered message would have resumed it by then)."""
    from db.models import ModelVersion

    with db_session.session_scope() as s:
        return s.execute(update(ModelVersion).where(
            ModelVersion.status == "training", ModelVersion.heartbeat_at < now - timedelta(seconds=RETRAIN_STALE_S))
            .values(status="failed", finished_at=now,
                    error_message=f"the worker running it stopped: no progress for {RETRAIN_STALE_S // 60} minutes")
        ).rowcount


def _process_gone(worker: str | None, nodes: dict | None = None) -> bool:
    """Whether a job's worker (host:pid) no longer exists. On this machine: the pid is gone. On
    another: no worker node of that host has a live heartbeat, or none of them lists the pid among
    its processes (`nodes`: health_keys.read()'s worker_details; each beat lists its pool)."""
    import os
    import socket

    host, _, pid = (worker or "").rpartition(":")
    if not pid.isdigit():
        return False
    if host != socket.gethostname():
        if nodes is None:
            return False
        on_host = [d for d in nodes.values() if d.get("host") == host]
        if not on_host:
            return any("host" in d for d in nodes.values())   # only when beats say hosts at all
        listed = {p for d in on_host for p in d.get("processes") or []} | {f"{host}:{d.get('pid')}" for d in on_host}
        return worker not in listed
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _mark_published(ids: list[str], now) -> None:
    with db_session.session_scope() as s:
        for start in range(0, len(ids), 500):
            s.execute(update(Job).where(Job.id.in_(ids[start:start + 500]), Job.status == "queued")
                      .values(enqueued_at=now))


def publish_outbox(redis_client, now=None) -> int | None:
    """Publish queued jobs whose rows say "not yet published"; how many (None: another node's turn)."""
    interval = settings.get("OUTBOX_INTERVAL_S")
    if not redis_client.set(health_keys.key("outbox-lock"), uuid.uuid4().hex, nx=True,
                            px=max(100, int(interval * 900))):
        return None
    now = now or utcnow()
    with db_session.session_scope() as s:
        ids = s.execute(select(Job.id).where(
            Job.status == "queued", Job.enqueued_at.is_(None),
            Job.created_at < now - timedelta(seconds=OUTBOX_GRACE_S))
            .order_by(Job.created_at).limit(OUTBOX_CHUNK)).scalars().all()
    if ids:
        publish_jobs(ids)
        _mark_published(list(ids), now)
        log.warning("published %d job(s) the API had committed but not published", len(ids))
    return len(ids)


def delete_expired_uploads(now, batch: int = 500) -> int:
    """Delete the stored uploads of failed/cancelled jobs that ended before the retention window
    and clear their file_path (a retry then asks for a new upload); returns how many."""
    hours = settings.get("UPLOAD_RETENTION_H")
    if hours <= 0:
        return 0
    cutoff = now - timedelta(hours=hours)
    ended = ("failed", "cancelled")
    expired = []
    with db_session.session_scope() as s:
        rows = s.execute(select(Job.id, Job.file_path).where(
            Job.source_kind.in_(("upload", "url")), Job.status.in_(ended), Job.file_path.is_not(None),
            Job.finished_at < cutoff).limit(batch)).all()
        for job_id, path in rows:
            # Conditional: a job retried since the select keeps its file.
            cleared = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ended),
                                                  Job.file_path == path).values(file_path=None))
            if cleared.rowcount == 1:
                expired.append(path)
    # Files go only once the database no longer points at them.
    for path in expired:
        Path(path).unlink(missing_ok=True)
        _remove_empty_download_dir(Path(path))
    if expired:
        log.info("deleted %d expired upload(s)", len(expired))
    return len(expired)


def delete_expired_thumbnails(now, batch: int = 500) -> int:
    """Delete the thumbnails of jobs that ended THUMBNAIL_RETENTION_DAYS ago (their files and
    folder; the rows forget them); returns how many jobs."""
    import shutil

    days = settings.get("THUMBNAIL_RETENTION_DAYS")
    if days <= 0:
        return 0
    with db_session.session_scope() as s:
        rows = s.execute(select(Job.id, Job.thumbnail_paths).where(
            Job.status.in_(FINAL), Job.thumbnails_count > 0,
            Job.finished_at < now - timedelta(days=days)).limit(batch)).all()
        for job_id, _ in rows:
            s.execute(update(Job).where(Job.id == job_id).values(thumbnails_count=0, thumbnail_paths=None))
    for job_id, paths in rows:
        for path in paths or []:
            Path(path).unlink(missing_ok=True)
        shutil.rmtree(Path(settings.get("THUMBNAIL_DIR")) / job_id, ignore_errors=True)
    return len(rows)


def clear_expired_features(now) -> int:
    """Clear the clip features of jobs that ended FEATURE_RETENTION_DAYS ago and were never
    corrected (a corrected job keeps what a retrain needs); returns how many."""
    days = settings.get("FEATURE_RETENTION_DAYS")
    if days <= 0:
        return 0
    with db_session.session_scope() as s:
        cleared = s.execute(update(Job).where(
            Job.clip_features.is_not(None), Job.true_label.is_(None),
            Job.finished_at < now - timedelta(days=days)).values(clip_features=None, features_pipeline=None))
        return cleared.rowcount or 0


def _remove_empty_download_dir(path: Path) -> None:
    """A URL job's download lives in DOWNLOAD_DIR/<job_id>/: remove that folder once empty."""
    if path.parent.parent == Path(settings.download_dir()):
        try:
            path.parent.rmdir()
        except OSError:
            pass


def loop(hostname: str, details=None) -> None:
    import time

    interval = settings.get("RECONCILE_INTERVAL_S")
    tick = min(interval, settings.get("OUTBOX_INTERVAL_S"))
    redis_client = None
    next_full = 0.0
    while not _stop.is_set():
        try:
            redis_client = redis_client or health_keys.client()
            publish_outbox(redis_client)
            # Every tick (one small SET): the dashboard's active and processed counts stay current.
            health_keys.beat_worker(hostname, ttl_s=interval * 3 + 5, details=details() if details else None)
            if time.monotonic() >= next_full:
                reconcile_once(redis_client)
                next_full = time.monotonic() + interval
        except Exception as exc:     # Redis or the db down: keep trying, that is the point
            log.warning("reconciler pass failed: %s", exc)
            redis_client = None
        _stop.wait(tick)


def start_thread(hostname: str, details=None) -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(target=loop, args=(hostname, details), daemon=True, name="vidclass-reconciler")
    _thread.start()
    from worker import callbacks

    callbacks.start_thread()


def stop_thread() -> None:
    from worker import callbacks

    _stop.set()
    callbacks.stop_thread()
