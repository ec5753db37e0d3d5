"""Batch submission is safe to retry: a real API process SIGKILLed right after it committed a
10,000-URL batch loses no job (the workers' outbox publishes every committed row within seconds,
not after QUEUED_STALE_S), and the client's retry with the same Idempotency-Key doubles nothing."""
import json
import sqlite3
import threading
import time

import pytest
import redis

import servicekit as kit

pytestmark = pytest.mark.slow

N = 10000


def _queued_ids(r, prefix) -> set[str]:
    import base64

    out = set()
    for raw in r.lrange(prefix + "download", 0, -1):     # a batch's URL jobs: the download queue
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        out.add(body[0][0])
    return out


def test_sigkill_mid_batch_then_retry_loses_and_doubles_nothing(redis_url, tmp_path):
    db_file = tmp_path / "outbox.db"
    env = kit.service_env(tmp_path, redis_url, f"sqlite:///{db_file}", tmp_path, tmp_path,
                          QUEUED_STALE_S="900", OUTBOX_INTERVAL_S="1")
    with kit.environ(env):
        from db import session
        session.upgrade(env["DATABASE_URL"])
    r = redis.Redis.from_url(redis_url)
    urls = [f"https://cdn.example.org/v/{i}.mp4" for i in range(N)]
    body = {"urls": urls, "name": "retry me"}
    key = {"Idempotency-Key": "batch-retry-1"}
    server = kit.ApiServer(env, log=tmp_path / "api.log").start()
    answer = {}

    def submit():
        try:
            answer["r"] = kit.call("POST", server.base + "/api/batches", body, key, timeout=60)
        except OSError as exc:              # the connection dies with the process
            answer["error"] = exc
    thread = threading.Thread(target=submit)
    thread.start()
    # SIGKILL the moment the batch is committed: before (most of) its publishing is marked done.
    conn = sqlite3.connect(db_file, timeout=30)
    deadline = time.monotonic() + 60
    while not conn.execute("SELECT count(*) FROM batches").fetchone()[0]:
        assert time.monotonic() < deadline, "the batch was never committed"
        time.sleep(0.002)
    server.kill()
    thread.join(30)
    unmarked = conn.execute("SELECT count(*) FROM jobs WHERE enqueued_at IS NULL").fetchone()[0]
    committed = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    assert committed == N                      # batch and jobs commit together, or not at all
    print(f"killed with {unmarked} of {N} committed rows not yet marked published; answer: {answer}")

    # The workers' outbox (the real reconciler loop, here in a thread) publishes them in seconds.
    with kit.environ(env):
        import worker.celery_app as celery_app
        from worker import health_keys, reconcile
        # The broker kept its data (only the API died): without this marker the reconciler would
        # re-publish every queued job anyway, and the test would not see the outbox at work.
        r.set(health_keys.key("broker-marker"), "present")
        saved = celery_app.app
        celery_app.app = celery_app.make_app()
        reconcile.start_thread("outbox-test")
        try:
            ids = {row[0] for row in conn.execute("SELECT id FROM jobs")}

            def all_published():
                left = conn.execute("SELECT count(*) FROM jobs WHERE enqueued_at IS NULL").fetchone()[0]
                return left == 0 and ids <= _queued_ids(r, env["REDIS_PREFIX"])
            kit.wait_for(all_published, 30, interval=0.5, what="every committed row to be published")
        finally:
            reconcile.stop_thread()
            celery_app.app = saved

    # The client retries with the same key: it gets the committed batch, not a second one.
    server = kit.ApiServer(env, log=tmp_path / "api.log").start()
    try:
        status, _, batch = kit.call("POST", server.base + "/api/batches", body, key, timeout=60)
        assert status == 200 and batch["total"] == N and batch["name"] == "retry me"
        status, _, again = kit.call("POST", server.base + "/api/batches", body, key, timeout=60)
        assert status == 200 and again["id"] == batch["id"]
        assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == N
        # The same key with another body is a client bug: 422, not the old batch.
        status, _, err = kit.call("POST", server.base + "/api/batches", {"urls": urls[:10]}, key)
        assert status == 422 and err["code"] == "idempotency_key_reused"
    finally:
        server.stop()
        conn.close()
        keys = list(r.scan_iter(env["REDIS_PREFIX"] + "*"))
        if keys:
            r.delete(*keys)
