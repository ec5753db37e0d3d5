"""How each service process is started: worker, Flower and API command lines, queues and the API port."""
from __future__ import annotations

import os
import signal
import socket
import sys


ALL_QUEUES = ("download", "classify", "fast", "train", "jobs")     # worker/celery_app.py QUEUES


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


def flower_argv(address: str, port: int) -> list[str]:
    # Flower's broker is the workers' (REDIS_URL and REDIS_PREFIX through worker.celery_app). It
    # sees tasks only from workers that send events: `celery -A worker.celery_app control
    # enable_events`, or start workers with -E (docs/deployment.md).
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower",
            f"--address={address}", f"--port={port}"]


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


def refuse_port(host: str, port: int, problem: str) -> int:
    print(f"vidclass: {problem}.\nChoose another port: `make run PORT={port + 1}`, "
          f"`vidclass up --port {port + 1}` or VIDCLASS_PORT={port + 1}.", file=sys.stderr)
    return 2


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_env(host: str, env: dict) -> dict:
    """The API's environment for serving on `host`: one rule for every way it starts (`vidclass
    api`, `vidclass up`): reachable from other hosts means keys required (VIDCLASS_REQUIRE_KEYS=1
    unless set), and the bound address is a Host the API answers."""
    env = dict(env)
    if not is_loopback(host) and not env.get("VIDCLASS_REQUIRE_KEYS"):
        env["VIDCLASS_REQUIRE_KEYS"] = "1"
    env["VIDCLASS_BIND_HOST"] = host
    return env


def die_with_parent() -> None:
    """Popen's preexec_fn for `vidclass up`'s children: Linux sends the child SIGTERM when the
    supervisor dies, even by SIGKILL, so no Redis, worker or API outlives it holding the port.
    Elsewhere a no-op (leftovers are then cleaned by the next `vidclass up`)."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:         # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
