"""The reconciler and the claim rules on a real database and Redis (no worker processes)."""
from datetime import timedelta

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
    return "".join(m.decode() for m in r.lrange(env["REDIS_PREFIX"] + "jobs", 0, -1))


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
    assert counts == {"running_stale": 1, "queued_lost": 2, "uploads_deleted": 0}
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
    from worker.tasks import claim

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
