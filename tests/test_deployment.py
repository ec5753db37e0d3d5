"""The production layout on one machine, every part a separate process, nothing mocked.

PostgreSQL (a fresh schema of the `test` database on 127.0.0.1:5432), Redis (a private key
prefix), the schema from `vidclass db upgrade`, an API key from `vidclass keys create`, the API
under gunicorn with keys required, one download worker (`vidclass worker --queues download`,
threads, no torch) and two classification workers (`vidclass worker --queues classify`).
A 50-clip batch from a local HTTP server ends with every job done exactly once (one ending per
job in the database, one "done" per job in the workers' logs, each callback delivered), although
one classification worker is SIGKILLed, with its pool, in the middle of a job.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import servicekit as kit
from test_worker import assets  # noqa: F401  (module fixture reused: random models, clips)

pytestmark = pytest.mark.slow

N_CLIPS = 50


class CallbackReceiver:
    """Counts the callback POSTs per job id."""

    def __init__(self):
        self.counts: Counter = Counter()
        lock = threading.Lock()
        counts = self.counts

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    job_id = json.loads(body)["id"]
                except (ValueError, KeyError):
                    job_id = "?"
                with lock:
                    counts[job_id] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def cli(env, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidclass.cli", *args], cwd=kit.REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=True)


def start_worker(env, queues: str, name: str, concurrency: int, log: Path) -> subprocess.Popen:
    """`vidclass worker` exactly as an operator (or the compose file) runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "vidclass.cli", "worker", "--queues", queues, "--name", name,
         "--concurrency", str(concurrency)],
        cwd=kit.REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def pids_of_group(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    out.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return out


def maps_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def test_multi_process_deployment_survives_a_killed_classification_worker(assets, tmp_path):  # noqa: F811
    pg = kit.postgres_schema_url()
    if pg is None:
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not reachable")
    pg_url, schema = pg
    redis_url, redis_proc = kit.shared_redis()
    env = kit.service_env(
        tmp_path, redis_url, pg_url, assets["tmp"] / "models", assets["tmp"] / "features",
        VIDCLASS_REQUIRE_KEYS="1", DOWNLOAD_DIR=str(tmp_path / "shared" / "downloads"),
        # A dead worker's running job is re-queued after 6 s, a message it had reserved after 20 s.
        HEARTBEAT_S="1", HEARTBEAT_STALE_S="6", QUEUED_STALE_S="20",
        # Every clip is really sampled and run through the CNN (no per-process feature cache), so
        # the kill lands in the middle of real work.
        VIDCLASS_FEATURE_CACHE="0")
    clips = kit.ClipServer(assets["tmp"] / "clips")
    hooks = CallbackReceiver()
    procs: list[subprocess.Popen] = []
    api = None
    try:
        cli(env, "db", "upgrade")
        token = cli(env, "keys", "create", "--name", "deployment-test").stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}
        api = kit.ApiServer(env, log=tmp_path / "api.log", processes=2).start()
        download = start_worker(env, "download", "dl@%h", 4, tmp_path / "download.log")
        c1 = start_worker(env, "classify", "c1@%h", 1, tmp_path / "c1.log")
        c2 = start_worker(env, "classify", "c2@%h", 1, tmp_path / "c2.log")
        procs += [download, c1, c2]

        # Without a key, writes are refused.
        status, _, _ = kit.call("POST", api.base + "/api/batches", {"urls": [clips.url(kit.CLIPS[0].name)]})
        assert status == 401
        urls = [clips.url(kit.CLIPS[i % len(kit.CLIPS)].name) + f"?n={i}" for i in range(N_CLIPS)]
        status, _, batch = kit.call("POST", api.base + "/api/batches",
                                    {"urls": urls, "callback_url": hooks.url}, headers=auth)
        assert status in (200, 201, 202), batch
        assert batch["total"] == N_CLIPS

        def state():
            return kit.call("GET", f"{api.base}/api/batches/{batch['id']}", headers=auth)[2]     # reads need the key too

        # Kill c1 while it is in the middle of a job: its parent and its pool process, SIGKILL,
        # so nothing of it can re-queue or clean up.
        def c1_running_job():
            pool = [p for p in pids_of_group(c1.pid) if p != c1.pid]
            if not pool:
                return None
            import psycopg

            with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test") as conn:
                conn.execute(f"SET search_path TO {schema}")
                rows = conn.execute("SELECT id, worker FROM jobs WHERE status IN "
                                    "('extracting', 'classifying')").fetchall()
            mine = [job_id for job_id, worker in rows if worker and int(worker.rsplit(":", 1)[1]) in pool]
            done = state()["status_counts"].get("done", 0)
            return mine[0] if mine and done >= 5 else None

        victim = kit.wait_for(c1_running_job, 300, interval=0.2, what="c1 to run a job mid-batch")
        # The download worker is the light one: no torch in its address space.
        assert not any(maps_torch(p) for p in pids_of_group(download.pid)), "download worker loaded torch"
        assert any(maps_torch(p) for p in pids_of_group(c2.pid)), "classification worker without torch?"
        os.killpg(c1.pid, signal.SIGKILL)
        c1.wait()
        done_at_kill = state()["status_counts"].get("done", 0)
        assert done_at_kill < N_CLIPS

        final = kit.wait_for(lambda: (lambda b: b if b["done"] else None)(state()), 600, interval=1,
                             what="the batch to finish after the kill")
        assert final["status_counts"] == {"done": N_CLIPS}, final["status_counts"]

        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test") as conn:
            conn.execute(f"SET search_path TO {schema}")
            jobs = conn.execute("SELECT id, status, label, attempts, file_path, stage_timings "
                                "FROM jobs WHERE batch_id = %s", (batch["id"],)).fetchall()
            endings = dict(conn.execute("SELECT job_id, count(*) FROM callbacks GROUP BY job_id").fetchall())
        assert len(jobs) == N_CLIPS
        by_id = {j[0]: j for j in jobs}
        for job_id, status_, label, attempts, file_path, timings in jobs:
            assert status_ == "done" and label, (job_id, status_)
            assert endings.get(job_id) == 1, f"job {job_id} ended {endings.get(job_id, 0)} times"
            assert file_path and not Path(file_path).exists(), "downloaded file left behind"
            assert "download_s" in timings and "total_s" in timings, timings
        # The killed job was taken over and finished by the other worker.
        assert by_id[victim][1] == "done" and by_id[victim][3] >= 2
        # Exactly one "done" per job across every worker's log, the killed one's included.
        logs = "".join((tmp_path / f).read_text(errors="replace") for f in ("c1.log", "c2.log"))
        done_lines = Counter(re.findall(r"job ([0-9a-f-]{36}) done", logs))
        assert set(done_lines) == set(by_id) and set(done_lines.values()) == {1}, done_lines.most_common(3)
        # Downloads happened on the download worker only, classification on c1/c2 only.
        dl_log = (tmp_path / "download.log").read_text(errors="replace")
        assert "vidclass.download_job[" in dl_log and "vidclass.classify_job[" not in dl_log
        assert not list((tmp_path / "shared" / "downloads").glob("*/*")), "downloads not cleaned up"

        # Every callback arrives (at least once by design; once here).
        kit.wait_for(lambda: set(hooks.counts) >= set(by_id), 120, what="every callback")
    finally:
        for proc in procs:
            stop(proc)
        if api is not None:
            api.stop()
        clips.close()
        hooks.close()
        try:
            import redis

            r = redis.Redis.from_url(redis_url)
            keys = list(r.scan_iter(env["REDIS_PREFIX"] + "*"))
            if keys:
                r.delete(*keys)
        except Exception:
            pass
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
        kit.drop_postgres_schema(schema)
