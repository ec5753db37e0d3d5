"""`vidclass up`: Redis (embedded unless REDIS_URL is set), the workers and the API as supervised
children, restarted with backoff when they die, stopped in order on Ctrl-C or SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service.embedded_redis import start_embedded_redis
from service.processes import (api_argv, api_env, die_with_parent, free_port, port_problem, refuse_port,
                               resolve_port, worker_argv)


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
        return lambda: subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=die_with_parent)

    args.port = resolve_port(args)
    pidfile = Path(settings.INSTANCE_DIR) / f"up-{args.port}.json"
    clean_leftovers(pidfile)
    problem = port_problem(args.host, args.port)
    if problem:          # before anything starts: no "vidclass is up" followed by bind errors
        return refuse_port(args.host, args.port, problem)
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
        env.update(api_env(args.host, env))      # reachable from the network: never open by default
        workers = args.workers or settings.get("WORKER_CONCURRENCY")
        # Downloads on threads without the model, so a slow server never idles a model process;
        # the classification processes take jobs whose video is on disk.
        children.append(Supervised("download-worker", spawn(worker_argv(
            settings.get("DOWNLOAD_CONCURRENCY"), "download,jobs", "download@%h", "info"))))
        children.append(Supervised("worker", spawn(worker_argv(workers, "classify,fast,train", "classify@%h", "info"))))
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
                write_pidfile(pidfile, children)
                last_report = now
            time.sleep(0.5)
    finally:
        _stop_all([(c.name, c.proc) for c in children if c.proc is not None])
        pidfile.unlink(missing_ok=True)
    return 0 if stopping["signal"] in (signal.SIGINT, signal.SIGTERM) else 1


# What a child of `vidclass up` runs: a leftover is only ended when its command line says so.
_OUR_COMMANDS = ("worker.celery_app", "api:create_app()", "redis-server")


def write_pidfile(path: Path, children) -> None:
    """The supervisor's and its children's pids (each child leads its own process group)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"supervisor": os.getpid(), "children": {
        c.name: c.proc.pid for c in children if c.proc is not None and c.proc.poll() is None}}))
    os.replace(tmp, path)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def clean_leftovers(path: Path, grace_s: float = 10.0) -> list[str]:
    """End what a previous `vidclass up` on this port left running when its supervisor died
    (where the parent-death signal is not available): only processes whose command line is one
    of ours, and only when that supervisor is gone. Returns the names it ended."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    supervisor = int(record.get("supervisor") or 0)
    if supervisor and "vidclass" in _cmdline(supervisor) and " up" in _cmdline(supervisor):
        return []                          # still running: the port check says so
    ended = []
    for name, pid in (record.get("children") or {}).items():
        if any(mark in _cmdline(int(pid)) for mark in _OUR_COMMANDS):
            try:
                os.killpg(int(pid), signal.SIGTERM)
                ended.append(name)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + grace_s
    for pid in (record.get("children") or {}).values():
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            _kill_group(int(pid))
    if ended:
        print(f"ended what a previous vidclass up left running: {', '.join(ended)}", file=sys.stderr, flush=True)
    path.unlink(missing_ok=True)
    return ended


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
