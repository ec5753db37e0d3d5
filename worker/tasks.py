"""Celery tasks. The ensemble is loaded once per worker process, after fork (worker_process_init
starts the load in a thread of the pool process; the name list does not wait for it).

This module is imported by the Celery parent process too, so it must not import torch at module
level: vidclass.classify and torch are imported in the pool processes only (_load_classifier).

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

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from sqlalchemy import select, update

from db import session as db_session
from db import settings
from db.models import FINAL, RUNNING, Job, utcnow
from worker import callbacks
from worker import celery_app as names
from worker import health_keys
from worker.celery_app import app
from worker.enqueue import publish_jobs, stage_of

log = logging.getLogger(__name__)

_state: dict = {"classifier": None, "load_error": None, "loader": None, "test_set": None}
_load_lock = threading.RLock()       # the ensemble load
_names_lock = threading.Lock()       # the name index (never waits for the load)


class JobCancelled(Exception):
    """The job was cancelled while running."""


class JobLost(Exception):
    """Another run took the job over (this one was presumed dead)."""


class _DownloadGone(Exception):
    """A downloaded URL's file is missing at the classify stage."""


# ---------------------------------------------------------------- process start

def serves_model_queues() -> bool:
    """Whether this worker consumes a queue whose tasks need the ensemble (-Q as selected by the
    worker before its pool forked; no selection means every queue)."""
    selected = set(app.amqp.queues.consume_from or ())
    return not selected or bool(selected & set(names.MODEL_QUEUES))


@worker_process_init.connect
def _start_loading(**_):
    """Runs in every pool child after fork: fresh db connections, then, on workers that classify,
    the ensemble loads in a thread of this child (a download-only worker never imports torch).
    The child takes tasks at once: the test-set name list needs only the name index (no torch, no
    model) and answers while torch and the ensemble load (seconds, more on a busy machine); tasks
    that need the model wait for the load in _classifier()."""
    db_session.dispose_all()
    if not serves_model_queues():
        return
    loader = threading.Thread(target=_load_classifier, name="vidclass-model-load", daemon=True)
    _state["loader"] = loader
    loader.start()


def _load_classifier() -> None:
    """torch and the ensemble, once per process, on the device CLASSIFY_DEVICE picks
    (worker/accel.py). The first torch import is here, in the child, never in the parent."""
    with _load_lock:
        if _state["classifier"] is not None:
            return
        import torch

        torch.set_num_threads(int(os.environ.get("VIDCLASS_TORCH_THREADS", "1")))
        from vidclass.classify import Classifier

        from worker import accel

        classifier = Classifier()
        try:
            accel.configure(classifier)
            ensemble = classifier.ensemble
            health_keys.publish_model(ensemble.version, ensemble.pipeline.to_dict(),
                                      len(ensemble.members), _worker_name())
        except Exception as exc:      # no models yet: jobs fail with a clear reason instead
            log.error("could not load the ensemble: %s", exc)
            _state["load_error"] = exc
        _state["classifier"] = classifier


@worker_ready.connect
def _start_reconciler(sender=None, **_):
    """The parent worker process runs the reconciler loop (a thread; no torch here)."""
    from worker import reconcile

    reconcile.start_thread(hostname=getattr(sender, "hostname", socket.gethostname()))


@worker_shutdown.connect
def _stop_reconciler(**_):
    from worker import reconcile

    reconcile.stop_thread()


def _classifier():
    loader = _state["loader"]
    if loader is not None and loader.is_alive():
        loader.join()                     # the load started at process init
    if _state["classifier"] is None:      # e.g. a solo/threads pool: no worker_process_init
        _load_classifier()
    if _state["load_error"] is not None:
        # Retry the load: the operator may have put the models in place since.
        try:
            _state["classifier"].ensemble
            _state["load_error"] = None
        except Exception:
            raise _state["load_error"]
    return _state["classifier"]


def _test_set():
    """The test-set name index alone: no model and no torch, so names answer before the ensemble
    has loaded (and whether or not it can)."""
    with _names_lock:
        if _state["test_set"] is None:
            from vidclass.name_index import TestSet

            _state["test_set"] = TestSet()
        return _state["test_set"]


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
    if job_run.handoff_failed and serves_model_queues():
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


