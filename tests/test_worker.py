"""End to end: the API (in process), real Celery worker processes, real Redis, SQLite and PostgreSQL.

Jobs for a served clip, an upload, a test-set name and a 500-URL batch all reach `done`;
history filters and CSV export return them; bad inputs fail with reasons; a worker process
killed with SIGKILL mid-job loses nothing; finished jobs call back, signed.
"""
import csv
import hashlib
import hmac
import http.server
import io
import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import servicekit as kit
from vidclass import CLASS_NAMES

pytestmark = pytest.mark.slow

SECRET = "test-callback-secret"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("assets")
    (tmp / "models").mkdir()
    (tmp / "features").mkdir()
    pipeline = kit.write_random_models(tmp / "models")
    names = kit.write_test_set(tmp / "features", pipeline, kit.CLIPS[:1])
    clips = kit.copy_clips(tmp / "clips")
    return {"tmp": tmp, "names": names, "clips": clips}


@contextmanager
def running_service(assets, tmp: Path, database_url: str, redis_url: str, concurrency: int = 2,
                    models_dir: Path | None = None, **extra_env):
    env = kit.service_env(tmp, redis_url, database_url, models_dir or assets["tmp"] / "models",
                          assets["tmp"] / "features", CALLBACK_SECRET=SECRET, **extra_env)
    server = kit.ClipServer(assets["tmp"] / "clips")
    workers = None
    with kit.environ(env):
        from api import create_app
        from db import session

        session.upgrade(database_url)
        app = create_app({"TESTING": True})
        # As `vidclass up` runs them: a download worker, a classification worker and a fast-queue worker.
        workers = kit.Workers.like_up(env, concurrency=concurrency, log=tmp / "worker.log").start()
        try:
            yield {"client": app.test_client(), "server": server, "env": env, "workers": workers,
                   "tmp": tmp}
        finally:
            workers.stop()
            server.close()
            _drop_redis_keys(redis_url, env["REDIS_PREFIX"])


def _drop_redis_keys(url, prefix):
    import redis

    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(prefix + "*"))
    if keys:
        r.delete(*keys)


