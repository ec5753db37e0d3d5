"""API throughput against a real server process (gunicorn, as `vidclass api` runs it).

Measures (1) a 10,000-URL batch accepted end to end over HTTP and (2) single POST /api/jobs
submissions: sustained requests per second and latency percentiles from keep-alive clients.
No workers run: this is the accept path (commit to the db, publish to Redis).

    .venv/bin/python -m bench.bench_api [--seconds 10] [--clients 4]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _request(conn, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    response = conn.getresponse()
    return response.status, response.read()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from service.embedded_redis import start_embedded_redis
    from service.processes import api_argv, free_port

    tmp = Path(tempfile.mkdtemp(prefix="vidclass-bench-"))
    redis_proc, redis_url = start_embedded_redis(workdir=tmp)
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp / 'bench.db'}", REDIS_URL=redis_url,
               UPLOAD_DIR=str(tmp / "uploads"), PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", "from db import session; session.upgrade()"], env=env,
                   check=True, cwd=REPO)
    port = free_port()
    server = subprocess.Popen(api_argv("127.0.0.1", port, args.processes, args.threads), env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                _request(conn, "GET", "/api/openapi.json")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

        # 1. 10,000-URL batch over HTTP (median of 3)
        urls = [f"https://cdn.example.org/v/{i}.mp4?sig={uuid.uuid4().hex[:8]}" for i in range(10000)]
        batch_s = []
        for _ in range(3):
            t = time.perf_counter()
            status, body = _request(conn, "POST", "/api/batches", {"urls": urls})
            batch_s.append(time.perf_counter() - t)
            assert status == 202 and json.loads(body)["total"] == 10000, body[:200]
        conn.close()

        # 2. single submissions from keep-alive clients
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def client(n):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine, i = [], 0
            while time.monotonic() < stop_at:
                i += 1
                t = time.perf_counter()
                status, _ = _request(c, "POST", "/api/jobs", {"url": f"https://example.org/{n}/{i}.mp4"})
                mine.append(time.perf_counter() - t)
                if status != 202:
                    errors[0] += 1
            c.close()
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        started = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - started
        latencies.sort()
        result = {
            "batch_10000_s": {"median": round(statistics.median(batch_s), 3), "all": [round(x, 3) for x in batch_s]},
            "single": {"requests": len(latencies), "errors": errors[0], "seconds": round(elapsed, 2),
                       "req_per_s": round(len(latencies) / elapsed, 1),
                       "median_ms": round(1000 * latencies[len(latencies) // 2], 2),
                       "p95_ms": round(1000 * latencies[int(len(latencies) * 0.95)], 2),
                       "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2)},
            "server": f"gunicorn gthread {args.processes}x{args.threads}, SQLite WAL, embedded Redis",
            "clients": args.clients, "cpus": os.cpu_count(),
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        server.terminate()
        server.wait()
        redis_proc.terminate()
        redis_proc.wait()


if __name__ == "__main__":
    sys.exit(main())