def claim(job_id: str, task_id: str, stage: str | None = None) -> dict | None:
    """Take ownership of a job for this task, or None when it must not run here.

    stage "download"/"classify": only when the job is at that stage (stage_of its row), so a
    stale message of the other stage is dropped; None: whatever the job needs (all of it).
    Optimistic: the UPDATE only matches the row as it was read, so two workers racing for the
    same job (duplicate message) cannot both win, on SQLite as on PostgreSQL.
    """
    now = utcnow()
    stale = now - timedelta(seconds=settings.get("HEARTBEAT_STALE_S"))
    with db_session.session_scope() as s:
        job = s.get(Job, job_id)
        if job is None:
            log.warning("job %s not in the database; dropping its message", job_id)
            return None
        if job.status in FINAL:
            return None
        if job.status in RUNNING and job.task_id != task_id and job.heartbeat_at and job.heartbeat_at > stale:
            return None          # alive elsewhere; this message is a duplicate
        due = stage_of(job.source_kind, job.file_path)
        if stage is not None and stage != due:
            return None          # a stale message: the job is at its other stage
        # The classify stage of a downloaded URL continues the run the download began.
        second = job.source_kind == "url" and due == "classify"
        seen_status, seen_attempts = job.status, job.attempts
        if job.attempts >= settings.get("MAX_ATTEMPTS"):
            values = dict(status="failed", error_code="too_many_attempts", finished_at=now,
                          error_message=f"gave up after {job.attempts} attempts (the worker running "
                                        f"it died or lost it each time)")
            claimed = False
        else:
            first = "downloading" if due == "download" else "extracting"
            values = dict(status=first, attempts=job.attempts + 1, task_id=task_id,
                          worker=_worker_name(), heartbeat_at=now, error_code=None, error_message=None)
            if second:
                values.update(progress=30, stage_timings=_download_timings(job.stage_timings),
                              started_at=job.started_at or now)
            else:
                values.update(progress=0, stage_timings={}, started_at=now)
            claimed = True
        result = s.execute(update(Job).where(Job.id == job_id, Job.status == seen_status,
                                             Job.attempts == seen_attempts).values(**values))
        if result.rowcount != 1:
            return None
        if not claimed:
            callbacks.record(s, job.id, job.callback_url)
            return None
        return dict(id=job.id, source_kind=job.source_kind, source=job.source,
                    file_path=job.file_path, callback_url=job.callback_url, task_id=task_id,
                    options=dict(job.options or {}), stage_timings=values.get("stage_timings") or {})


def _download_timings(timings: dict | None) -> dict:
    return {k: v for k, v in (timings or {}).items() if k.startswith("download")}


def download_dir(job_id: str) -> Path:
    return Path(settings.download_dir()) / job_id


def remove_download(job_id: str, file_path: str | None = None) -> None:
    """Delete a job's downloaded video (its DOWNLOAD_DIR/<job_id>/ folder)."""
    folder = download_dir(job_id)
    if file_path and Path(file_path).parent != folder:
        Path(file_path).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