@pytest.fixture(scope="module")
def service(assets, redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sqlite-service")
    with running_service(assets, tmp, f"sqlite:///{tmp / 'vidclass.db'}", redis_url) as svc:
        yield svc


def wait_job(client, job_id, timeout=180):
    def finished():
        job = client.get(f"/api/jobs/{job_id}").get_json()
        return job if job["status"] in ("done", "failed", "cancelled") else None
    return kit.wait_for(finished, timeout, what=f"job {job_id}")


def check_result(job):
    assert job["status"] == "done", job
    assert job["label"] in CLASS_NAMES
    assert abs(sum(job["probabilities"].values()) - 1) < 1e-4
    assert job["confidence"] == max(job["probabilities"].values())
    assert len(job["members"]) == 2 and 0 <= job["agreement"] <= 1
    assert job["model_version"] and job["pipeline_version"] and job["progress"] == 100


def test_url_upload_and_test_set_jobs_reach_done(service, assets):
    c, server = service["client"], service["server"]
    clip_a, clip_b = kit.CLIPS[1], kit.CLIPS[2]
    r_url = c.post("/api/jobs", json={"url": server.url(clip_a.name)})
    assert r_url.status_code == 202 and r_url.get_json()["status"] == "queued"
    with open(clip_b, "rb") as f:
        r_up = c.post("/api/jobs", data={"file": (f, clip_b.name)}, content_type="multipart/form-data")
    assert r_up.status_code == 202, r_up.get_json()
    videos = c.get("/api/videos").get_json()
    assert assets["names"][0] in [n for names in videos["categories"].values() for n in names]
    r_name = c.post("/api/jobs", json={"video": assets["names"][0]})
    assert r_name.status_code == 202

    url_job = wait_job(c, r_url.get_json()["id"])
    up_job = wait_job(c, r_up.get_json()["id"])
    name_job = wait_job(c, r_name.get_json()["id"])
    for job in (url_job, up_job, name_job):
        check_result(job)
    # What a correction needs once the video is gone: the clip's pooled features (float16) and
    # the digest of the pipeline that made them; and how much a correction would teach.
    import numpy as np
    from db import session as db_session
    from db.models import Job
    with db_session.session_scope(service["env"]["DATABASE_URL"]) as s:
        for job in (url_job, up_job):
            row = s.get(Job, job["id"])
            vector = np.frombuffer(row.clip_features, dtype=np.float16)
            assert vector.size > 0 and vector.size % 2 == 0          # [mean | std]
            assert np.isfinite(vector).all() and np.abs(vector).max() > 0
            assert row.features_pipeline == job["pipeline_version"] and row.review_score is not None
        assert s.get(Job, up_job["id"]).clip_features != s.get(Job, url_job["id"]).clip_features
    assert {"download_s", "sample_s", "features_s", "classify_s"} <= set(url_job["stage_timings"])
    assert up_job["source_kind"] == "upload" and up_job["source"] == clip_b.name
    # Thumbnails of the sampled frames are served as JPEG.
    assert len(url_job["thumbnails"]) == 4
    thumb = c.get(url_job["thumbnails"][0])
    assert thumb.status_code == 200 and thumb.data[:3] == b"\xff\xd8\xff"
    assert c.get(f"/api/jobs/{url_job['id']}/thumbnails/9.jpg").get_json()["code"] == "thumbnail_not_found"
    # The same test-set name answers synchronously through the fast queue, with the same numbers.
    sync = c.post("/api/classify", json={"video": assets["names"][0]}).get_json()
    assert sync["probabilities"] == pytest.approx(name_job["probabilities"], abs=1e-6)
    # The same clip bytes classified by URL and by upload give the same answer.
    with open(clip_a, "rb") as f:
        again = c.post("/api/classify?wait=120", data={"file": (f, clip_a.name)},
                       content_type="multipart/form-data")
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["probabilities"] == pytest.approx(url_job["probabilities"], abs=1e-5)

    health = c.get("/api/health").get_json()
    assert health["status"] == "ok" and health["model"]["model_version"] == url_job["model_version"]
    # Where it runs, chosen at start: here the CPU, ONNX Runtime for the nets.
    runtime = health["model"]["runtime"]
    assert runtime["device"] == "cpu" and runtime["backbone"] == "onnx"
    assert runtime["providers"] == ["CPUExecutionProvider"] and runtime["members"] in ("numpy", "torch")
    assert health["workers"], "the worker's heartbeat is visible to the API"

    # History finds them by text, kind, status, label and confidence; CSV exports them.
    hist = c.get(f"/api/jobs?q={clip_a.name}&status=done").get_json()
    assert url_job["id"] in [j["id"] for j in hist["jobs"]]
    assert all(clip_a.name in j["source"] for j in hist["jobs"])
    uploads = c.get("/api/jobs?source_kind=upload&per_page=100").get_json()["jobs"]
    assert up_job["id"] in [j["id"] for j in uploads] and all(j["source_kind"] == "upload" for j in uploads)
    label = url_job["label"]
    by_label = c.get(f"/api/jobs?label={label}&min_confidence={url_job['confidence']}&per_page=500").get_json()
    assert url_job["id"] in [j["id"] for j in by_label["jobs"]]
    assert all(j["label"] == label and j["confidence"] >= url_job["confidence"] for j in by_label["jobs"])
    rows = list(csv.DictReader(io.StringIO(c.get("/api/jobs?format=csv&status=done").data.decode())))
    exported = {r["id"]: r for r in rows}
    assert {url_job["id"], up_job["id"], name_job["id"]} <= set(exported)
    assert exported[url_job["id"]]["label"] == url_job["label"]


def test_batch_of_500_urls_reaches_done(service):
    c, server = service["client"], service["server"]
    urls = [server.url(kit.CLIPS[i % len(kit.CLIPS)].name) + f"?copy={i}" for i in range(500)]
    started = time.monotonic()
    r = c.post("/api/batches", json={"urls": urls + ["not a url", urls[0], ""], "name": "five hundred"})
    assert r.status_code == 202, r.get_json()
    batch = r.get_json()
    assert batch["total"] == 500
    assert [(e["line"], e["code"]) for e in batch["invalid_lines"]] == [(501, "bad_url"), (502, "duplicate_url")]
    cancelled = c.get(f"/api/jobs?batch={batch['id']}&sort=created_at&per_page=1").get_json()["jobs"][0]
    assert c.post(f"/api/jobs/{cancelled['id']}/cancel").status_code in (200, 409)

    def batch_done():
        b = c.get(f"/api/batches/{batch['id']}").get_json()
        return b if b["done"] else None
    final = kit.wait_for(batch_done, 300, interval=2, what="500-URL batch")
    elapsed = time.monotonic() - started
    counts = final["status_counts"]
    assert counts.get("done", 0) + counts.get("cancelled", 0) == 500, counts
    assert counts.get("cancelled", 0) <= 1 and final["progress"] == 100.0
    page = c.get(f"/api/jobs?batch={batch['id']}&status=done&per_page=500&sort=confidence&order=desc").get_json()
    assert page["total"] == counts["done"]
    confidences = [j["confidence"] for j in page["jobs"]]
    assert confidences == sorted(confidences, reverse=True)
    rows = list(csv.DictReader(io.StringIO(c.get(f"/api/jobs?format=csv&batch={batch['id']}").data.decode())))
    assert len(rows) == 500 and {r["source"] for r in rows} == set(urls)
    print(f"500-URL batch done in {elapsed:.1f} s")


def test_bad_inputs_fail_with_reasons(service):
    c, server = service["client"], service["server"]
    ids = {
        "not_a_video": c.post("/api/jobs", json={"url": server.url("notes.txt")}).get_json()["id"],
        "not_found": c.post("/api/jobs", json={"url": server.url("missing.mp4")}).get_json()["id"],
        "network_error": c.post("/api/jobs", json={"url": "http://127.0.0.1:1/v.mp4"}).get_json()["id"],
    }
    with open(kit.FIXTURES / "LICENSES.md", "rb") as f:
        ids["bad_video"] = c.post("/api/jobs", data={"file": (f, "clip.mp4")},
                                  content_type="multipart/form-data").get_json()["id"]
    for code, job_id in ids.items():
        job = wait_job(c, job_id)
        assert job["status"] == "failed" and job["error"]["code"] == code, job
        message = job["error"]["message"]
        # A plain sentence: no server paths, no library text.
        for leak in (service["env"]["UPLOAD_DIR"], "Errno", "ConnectionPool", "Traceback"):
            assert leak not in message, (code, message)
        if code == "network_error":
            assert message == "The server at 127.0.0.1:1 refused the connection."
    # A failed job can be retried (and fails again for the same reason); a done one cannot.
    retry = c.post(f"/api/jobs/{ids['not_found']}/retry")
    assert retry.status_code == 202 and retry.get_json()["status"] == "queued"
    assert wait_job(c, ids["not_found"])["error"]["code"] == "not_found"
    assert c.post(f"/api/jobs/{ids['not_found']}/cancel").get_json()["code"] == "not_cancellable"
    assert c.post("/api/jobs", json={"video": "no_such_video.mp4"}).get_json()["code"] == "unknown_video"
    assert c.post("/api/classify", json={"video": "no_such_video.mp4"}).status_code == 404
    failed = c.get("/api/jobs?status=failed&per_page=100").get_json()["jobs"]
    assert set(ids.values()) <= {j["id"] for j in failed}


def test_sigkilled_worker_process_loses_no_job(service, assets):
    c, server = service["client"], service["server"]
    # Unique bytes (a valid clip plus padding) so no worker has its features cached.
    clip = kit.CLIPS[3].read_bytes() + os.urandom(64)
    (assets["tmp"] / "clips" / "unique.mp4").write_bytes(clip)
    job_id = c.post("/api/jobs", json={"url": server.url("unique.mp4")}).get_json()["id"]

    def extracting():
        job = c.get(f"/api/jobs/{job_id}").get_json()
        return job if job["status"] == "extracting" else None
    kit.wait_for(extracting, 120, interval=0.1, what="the job to be extracting")
    from db import session
    from db.models import Job
    with session.session_scope(service["env"]["DATABASE_URL"]) as s:
        pid = int(s.get(Job, job_id).worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    job = wait_job(c, job_id, timeout=180)
    check_result(job)
    assert job["attempts"] == 2, "the re-delivered job restarted and counted its attempt"


def test_finished_job_calls_back_signed(service):
    c, server = service["client"], service["server"]
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(500 if len(received) == 1 else 200)   # first delivery fails
            self.end_headers()

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        callback = f"http://127.0.0.1:{hook.server_address[1]}/hook"
        r = c.post("/api/jobs", json={"url": server.url(kit.CLIPS[0].name), "callback_url": callback})
        job_id = r.get_json()["id"]
        kit.wait_for(lambda: len(received) >= 2, 120, what="the callback to be retried and delivered")
        headers, body = received[-1]
        # Signed over timestamp + "." + body: a receiver can refuse old (replayed) requests.
        stamp = headers["X-Vidclass-Timestamp"]
        assert abs(int(stamp) - time.time()) < 300
        expected = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["X-Vidclass-Signature"] == expected
        payload = json.loads(body)
        assert payload["id"] == job_id and payload["status"] == "done" and payload["label"] in CLASS_NAMES
        kit.wait_for(lambda: c.get(f"/api/jobs/{job_id}").get_json()["callback_status"] == "delivered",
                     30, what="callback_status delivered")
    finally:
        hook.shutdown()
        hook.server_close()


def test_postgresql_backend_end_to_end(assets, redis_url, tmp_path):
    pg = kit.postgres_schema_url()
    if pg is None:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    url, schema = pg
    try:
        with running_service(assets, tmp_path, url, redis_url) as svc:
            c, server = svc["client"], svc["server"]
            single = c.post("/api/jobs", json={"url": server.url(kit.CLIPS[0].name)},
                            headers={"Idempotency-Key": "pg-1"})
            assert single.status_code == 202
            assert c.post("/api/jobs", json={"url": server.url(kit.CLIPS[0].name)},
                          headers={"Idempotency-Key": "pg-1"}).get_json()["id"] == single.get_json()["id"]
            name = c.post("/api/jobs", json={"video": assets["names"][0]}).get_json()
            urls = [server.url(kit.CLIPS[i % 4].name) + f"?n={i}" for i in range(40)]
            batch = c.post("/api/batches", json={"urls": urls}).get_json()
            check_result(wait_job(c, single.get_json()["id"]))
            check_result(wait_job(c, name["id"]))
            final = kit.wait_for(lambda: (lambda b: b if b["done"] else None)(
                c.get(f"/api/batches/{batch['id']}").get_json()), 180, what="PG batch")
            assert final["status_counts"] == {"done": 40}
            hist = c.get(f"/api/jobs?batch={batch['id']}&q=%3Fn%3D1&per_page=100").get_json()
            assert hist["total"] == 11      # ?n=1 and ?n=10..19
            health = c.get("/api/health").get_json()
            assert health["database"]["backend"].startswith("postgresql")
    finally:
        kit.drop_postgres_schema(schema)


def test_cancel_stops_a_running_job(service, assets):
    c, server = service["client"], service["server"]
    (assets["tmp"] / "clips" / "cancel.mp4").write_bytes(kit.CLIPS[2].read_bytes() + os.urandom(64))
    job_id = c.post("/api/jobs", json={"url": server.url("cancel.mp4")}).get_json()["id"]
    kit.wait_for(lambda: c.get(f"/api/jobs/{job_id}").get_json()["status"] == "extracting", 120,
                 interval=0.1, what="the job to be extracting")
    r = c.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    deadline = time.monotonic() + 20        # longer than the extraction would take
    while time.monotonic() < deadline:
        job = c.get(f"/api/jobs/{job_id}").get_json()
        assert job["status"] == "cancelled" and job["label"] is None, job
        time.sleep(1)


class _Hook(http.server.BaseHTTPRequestHandler):
    """A callback receiver (records POSTs) that also serves /trickle.mp4 one byte a second."""
    posts: list = []
    trickle_closed = threading.Event()

    def log_message(self, *_):
        pass

    def do_POST(self):
        self.posts.append(self.path)
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            for _ in range(600):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(1)
        except OSError:          # the worker cut the connection
            self.trickle_closed.set()


@contextmanager
def hook_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_guard_refuses_callbacks_to_internal_addresses_and_max_seconds_covers_uploads(
        assets, redis_url, tmp_path):
    with hook_server() as hook_port, running_service(
            assets, tmp_path, f"sqlite:///{tmp_path / 'blocked.db'}", redis_url, concurrency=1,
            MAX_VIDEO_SECONDS="2", ALLOWED_PRIVATE_NETWORKS="") as svc:
        c, server = svc["client"], svc["server"]
        # The clip server is on 127.0.0.1 too: with nothing allowed, the job is refused.
        svc_port = server.base.rsplit(":", 1)[1]
        job_id = c.post("/api/jobs", json={"url": server.url(kit.CLIPS[0].name),
                                           "callback_url": f"http://127.0.0.1:{hook_port}/hook"}
                        ).get_json()["id"]
        job = wait_job(c, job_id)
        assert job["status"] == "failed" and job["error"]["code"] == "blocked_url", job
        assert f"127.0.0.1:{svc_port} is a loopback address" in job["error"]["message"]
        assert "ALLOWED_PRIVATE_NETWORKS" in job["error"]["message"]
        kit.wait_for(lambda: c.get(f"/api/jobs/{job_id}").get_json()["callback_status"] == "failed",
                     30, what="the callback to an internal address to be refused")
        assert _Hook.posts == [], "the callback reached the internal server"
        # ... and the job says why
        assert f"127.0.0.1:{hook_port} is a loopback address" in c.get(f"/api/jobs/{job_id}").get_json()["callback_error"]
        # MAX_VIDEO_SECONDS applies to uploads as well as downloads.
        with open(kit.CLIPS[0], "rb") as f:
            up = c.post("/api/jobs", data={"file": (f, "long.mp4")}, content_type="multipart/form-data")
        job = wait_job(c, up.get_json()["id"])
        assert job["status"] == "failed" and job["error"]["code"] == "too_long", job
        assert "MAX_VIDEO_SECONDS" in job["error"]["message"]


def test_still_image_upload_fails_as_not_a_video(service, tmp_path):
    from PIL import Image

    c = service["client"]
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(photo, "JPEG")
    with open(photo, "rb") as f:
        r = c.post("/api/jobs", data={"file": (f, "holiday.mp4")}, content_type="multipart/form-data")
    job = wait_job(c, r.get_json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "not_a_video", job
    assert "still image" in job["error"]["message"] and service["env"]["UPLOAD_DIR"] not in \
        job["error"]["message"]


def test_cancel_stops_a_download_from_a_trickling_server(service):
    c = service["client"]
    _Hook.trickle_closed.clear()
    with hook_server() as port:
        job_id = c.post("/api/jobs", json={"url": f"http://127.0.0.1:{port}/trickle.mp4"}).get_json()["id"]
        kit.wait_for(lambda: c.get(f"/api/jobs/{job_id}").get_json()["status"] == "downloading", 60,
                     interval=0.2, what="the job to be downloading")
        time.sleep(1)
        assert c.post(f"/api/jobs/{job_id}/cancel").status_code == 200
        # The worker notices at its next heartbeat (HEARTBEAT_S=1 here) and cuts the connection.
        assert _Hook.trickle_closed.wait(10), "the download kept going after the cancel"
        assert c.get(f"/api/jobs/{job_id}").get_json()["status"] == "cancelled"


MODELS = kit.REPO / "models_enhanced"
EXPECTED = {"animation": "Animation", "flat": "Flat_Content", "gaming": "Gaming", "natural": "Natural_Content"}


@pytest.mark.skipif(not any(MODELS.glob("*.pt")), reason="no trained checkpoint in models_enhanced/ yet")
def test_trained_model_labels_the_fixture_clips(assets, redis_url, tmp_path):
    with running_service(assets, tmp_path, f"sqlite:///{tmp_path / 'real.db'}",
                         redis_url, models_dir=MODELS) as svc:
        c, server = svc["client"], svc["server"]
        ids = {clip.name: c.post("/api/jobs", json={"url": server.url(clip.name)}).get_json()["id"]
               for clip in kit.CLIPS}
        for name, job_id in ids.items():
            job = wait_job(c, job_id, timeout=300)
            assert job["status"] == "done", job
            assert job["label"] == EXPECTED[name.split("_")[0]], (name, job["probabilities"])
