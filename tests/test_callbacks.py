"""Callbacks live in the database: Redis dies while a job runs, the job ends, and its callback is
still delivered, signed with a timestamp, while Redis is down. A private redis-server (never the
machine's shared one), a real worker process, a real receiver on 127.0.0.1. And the deliverer goes
through the connect-time private-address guard: a loopback receiver, directly or behind a
redirect, is refused unless ALLOWED_PRIVATE_NETWORKS lists it."""
import hashlib
import hmac
import http.server
import json
import os
import signal
import threading
import time

import pytest

import servicekit as kit
from test_worker import SECRET, assets, wait_job  # noqa: F401  (module fixture reused)

pytestmark = pytest.mark.slow


def _server(handler_cls):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_callback_delivered_while_redis_is_down(assets, tmp_path):  # noqa: F811
    clip = kit.CLIPS[0].read_bytes()
    gate, asked = threading.Event(), threading.Event()
    received = []

    class Clip(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_GET(self):            # holds the download until Redis is dead
            asked.set()
            gate.wait(30)
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(clip)))
            self.end_headers()
            self.wfile.write(clip)

    class Hook(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_POST(self):
            received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

    clips, clip_base = _server(Clip)
    hook, hook_base = _server(Hook)
    redis_proc, redis_url = kit.start_redis(kit.free_port())
    env = kit.service_env(tmp_path, redis_url, f"sqlite:///{tmp_path / 'cb.db'}", assets["tmp"] / "models",
                          assets["tmp"] / "features", CALLBACK_SECRET=SECRET)
    workers = None
    try:
        with kit.environ(env):
            from api import create_app
            from db import session
            from db.models import Callback

            session.upgrade(env["DATABASE_URL"])
            client = create_app({"TESTING": True}).test_client()
            workers = kit.Workers(env, concurrency=1, log=tmp_path / "worker.log").start()
            job_id = client.post("/api/jobs", json={"url": f"{clip_base}/slow.mp4",
                                                    "callback_url": f"{hook_base}/hook"}).get_json()["id"]
            assert asked.wait(180), "the worker never started the download"
            redis_proc.send_signal(signal.SIGKILL)         # Redis gone while the job runs
            redis_proc.wait()
            gate.set()
            job = wait_job(client, job_id, timeout=120)
            assert job["status"] == "done", job
            kit.wait_for(lambda: received, 60, what="the callback, with Redis still down")
            assert redis_proc.poll() is not None           # still down when it arrived
            headers, body = received[0]
            stamp = headers["X-Vidclass-Timestamp"]
            assert abs(int(stamp) - time.time()) < 300
            expected = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body,
                                            hashlib.sha256).hexdigest()
            assert headers["X-Vidclass-Signature"] == expected
            assert json.loads(body)["id"] == job_id and json.loads(body)["status"] == "done"
            with session.session_scope() as s:
                rows = s.query(Callback).filter_by(job_id=job_id).all()
                assert [(c.status, c.attempts) for c in rows] == [("delivered", 1)]
            assert client.get(f"/api/jobs/{job_id}").get_json()["callback_status"] == "delivered"
    finally:
        gate.set()
        if redis_proc.poll() is not None:                   # back, so the worker can shut down
            redis_proc, _ = kit.start_redis(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
        if workers:
            workers.stop()
        redis_proc.terminate()
        redis_proc.wait()
        clips.shutdown()
        hook.shutdown()


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Records POSTs; /redirect answers 307 to the Location given in the query string."""
    posts: list = []

    def log_message(self, *_):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/redirect?to="):
            self.send_response(307)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.posts.append((self.server.server_address[1], self.path))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_callback_delivery_goes_through_the_connect_time_guard(tmp_path):
    """The DB-backed deliverer (worker/callbacks.py) opens every connection, redirects included,
    inside netguard: a loopback receiver is refused (failed at once, no retries, nothing POSTed,
    a plain message naming ALLOWED_PRIVATE_NETWORKS) unless ALLOWED_PRIVATE_NETWORKS lists it."""
    hook, hook_base = _server(_Receiver)
    relay, relay_base = _server(_Receiver)
    hook_port, relay_port = hook.server_address[1], relay.server_address[1]
    _Receiver.posts = []
    env = kit.service_env(tmp_path, "redis://127.0.0.1:1/0", f"sqlite:///{tmp_path / 'guard.db'}",
                          tmp_path, tmp_path, CALLBACK_SECRET=SECRET, CALLBACK_RETRIES="5")
    try:
        with kit.environ(env):
            from db import session
            from db.models import Callback, Job, new_id, utcnow
            from worker import callbacks

            session.upgrade(env["DATABASE_URL"])

            def deliver(url, allowed):
                os.environ["ALLOWED_PRIVATE_NETWORKS"] = allowed
                job_id = new_id()
                with session.session_scope() as s:
                    s.add(Job(id=job_id, source_kind="url", source="https://example.com/v.mp4",
                              status="done", created_at=utcnow(), finished_at=utcnow(),
                              callback_url=url))
                    s.flush()
                    callbacks.record(s, job_id, url)
                assert callbacks.deliver_due() == 1
                with session.session_scope() as s:
                    cb = s.query(Callback).filter_by(job_id=job_id).one()
                    return (cb.status, cb.attempts, cb.last_error,
                            s.get(Job, job_id).callback_status)

            # Nothing allowed: the loopback receiver is refused at connect time, for good.
            status, attempts, error, job_status = deliver(f"{hook_base}/hook", "")
            assert (status, attempts, job_status) == ("failed", 1, "failed")
            assert f"127.0.0.1:{hook_port} is a loopback address" in error
            assert "ALLOWED_PRIVATE_NETWORKS" in error
            assert "Errno" not in error and "ConnectionPool" not in error
            assert callbacks.deliver_due() == 0          # not retried
            assert _Receiver.posts == []

            # An allowed relay redirecting to a receiver that is not allowed: that hop is refused.
            status, attempts, error, _ = deliver(f"{relay_base}/redirect?to={hook_base}/hook",
                                                 f"127.0.0.1:{relay_port}")
            assert (status, attempts) == ("failed", 1)
            assert f"127.0.0.1:{hook_port} is a loopback address" in error
            assert _Receiver.posts == []

            # Allowed (the receiver's address, or both hops): delivered.
            assert deliver(f"{hook_base}/hook", f"127.0.0.1:{hook_port}")[:2] == ("delivered", 1)
            assert deliver(f"{relay_base}/redirect?to={hook_base}/hook", "127.0.0.1")[:2] == \
                ("delivered", 1)
            assert _Receiver.posts == [(hook_port, "/hook"), (hook_port, "/hook")]
    finally:
        hook.shutdown()
        relay.shutdown()