class JobRun:
    """One attempt at one job: stages, heartbeats, cancellation, result, cleanup."""

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

    # -- the stages
    def execute(self, stage: str | None = None) -> None:
        """Run the job's due stage ("download" ends by handing it to the classify queue;
        "classify" ends it); None runs everything in this process."""
        beat = threading.Thread(target=self._heartbeat_loop, daemon=True, name=f"heartbeat-{self.id}")
        beat.start()
        workdir = Path(tempfile.mkdtemp(prefix=f"vidclass-{self.id[:8]}-"))
        started = time.perf_counter()
        earlier = sum(v for k, v in self.timings.items() if k == "download_s")
        try:
            if stage == "download":
                self._download_stage()
                return
            result = self._run(workdir)
            self.timings["total_s"] = round(time.perf_counter() - started + earlier, 4)
            self._finish(result)
        except (JobCancelled, JobLost):
            log.info("job %s stopped: %s", self.id, "cancelled" if self.cancelled.is_set() else "taken over")
        except _DownloadGone:
            try:
                self._redownload()
            except (JobCancelled, JobLost):
                pass
        except BaseException as exc:
            code, message = error_of(exc)
            self.timings["total_s"] = round(time.perf_counter() - started + earlier, 4)
            try:
                self._fail(code, message)
            except (JobCancelled, JobLost):
                pass
            if not isinstance(exc, Exception):
                raise
        finally:
            self._stop.set()
            shutil.rmtree(workdir, ignore_errors=True)

    def _run(self, workdir: Path) -> dict:
        kind, source = self.job["source_kind"], self.job["source"]
        classifier = _classifier()
        if kind == "test-set":
            self.stage("classifying", 50, force=True)
            t = time.perf_counter()
            result = classifier.classify_name(source)
            self.timings["classify_s"] = round(time.perf_counter() - t, 4)
            return result
        if kind == "url" and not self.job.get("file_path"):
            path = self._download(source, workdir)
        elif kind == "url":
            path = Path(self.job["file_path"])
            if not path.is_file():
                raise _DownloadGone()
        else:
            path = Path(self.job["file_path"] or "")
            if not path.is_file():
                raise FileNotFoundError(f"uploaded file {self.job['source']!r} is no longer stored")
        from vidclass.frames import check_duration

        # The same cap for every source (downloads were checked as they arrived).
        check_duration(path, settings.get("MAX_VIDEO_SECONDS"))
        return self._classify_file(classifier, path)

    def _download(self, url: str, workdir: Path) -> Path:
        from vidclass import netguard
        from vidclass.download import DownloadCancelled, fetch

        def progress(fraction: float) -> None:
            with netguard.unguarded():     # our own database, maybe on a private address
                self.stage("downloading", 1 + 29 * fraction)

        self.stage("downloading", 1, force=True)
        t = time.perf_counter()
        try:
            # The heartbeat thread sets self.cancelled when the row says cancelled; fetch then
            # cuts its connections, so a cancel stops even a download stuck on a slow server.
            path = fetch(url, workdir, max_bytes=settings.get("MAX_DOWNLOAD_MB") << 20,
                         max_seconds=settings.get("MAX_VIDEO_SECONDS"),
                         timeout=settings.get("DOWNLOAD_TIMEOUT_S"),
                         retries=settings.get("DOWNLOAD_RETRIES"),
                         block_private=settings.get("BLOCK_PRIVATE_URLS"),
                         allowed_private=settings.get("ALLOWED_PRIVATE_NETWORKS"),
                         deadline_s=settings.get("DOWNLOAD_DEADLINE_S"),
                         cancelled=self.cancelled, progress=progress)
        except DownloadCancelled:
            raise JobCancelled() from None
        self.timings["download_s"] = round(time.perf_counter() - t, 4)
        return path

    def _download_stage(self) -> None:
        """Download into DOWNLOAD_DIR/<job_id>/, then hand the job to the classify queue: the row
        says queued with its file (and enqueued_at NULL, so the outbox publishes it if this
        process dies before it does), then the message, then the row marked published."""
        folder = download_dir(self.id)
        shutil.rmtree(folder, ignore_errors=True)          # a dead attempt's partial file
        folder.mkdir(parents=True, exist_ok=True)
        path = self._download(self.job["source"], folder)
        self.stage("downloading", 30, force=True)
        self._stop.set()                 # no heartbeat once the row says queued
        # attempts restart for the classify stage (MAX_ATTEMPTS bounds each stage).
        self._update(status="queued", file_path=str(path), task_id=None, worker=None,
                     enqueued_at=None, heartbeat_at=None, attempts=0, progress=30,
                     stage_timings=dict(self.timings))
        try:
            publish_jobs([self.id], stage="classify")
        except Exception as exc:         # broker down: the outbox publishes it
            log.warning("could not publish job %s to classify (the outbox will): %s", self.id, exc)
            self.handoff_failed = True
            return
        with db_session.session_scope() as s:
            s.execute(update(Job).where(Job.id == self.id, Job.status == "queued",
                                        Job.enqueued_at.is_(None)).values(enqueued_at=utcnow()))

    def _redownload(self) -> None:
        """A downloaded file is gone (retried long after, or storage not shared): back to the
        download queue instead of failing."""
        log.warning("job %s: downloaded file %s is gone; downloading again", self.id, self.job["file_path"])
        self._stop.set()
        self._update(status="queued", file_path=None, task_id=None, worker=None, enqueued_at=None,
                     heartbeat_at=None, progress=0, stage_timings={})
        publish_jobs([self.id], stage="download")

    def _classify_file(self, classifier, path: Path) -> dict:
        base = 30 if self.job["source_kind"] == "url" else 0
        span = {"sampling": (base, 20), "features": (base + 20, 60 - base)}

        def progress(stage: str, fraction: float) -> None:
            start, width = span.get(stage, (base, 0))
            self.stage("extracting", start + width * max(0.0, min(1.0, fraction)))

        self.stage("extracting", base, force=True)
        # The same bytes give the same features: re-submitted or duplicated videos (common in
        # batches) skip sampling and the CNN. Keyed by content hash and the pipeline.
        key = _file_sha256(path) + ":" + classifier.ensemble.pipeline.to_json()
        cached = _FEATURE_CACHE.get(key)
        video = None
        if cached is None:
            video = classifier.extractor.extract_file(path, progress=progress)
            for name, value in (getattr(video, "timings", None) or {}).items():
                self.timings[name] = value
            cached = (video.features, video.length, _pick_frames(getattr(video, "frames", None)))
            _FEATURE_CACHE.put(key, cached)
        else:
            self.timings["features_cached"] = True
        features, length, frames = cached
        self.stage("classifying", 90, force=True)
        result = classifier.classify_features(self.job["source"], features, length)
        self.timings["classify_s"] = result["timings"]["classify_s"]
        options = segment_options(self.job.get("options"), path)
        if options is not None:
            from vidclass.segments import apply_timeline

            self.stage("classifying", 92, force=True)
            t = time.perf_counter()
            # With a fresh extraction its frames and per-frame vectors are reused.
            timeline = classifier.timeline(path, video=video, options=options)
            result = apply_timeline(result, timeline)
            self.timings["segments_s"] = round(time.perf_counter() - t, 4)
            result["segments"] = [dict(seg, thumbnail_path=str(p)) for seg, p in
                                  zip(result["segments"], save_segment_thumbnails(self.id, timeline.thumbnails))]
        t = time.perf_counter()
        self.thumbnails = save_thumbnails(self.id, frames)
        self.timings["thumbnails_s"] = round(time.perf_counter() - t, 4)
        return result

    # -- endings
    def _finish(self, result: dict) -> None:
        thumbs = getattr(self, "thumbnails", [])
        pipeline = result.get("pipeline")
        pipeline_version = (hashlib.sha256(json.dumps(pipeline, sort_keys=True).encode()).hexdigest()[:12]
                            if pipeline else None)
        self._update(final=True, status="done", progress=100, finished_at=utcnow(), heartbeat_at=utcnow(),
                     label=result["label"], confidence=result["confidence"],
                     uncertain=result.get("uncertain"), probabilities=result["probabilities"], member_probabilities=result.get("members"),
                     agreement=result.get("agreement"), subcategory=result.get("subcategory"),
                     subcategory_confidence=result.get("subcategory_confidence"),
                     model_version=result.get("model_version"), pipeline_version=pipeline_version,
                     stage_timings=dict(self.timings), thumbnails_count=len(thumbs),
                     thumbnail_paths=[str(p) for p in thumbs], segments=result.get("segments"))
        if self.job["source_kind"] == "upload" and self.job.get("file_path"):
            Path(self.job["file_path"]).unlink(missing_ok=True)   # kept until done, for retries
        elif self.job["source_kind"] == "url":
            remove_download(self.id, self.job.get("file_path"))
        log.info("job %s done", self.id)

    def _fail(self, code: str, message: str) -> None:
        log.info("job %s failed: %s: %s", self.id, code, message)
        extra = {}
        if self.job["source_kind"] == "url":
            extra["file_path"] = None      # a retry downloads again
        self._update(final=True, status="failed", finished_at=utcnow(), error_code=code,
                     error_message=message[:2000], stage_timings=dict(self.timings), **extra)
        if self.job["source_kind"] == "url":
            remove_download(self.id, self.job.get("file_path"))


