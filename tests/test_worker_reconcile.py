"""The reconciler and the claim rules on a real database and Redis (no worker processes)."""
import os
from datetime import timedelta
from pathlib import Path

import pytest
import redis

import servicekit as kit
from db import session as db_session
from db.models import Job, new_id, utcnow


@pytest.fixture
def env(tmp_path):
    url, proc = kit.shared_redis()
    env = kit.service_env(tmp_path, url, f"sqlite:///{tmp_path / 'r.db'}", tmp_path, tmp_path,
                          HEARTBEAT_STALE_S="30", QUEUED_STALE_S="600", MAX_ATTEMPTS="3")
    with kit.environ(env):
        db_session.upgrade()
        # A fresh Celery app so the broker URL and key prefix of this test apply.
        import worker.celery_app as celery_app
        saved = celery_app.app
        celery_app.app = celery_app.make_app()
        try:
            yield env, redis.Redis.from_url(url)
        finally:
            celery_app.app = saved
            r = redis.Redis.from_url(url)
            keys = list(r.scan_iter(env["REDIS_PREFIX"] + "*"))
            if keys:
                r.delete(*keys)
    if proc is not None:
        proc.terminate()
        proc.wait()


def _add(**fields) -> str:
    job_id = new_id()
    with db_session.session_scope() as s:
        s.add(Job(id=job_id, source_kind="url", source="https://e.org/x.mp4", **fields))
    return job_id


def _queued_ids(r, env):
    from worker.celery_app import QUEUES

    return "".join(m.decode() for q in QUEUES for m in r.lrange(env["REDIS_PREFIX"] + q, 0, -1))


def test_reconciler_requeues_dead_and_lost_jobs_only(env):
    from worker.reconcile import reconcile_once
    from worker.health_keys import key

    env, r = env
    now = utcnow()
    dead = _add(status="extracting", heartbeat_at=now - timedelta(seconds=120), attempts=1, task_id="t1")
    alive = _add(status="extracting", heartbeat_at=now, attempts=1, task_id="t2")
    fresh = _add(status="queued", enqueued_at=now)
    never = _add(status="queued", enqueued_at=None)
    old = _add(status="queued", enqueued_at=now - timedelta(seconds=3600))
    done = _add(status="done", enqueued_at=now - timedelta(seconds=3600))
    r.set(key("broker-marker"), "present")                   # broker kept its data
    counts = reconcile_once(r)
    assert counts == {"running_stale": 1, "queued_lost": 2, "retrains_failed": 0, "uploads_deleted": 0,
                      "features_cleared": 0, "thumbnails_deleted": 0}
    queued = _queued_ids(r, env)
    assert dead in queued and never in queued and old in queued
    assert alive not in queued and fresh not in queued and done not in queued
    with db_session.session_scope() as s:
        assert s.get(Job, dead).status == "queued" and s.get(Job, alive).status == "extracting"
    # The broker lost its data (marker gone): every queued job is published again.
    r.delete(env["REDIS_PREFIX"] + "jobs", key("broker-marker"), key("reconcile-lock"))
    counts = reconcile_once(r)
    assert counts["queued_lost"] == 4 and fresh in _queued_ids(r, env)
    assert reconcile_once(r) is None       # the lock: one reconciler per interval


def test_claim_rules(env):
    from worker.job_run import claim

    now = utcnow()
    queued = _add(status="queued", attempts=0)
    run = claim(queued, "task-a")
    assert run["id"] == queued
    assert claim(queued, "task-b") is None                   # running elsewhere, heartbeat fresh
    again = claim(queued, "task-a")                         # re-delivery of the same message
    assert again is not None
    with db_session.session_scope() as s:
        assert s.get(Job, queued).attempts == 2
    assert claim(_add(status="done"), "t") is None
    assert claim(_add(status="cancelled"), "t") is None
    tired = _add(status="queued", attempts=3)
    assert claim(tired, "t") is None
    with db_session.session_scope() as s:
        job = s.get(Job, tired)
        assert job.status == "failed" and job.error_code == "too_many_attempts"
    stale = _add(status="downloading", attempts=1, task_id="old", heartbeat_at=now - timedelta(seconds=300))
    assert claim(stale, "new") is not None                   # its worker is gone: take it over


