"""Celery tasks. The ensemble is loaded once per worker process, after fork (worker/loading.py;
the name list does not wait for it). A job's attempt runs in worker/job_run.py (claim, JobRun),
its row writes in worker/progress.py, its thumbnails and timeline pass beside them.

This module is imported by the Celery parent process too, so it must not import torch at module
level: vidclass.model.classify and torch are imported in the pool processes only.

A URL job runs in two stages on two queues (worker/celery_app.py):
  download  (download_job, on download workers: threads, no torch) fetches the video into
            DOWNLOAD_DIR/<job_id>/ on shared storage, then hands the job over: status queued,
            file_path set, enqueued_at NULL (in the outbox) in one commit, then publishes it to
  classify  (classify_job, on classification workers: the ensemble loaded once per process)
            sample frames -> features -> classify. Uploads and test-set names start here.
Every status change is committed. The database decides who runs a stage (claim()): a job already
done/cancelled is skipped, a message for a stage the job is not at is dropped, a job re-delivered
after its worker died restarts that stage with attempts + 1 (attempts count the current stage),
and a duplicate message for a job someone else is running right now is dropped. A worker dying
between the stages loses nothing: the row is queued in the outbox, or running with a heartbeat
that goes stale, and the reconciler publishes it to the stage its row says.
"""
from __future__ import annotations

import logging
import os
import socket

from celery.signals import worker_ready, worker_shutdown

from db import session as db_session
from db import settings
from db.models import Job
from worker import callbacks, loading
from worker import celery_app as names
from worker.celery_app import app
from worker.enqueue import publish_jobs
from worker.errors import error_of
from worker.job_run import JobRun, claim

log = logging.getLogger(__name__)


@worker_ready.connect
def _start_reconciler(sender=None, **_):
    """The parent worker process runs the reconciler loop (a thread; no torch here)."""
    from worker import reconcile

    reconcile.start_thread(hostname=getattr(sender, "hostname", socket.gethostname()),
                           details=_node_details(sender))


def _node_details(consumer):
    """What this worker node's heartbeat says besides "alive" (read on each beat; the dashboard
    shows it): concurrency, queues, uptime, tasks active now and processed since start, and its
    pool processes (host:pid, whose loaded model the pool children publish)."""
    import time

    from celery.worker import state

    started = time.time()
    host = socket.gethostname()

    def details() -> dict:
        pool = getattr(consumer, "pool", None)
        info = {}
        try:
            info = pool.info if pool is not None else {}
        except Exception:
            pass
        queues = sorted(getattr(q, "name", str(q)) for q in (app.amqp.queues.consume_from or {}).values())
        return {"concurrency": info.get("max-concurrency") or getattr(getattr(consumer, "controller", None),
                                                                       "concurrency", None),
                "queues": queues, "started_at": started, "active": len(state.active_requests),
                "processed": sum(state.total_count.values()),
                "host": host, "pid": os.getpid(),
                "processes": [f"{host}:{pid}" for pid in info.get("processes") or []],
                "serves_model": loading.serves_model_queues()}
    return details


@worker_shutdown.connect
def _stop_reconciler(**_):
    from worker import reconcile

    reconcile.stop_thread()


# ---------------------------------------------------------------- the job task

@app.task(name=names.DOWNLOAD_JOB, bind=True, ignore_result=True)
def download_job(self, job_id: str) -> None:
    """The download stage (no time limit here: a threads pool has none; DOWNLOAD_DEADLINE_S
    bounds a download)."""
    task_id = self.request.id or "local"
    run = claim(job_id, task_id, stage="download")
    if run is None:
        return
    job_run = JobRun(run)
    job_run.execute(stage="download")
    if job_run.handoff_failed and loading.serves_model_queues():
        # The broker is down and this worker classifies too: go on here rather than wait for it
        # (the row is in the outbox; a later duplicate message is dropped by claim()).
        run = claim(job_id, task_id, stage="classify")
        if run is not None:
            JobRun(run).execute(stage="classify")


@app.task(name=names.CLASSIFY_JOB, bind=True, ignore_result=True,
          soft_time_limit=settings.get("JOB_TIMEOUT_S"), time_limit=settings.get("JOB_TIMEOUT_S") + 60)
def classify_job(self, job_id: str) -> None:
    run = claim(job_id, self.request.id or "local", stage="classify")
    if run is not None:
        JobRun(run).execute(stage="classify")


@app.task(name=names.PROCESS_JOB, ignore_result=True)
def process_job(job_id: str) -> None:
    """A message of an older version (one queue for everything): publish the job to the queue
    of the stage its row says. Harmless if the job is running or done (claim() drops it)."""
    publish_jobs([job_id])


# ---------------------------------------------------------------- callbacks

@app.task(name=names.SEND_CALLBACK, ignore_result=True)
def send_callback(job_id: str) -> None:
    """Messages queued by an older version: callbacks now live in the database (worker/callbacks.py),
    so this only makes sure the job's callback is owed there."""
    with db_session.session_scope() as s:
        job = s.get(Job, job_id)
        if job is None or not job.callback_url or job.callback_status in ("delivered", "failed", "pending"):
            return
        callbacks.record(s, job.id, job.callback_url)


# ---------------------------------------------------------------- the fast queue

def _error(exc: Exception) -> dict:
    code, message = error_of(exc)
    return {"error": {"code": code, "message": message}}


@app.task(name=names.CLASSIFY_NAME)
def classify_name(name: str) -> dict:
    """Synchronous classify-by-name: answers from the test-set features file."""
    try:
        return loading.classifier().classify_name(name)
    except Exception as exc:
        return _error(exc)


@app.task(name=names.LIST_VIDEOS)
def list_videos() -> dict:
    try:
        test_set = loading.test_set()
        by_category = test_set.by_category()
        return {"categories": by_category, "count": sum(len(v) for v in by_category.values())}
    except Exception as exc:
        return _error(exc)


@app.task(name=names.MODEL_INFO)
def model_info() -> dict:
    try:
        info = loading.classifier().ensemble.describe()
        for member in info.get("members", []):
            member.pop("metrics", None)
        return info
    except Exception as exc:
        return _error(exc)