# Failures whose message is written for users (no server paths, no library text).
_CODES = {"VideoError": "bad_video", "NotAVideo": "not_a_video", "TooLong": "too_long",
          "UnknownVideo": "unknown_video", "NoModelsError": "no_models",
          "PipelineMismatch": "pipeline_mismatch", "FileNotFoundError": "file_missing",
          "CheckpointError": "bad_model"}


def error_of(exc: BaseException) -> tuple[str, str]:
    """(stable code, plain message) for the reasons a job can fail; details go to the log."""
    from vidclass.download import DownloadError

    if isinstance(exc, DownloadError):
        return exc.code, str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        return "timeout", f"the job ran longer than JOB_TIMEOUT_S={settings.get('JOB_TIMEOUT_S')} s"
    kind = type(exc).__name__
    if kind in _CODES:
        if getattr(exc, "detail", None):
            log.info("%s: %s", kind, exc.detail)
        return _CODES[kind], str(exc) or kind
    # Anything else is a bug or an unforeseen failure: its text may hold paths or library
    # internals, so users get a sentence and the log gets the traceback.
    log.error("unexpected %s", kind, exc_info=exc)
    return "internal_error", "An internal error stopped this job; the worker's log has the details."


class _LRU:
    """A small per-process cache of recent features (and thumbnail frames)."""

    def __init__(self, size: int):
        from collections import OrderedDict

        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_FEATURE_CACHE = _LRU(int(os.environ.get("VIDCLASS_FEATURE_CACHE", "64")))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pick_frames(frames):
    """THUMBNAILS_PER_JOB evenly spaced frames of the sampled ones (None if there are none)."""
    count = settings.get("THUMBNAILS_PER_JOB")
    if frames is None or count <= 0 or len(frames) == 0:
        return None
    import numpy as np

    picks = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int)
    return np.ascontiguousarray(np.asarray(frames)[picks])


