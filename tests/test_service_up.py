"""`vidclass up`: migrations, embedded Redis, workers and API from one command; Ctrl-C stops all."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

import servicekit as kit
from test_worker import assets  # noqa: F401  (module fixture reused)

pytestmark = pytest.mark.slow


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, json.loads(r.read())


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_up_serves_jobs_survives_a_killed_worker_and_stops_cleanly_on_ctrl_c(assets, tmp_path):  # noqa: F811
    port = kit.free_port()
    env = kit.service_env(tmp_path, "", f"sqlite:///{tmp_path / 'up.db'}", assets["tmp"] / "models",
                          assets["tmp"] / "features")
    env.pop("REDIS_URL")                  # embedded Redis
    server = kit.ClipServer(assets["tmp"] / "clips")
    proc = subprocess.Popen([sys.executable, "-m", "vidclass.cli", "up", "--port", str(port), "--workers", "1"],
                            cwd=kit.REPO, env=env, stdout=open(tmp_path / "up.log", "wb"),
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            try:
                status, body = _get(f"{base}/api/health")
                return body if status == 200 and body["model"] else None
            except OSError:
                return None
        health = kit.wait_for(healthy, 120, what="vidclass up to be healthy")
        assert health["database"]["revision"] == "0007_model_versions"   # migrations ran
        assert health["queue"]["ok"] and "url" not in health["queue"] and "url" not in health["database"]
        status, job = _post(f"{base}/api/jobs", {"url": server.url(kit.CLIPS[0].name)})
        assert status == 202

        def done():
            _, j = _get(f"{base}/api/jobs/{job['id']}")
            return j if j["status"] in ("done", "failed") else None
        final = kit.wait_for(done, 120, what="job via vidclass up")
        assert final["status"] == "done", final

        # SIGKILL the classification worker's Celery main process: the API keeps answering, the supervisor
        # restarts the worker (reported in health) and a job submitted afterwards completes.
        worker_pid = next(p for p in _children(proc.pid) if "classify@" in _cmdline(p))
        os.kill(worker_pid, signal.SIGKILL)
        time.sleep(1)
        assert _get(f"{base}/api/health")[0] == 200
        status, job = _post(f"{base}/api/jobs", {"url": server.url(kit.CLIPS[1].name)})
        assert status == 202
        restarted = kit.wait_for(lambda: (_get(f"{base}/api/health")[1].get("supervisor") or {})
                                 .get("worker", {}).get("restarts", 0) >= 1 and
                                 _get(f"{base}/api/health")[1]["supervisor"]["worker"], 30,
                                 what="health to report the worker restart")
        assert restarted["last_exit_code"] == -9 and restarted["running"]
        final = kit.wait_for(done, 180, what="a job submitted after the worker was killed")
        assert final["status"] == "done", final
        assert proc.poll() is None, "vidclass up stopped when its worker died"
        children = _children(proc.pid)
        assert worker_pid not in children and len(children) >= 4   # redis, two workers, gunicorn
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        server.close()
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    time.sleep(0.5)
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower(), \
            f"child {pid} of vidclass up survived Ctrl-C"


def test_children_die_with_a_killed_supervisor_and_a_new_up_starts(tmp_path):
    """kill -9 of `vidclass up` leaves nothing serving: Redis, workers and gunicorn get the
    parent-death signal, the port frees, and the next `vidclass up` on that port starts."""
    port = kit.free_port()
    env = kit.service_env(tmp_path, "", f"sqlite:///{tmp_path / 'k.db'}", tmp_path / "models",
                          tmp_path / "features")
    env.pop("REDIS_URL")

    def start():
        return subprocess.Popen([sys.executable, "-m", "vidclass.cli", "up", "--port", str(port), "--workers", "1"],
                                cwd=kit.REPO, env=env, stdout=open(tmp_path / "up.log", "ab"),
                                stderr=subprocess.STDOUT)

    def answers():
        try:
            return _get(f"http://127.0.0.1:{port}/api/health")[0] == 200
        except OSError:
            return False
    first = start()
    try:
        kit.wait_for(answers, 120, what="vidclass up to answer")
        children = kit.wait_for(lambda: (c if len(c := _children(first.pid)) >= 5 else None), 30,
                                what="all five children")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)

        def gone():
            alive = [p for p in children if os.path.exists(f"/proc/{p}")
                     and "zombie" not in open(f"/proc/{p}/status").read().lower()]
            return not alive and not answers()
        kit.wait_for(gone, 60, what="the killed supervisor's children to end")
        second = start()
        try:
            kit.wait_for(answers, 120, what="a new vidclass up on the same port")
        finally:
            second.send_signal(signal.SIGINT)
            second.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
