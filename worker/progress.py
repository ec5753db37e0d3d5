"""A running job's row: status and progress writes, heartbeats, and noticing a cancel or a takeover.

Every write is guarded by the run's task_id, so a superseded run can never write; progress
callbacks come often, so a status is written at most twice a second.
"""
from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select, update

from db import session as db_session
from db import settings
from db.models import RUNNING, Job, utcnow
from worker import callbacks

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """The job was cancelled while running."""


class JobLost(Exception):
    """Another run took the job over (this one was presumed dead)."""


class JobProgress:
    """The row of one attempt at one job, written only while this attempt owns it."""

    def __init__(self, job: dict):
        self.job = job
        self.id = job["id"]
        self.task_id = job["task_id"]
        self.timings: dict = dict(job.get("stage_timings") or {})
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._last_write = 0.0
        self._status = None
        self.handoff_failed = False

    # -- state updates (all guarded by task_id so a superseded run cannot write)
    def _update(self, final: bool = False, **values) -> None:
        with db_session.session_scope() as s:
            res = s.execute(update(Job).where(Job.id == self.id, Job.task_id == self.task_id,
                                              Job.status.in_(RUNNING)).values(**values))
            if res.rowcount == 1:
                if final:   # the callback is owed in the same commit that ends the job
                    callbacks.record(s, self.id, self.job.get("callback_url"))
                return
            status = s.execute(select(Job.status).where(Job.id == self.id)).scalar()
        if status == "cancelled":
            self.cancelled.set()
            raise JobCancelled()
        self.lost.set()
        raise JobLost()

    def stage(self, status: str, progress: int, force: bool = False) -> None:
        if self.cancelled.is_set():
            raise JobCancelled()
        if self.lost.is_set():
            raise JobLost()
        now = time.monotonic()
        if not force and status == self._status and now - self._last_write < 0.5:
            return                     # progress callbacks come often; write at most twice a second
        self._last_write, self._status = now, status
        self._update(status=status, progress=int(progress), heartbeat_at=utcnow(),
                     stage_timings=dict(self.timings))

    def _heartbeat_loop(self) -> None:
        interval = settings.get("HEARTBEAT_S")
        while not self._stop.wait(interval):
            try:
                self._update(heartbeat_at=utcnow())
            except (JobCancelled, JobLost):
                return
            except Exception as exc:   # db briefly unavailable: try again next beat
                log.warning("heartbeat of job %s failed: %s", self.id, exc)