def segment_options(options: dict | None, path: Path):
    """vidclass.segments.SegmentOptions for a job, or None when it gets no timeline: the job's
    `segments` option, else on for videos longer than SEGMENT_MIN_VIDEO_S."""
    from vidclass.frames import VideoError, probe
    from vidclass.segments import SegmentOptions

    options = options or {}
    wanted = options.get("segments")
    if wanted is None:
        try:
            duration = probe(path).duration_s or 0.0
        except VideoError:
            return None
        wanted = duration > settings.get("SEGMENT_MIN_VIDEO_S")
    if not wanted:
        return None
    return SegmentOptions(min_segment_s=options.get("min_segment_s") or settings.get("SEGMENT_MIN_S"),
                          max_segment_s=settings.get("SEGMENT_MAX_S"),
                          max_frames=settings.get("SEGMENT_MAX_FRAMES"),
                          mixed_share=settings.get("SEGMENT_MIXED_SHARE"))


def _save_jpegs(job_id: str, frames, name: str, size: int, quality: int) -> list[Path]:
    """Frames as JPEGs under THUMBNAIL_DIR/<job_id>/, named name.format(n)."""
    import numpy as np
    from PIL import Image

    out_dir = Path(settings.get("THUMBNAIL_DIR")) / job_id
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, frame in enumerate(frames):
        image = Image.fromarray(np.asarray(frame, dtype=np.uint8))
        image.thumbnail((size, size))
        path = out_dir / name.format(n)
        image.save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def save_segment_thumbnails(job_id: str, frames) -> list[Path]:
    """One JPEG per timeline segment under THUMBNAIL_DIR/<job_id>/segment-<n>.jpg."""
    return _save_jpegs(job_id, frames, "segment-{}.jpg", 320, 80)


def save_thumbnails(job_id: str, frames) -> list[Path]:
    """The picked sampled frames as small JPEGs under THUMBNAIL_DIR/<job_id>/<n>.jpg."""
    if frames is None or len(frames) == 0:
        return []
    return _save_jpegs(job_id, frames, "{}.jpg", 192, 75)


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
        return _classifier().classify_name(name)
    except Exception as exc:
        return _error(exc)


@app.task(name=names.LIST_VIDEOS)
def list_videos() -> dict:
    try:
        test_set = _test_set()
        by_category = test_set.by_category()
        return {"categories": by_category, "count": sum(len(v) for v in by_category.values())}
    except Exception as exc:
        return _error(exc)


@app.task(name=names.MODEL_INFO)
def model_info() -> dict:
    try:
        info = _classifier().ensemble.describe()
        for member in info.get("members", []):
            member.pop("metrics", None)
        return info
    except Exception as exc:
        return _error(exc)