def test_uploads_of_ended_jobs_are_deleted_after_the_retention_window(env, tmp_path):
    from api import create_app
    from worker.reconcile import delete_expired_uploads

    now = utcnow()
    files = {}

    def upload(name, **fields):
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(b"video bytes")
        files[name] = path
        job_id = new_id()
        with db_session.session_scope() as s:
            s.add(Job(id=job_id, source_kind="upload", source=f"{name}.mp4", file_path=str(path), **fields))
        return job_id

    old = timedelta(hours=25)
    expired = upload("expired", status="failed", error_code="bad_video", finished_at=now - old)
    cancelled = upload("cancelled", status="cancelled", finished_at=now - old)
    recent = upload("recent", status="failed", error_code="bad_video", finished_at=now - timedelta(hours=1))
    queued = upload("queued", status="queued", finished_at=now - old)     # retried: keeps its file

    assert delete_expired_uploads(now) == 2
    assert not files["expired"].exists() and not files["cancelled"].exists()
    assert files["recent"].exists() and files["queued"].exists()
    with db_session.session_scope() as s:
        assert s.get(Job, expired).file_path is None and s.get(Job, recent).file_path == str(files["recent"])
    assert delete_expired_uploads(now) == 0                                # idempotent

    client = create_app({"TESTING": True}).test_client()
    r = client.post(f"/api/jobs/{expired}/retry")
    assert r.status_code == 409 and r.get_json()["code"] == "upload_expired"
    assert client.get(f"/api/jobs/{cancelled}").get_json()["status"] == "cancelled"
    with db_session.session_scope() as s:
        assert s.get(Job, queued).status == "queued"


def _queue_ids(r, env, queue):
    return "".join(m.decode() for m in r.lrange(env["REDIS_PREFIX"] + queue, 0, -1))


def test_jobs_are_published_to_the_queue_of_their_stage(env, tmp_path):
    """URL jobs without their file go to `download`; downloaded URLs, uploads and test-set names
    to `classify`; the reconciler and the outbox route the same way (nothing waits on the wrong
    queue after a worker died between the stages)."""
    from worker.reconcile import publish_outbox, reconcile_once

    env, r = env
    now = utcnow()
    url = _add(status="queued", enqueued_at=None)
    downloaded = _add(status="queued", enqueued_at=None, file_path=str(tmp_path / "v.mp4"))
    with db_session.session_scope() as s:
        upload, name = new_id(), new_id()
        s.add(Job(id=upload, source_kind="upload", source="u.mp4", file_path=str(tmp_path / "u.mp4"),
                  status="queued", created_at=now - timedelta(seconds=10)))
        s.add(Job(id=name, source_kind="test-set", source="x.mp4", status="queued",
                  created_at=now - timedelta(seconds=10)))
    # A classify worker died mid-run of a downloaded job: back to classify, not to download.
    dead = _add(status="extracting", file_path=str(tmp_path / "d.mp4"), attempts=1,
                heartbeat_at=now - timedelta(seconds=3600), enqueued_at=now)
    counts = reconcile_once(r)
    assert counts["running_stale"] == 1
    download, classify = _queue_ids(r, env, "download"), _queue_ids(r, env, "classify")
    assert url in download and url not in classify
    for job_id in (downloaded, upload, name, dead):
        assert job_id in classify and job_id not in download
    assert "vidclass.download_job" in download and "vidclass.classify_job" in classify
    assert publish_outbox(r) in (0, None)


def test_claim_drops_a_message_for_the_other_stage(env, tmp_path):
    from worker.job_run import claim

    fresh = _add(status="queued")
    assert claim(fresh, "t1", stage="classify") is None            # not downloaded yet
    run = claim(fresh, "t1", stage="download")
    assert run is not None and run["stage_timings"] == {}
    with db_session.session_scope() as s:
        assert s.get(Job, fresh).status == "downloading"
    # Handed over to classification: a duplicate download message is dropped, classify continues
    # the run (download timings kept, progress from 30 %, attempts counted for this stage).
    started = utcnow() - timedelta(seconds=5)
    handed = _add(status="queued", file_path=str(tmp_path / "v.mp4"), attempts=0, started_at=started,
                  stage_timings={"download_s": 1.5})
    assert claim(handed, "t2", stage="download") is None
    run = claim(handed, "t3", stage="classify")
    assert run["stage_timings"] == {"download_s": 1.5}
    with db_session.session_scope() as s:
        job = s.get(Job, handed)
        assert job.status == "extracting" and job.attempts == 1 and job.progress == 30
        assert job.started_at == started


def test_a_job_whose_worker_process_is_gone_is_taken_over_without_waiting(env):
    """Two missed heartbeats and its worker's pid gone (on this machine): re-queued at once, not
    after HEARTBEAT_STALE_S; the job says `recovering` from three missed beats."""
    import os
    import socket
    import subprocess
    import sys

    from worker.reconcile import reconcile_once

    env, r = env
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    late = utcnow() - timedelta(seconds=16)          # HEARTBEAT_S 5: three beats missed, not 30 s
    orphan = _add(status="extracting", heartbeat_at=late, attempts=1, task_id="t1", worker=f"{host}:{gone.pid}")
    living = _add(status="extracting", heartbeat_at=late, attempts=1, task_id="t2", worker=f"{host}:{os.getpid()}")
    remote = _add(status="extracting", heartbeat_at=late, attempts=1, task_id="t3", worker=f"elsewhere:{gone.pid}")
    with db_session.session_scope() as s:
        assert all(s.get(Job, j).to_dict()["recovering"] for j in (orphan, living, remote))
    counts = reconcile_once(r)
    assert counts["running_stale"] == 1
    with db_session.session_scope() as s:
        assert s.get(Job, orphan).status == "queued" and not s.get(Job, orphan).to_dict()["recovering"]
        assert s.get(Job, living).status == "extracting" and s.get(Job, remote).status == "extracting"
    assert orphan in _queued_ids(r, env)


