"""Claiming a job and running one attempt at it: download, sampling, features, classification,
the result or the failure with its reason, and the cleanup (worker/tasks.py has the why)."""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from db import session as db_session
from db import settings
from db.models import FINAL, RUNNING, Job, review_priority, utcnow
from worker import callbacks, loading, model_versions
from worker.enqueue import publish_jobs, stage_of
from worker.errors import error_of
from worker.feature_cache import FEATURE_CACHE, file_sha256
from worker.progress import JobCancelled, JobLost, JobProgress
from worker.segment_pass import add_timeline
from worker.thumbnails import pick_frames, save_thumbnails

log = logging.getLogger(__name__)


class _DownloadGone(Exception):
    """A downloaded URL's file is missing at the classify stage."""


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
                          worker=loading.worker_name(), heartbeat_at=now, error_code=None, error_message=None)
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


class JobRun(JobProgress):
    """One attempt at one job: stages, result, failure, cleanup (its row: JobProgress)."""

    def __init__(self, job: dict):
        super().__init__(job)
        self.thumbnails: list[Path] = []               # saved by _classify_file
        self.clip_features: bytes | None = None        # the pooled vector, float16

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
        classifier = loading.classifier()
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
        from vidclass.media.frames import check_duration

        # The same cap for every source (downloads were checked as they arrived).
        check_duration(path, settings.get("MAX_VIDEO_SECONDS"))
        return self._classify_file(classifier, path)

    def _download(self, url: str, workdir: Path) -> Path:
        from vidclass.media import netguard
        from vidclass.media.download import DownloadCancelled, fetch

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
        key = file_sha256(path) + ":" + classifier.ensemble.pipeline.to_json()
        cached = FEATURE_CACHE.get(key)
        video = None
        if cached is None:
            video = classifier.extractor.extract_file(path, progress=progress)
            for name, value in (getattr(video, "timings", None) or {}).items():
                self.timings[name] = value
            cached = (video.features, video.length, pick_frames(getattr(video, "frames", None)))
            FEATURE_CACHE.put(key, cached)
        else:
            self.timings["features_cached"] = True
        features, length, frames = cached
        self.stage("classifying", 90, force=True)
        result = classifier.classify_features(self.job["source"], features, length)
        from vidclass.features.extract import clip_vector

        self.clip_features = clip_vector(features, length).astype("float16").tobytes()
        self.timings["classify_s"] = result["timings"]["classify_s"]
        result = add_timeline(self, classifier, path, video, result)
        t = time.perf_counter()
        self.thumbnails = save_thumbnails(self.id, frames)
        self.timings["thumbnails_s"] = round(time.perf_counter() - t, 4)
        return result

    # -- endings
    def _finish(self, result: dict) -> None:
        thumbs = self.thumbnails
        pipeline = result.get("pipeline")
        pipeline_version = model_versions.pipeline_version(pipeline) if pipeline else None
        self._update(final=True, status="done", progress=100, finished_at=utcnow(), heartbeat_at=utcnow(),
                     label=result["label"], confidence=result["confidence"],
                     uncertain=result.get("uncertain"), probabilities=result["probabilities"], member_probabilities=result.get("members"),
                     agreement=result.get("agreement"), subcategory=result.get("subcategory"),
                     subcategory_confidence=result.get("subcategory_confidence"),
                     model_version=result.get("model_version"), pipeline_version=pipeline_version,
                     stage_timings=dict(self.timings), thumbnails_count=len(thumbs),
                     thumbnail_paths=[str(p) for p in thumbs], segments=result.get("segments"),
                     whole_video=_whole_video(result.get("whole_video")),
                     clip_features=self.clip_features,
                     features_pipeline=pipeline_version if self.clip_features else None,
                     review_score=review_priority(result))
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


def _whole_video(result: dict | None) -> dict | None:
    """The parts of the whole video's own result worth keeping with the job."""
    if not result:
        return None
    return {k: result.get(k) for k in ("label", "confidence", "uncertain", "probabilities", "subcategory",
                                       "subcategory_confidence", "agreement")}