def test_clip_features_are_cleared_after_their_retention_unless_corrected(env, monkeypatch):
    from worker.reconcile import clear_expired_features

    now = utcnow()
    old_plain = _add(status="done", finished_at=now - timedelta(days=40), clip_features=b"\0\1", features_pipeline="p")
    old_corrected = _add(status="done", finished_at=now - timedelta(days=40), clip_features=b"\0\1",
                         features_pipeline="p", true_label="Gaming")
    recent = _add(status="done", finished_at=now - timedelta(days=2), clip_features=b"\0\1", features_pipeline="p")
    assert clear_expired_features(now) == 0                       # default 0: kept with the job
    monkeypatch.setenv("FEATURE_RETENTION_DAYS", "30")
    assert clear_expired_features(now) == 1
    with db_session.session_scope() as s:
        assert s.get(Job, old_plain).clip_features is None and s.get(Job, old_plain).features_pipeline is None
        assert s.get(Job, old_corrected).clip_features == b"\0\1" and s.get(Job, recent).clip_features == b"\0\1"


def test_thumbnails_are_deleted_after_their_retention(env, monkeypatch, tmp_path):
    from worker.reconcile import delete_expired_thumbnails

    env, _ = env
    now = utcnow()
    folders = {}

    def job(days_ago):
        job_id = new_id()
        folder = Path(env["THUMBNAIL_DIR"]) / job_id
        folder.mkdir(parents=True)
        (folder / "0.jpg").write_bytes(b"jpeg")
        folders[job_id] = folder
        with db_session.session_scope() as s:
            s.add(Job(id=job_id, source_kind="url", source="x", status="done", thumbnails_count=1,
                      thumbnail_paths=[str(folder / "0.jpg")], finished_at=now - timedelta(days=days_ago)))
        return job_id
    old, recent = job(40), job(1)
    assert delete_expired_thumbnails(now) == 0                 # default: kept with the job
    monkeypatch.setenv("THUMBNAIL_RETENTION_DAYS", "30")
    assert delete_expired_thumbnails(now) == 1
    assert not folders[old].exists() and folders[recent].exists()
    with db_session.session_scope() as s:
        assert s.get(Job, old).thumbnails_count == 0 and s.get(Job, old).to_dict()["thumbnails"] == []
        assert s.get(Job, recent).thumbnails_count == 1


def test_a_job_on_another_machine_is_taken_over_when_its_node_no_longer_lists_it(env):
    """Across machines: two missed beats and the job's process is not among the processes its
    host's live worker nodes report (or no node of that host beats): re-queued without waiting
    for HEARTBEAT_STALE_S. A process its node still lists is left alone."""
    import os
    import socket

    from worker import health_keys
    from worker.reconcile import reconcile_once

    env, r = env
    late = utcnow() - timedelta(seconds=16)
    listed = _add(status="extracting", heartbeat_at=late, attempts=1, task_id="r1", worker="m2:101")
    unlisted = _add(status="extracting", heartbeat_at=late, attempts=1, task_id="r2", worker="m2:202")
    host_gone = _add(status="extracting", heartbeat_at=late, attempts=1, task_id="r3", worker="m3:303")
    here = socket.gethostname()
    health_keys.beat_worker("classify@m2", 30, {"host": "m2", "pid": 100, "processes": ["m2:101"]})
    health_keys.beat_worker("classify@here", 30, {"host": here, "pid": os.getpid(), "processes": []})
    try:
        counts = reconcile_once(r)
        assert counts["running_stale"] == 2
        with db_session.session_scope() as s:
            assert s.get(Job, listed).status == "extracting"
            assert s.get(Job, unlisted).status == "queued" and s.get(Job, host_gone).status == "queued"
    finally:
        r.delete(health_keys.key("worker:classify@m2"), health_keys.key("worker:classify@here"))


def test_feature_cache_size_comes_from_its_setting():
    """VIDCLASS_FEATURE_CACHE=0 turns the per-process feature cache off (the throughput benchmark
    relies on it to run every clip; a misspelt name once made it report cache hits)."""
    import subprocess
    import sys

    code = "from worker.feature_cache import FEATURE_CACHE as c; c.put('k', 1); print(c.size, c.get('k'))"
    for value, expected in (("0", "0 None"), ("3", "3 1")):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "VIDCLASS_FEATURE_CACHE": value},
                             capture_output=True, text=True, check=True, cwd=kit.REPO).stdout.split("\n")[0]
        assert out == expected
