"""History queries (GET /api/jobs) at 100,000 rows on SQLite and PostgreSQL: p50/p99 latency.

The rows go straight into a fresh database made by the migrations; the requests go through the
real Flask app in process (no HTTP server: this measures the query and its JSON, not the network).
Keyset cursors are taken half-way down each ordering, i.e. the deepest a user could page to.

    .venv/bin/python -m bench.bench_history [--rows 100000] [--repeat 100] [--no-postgres]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def fill(url: str, rows: int) -> None:
    from sqlalchemy import insert, text

    from db import session
    from db.models import Job, new_ids, utcnow

    session.upgrade(url)
    rng = random.Random(0)
    now = utcnow()
    ids = new_ids(rows)
    engine = session.get_engine(url)
    with engine.begin() as conn:
        for start in range(0, rows, 5000):
            chunk = []
            for i in range(start, min(rows, start + 5000)):
                done = rng.random() < 0.85
                chunk.append({
                    "id": ids[i], "source_kind": "url", "source": f"https://cdn{i % 50}.example.org/v/{i}.mp4",
                    "status": "done" if done else rng.choice(["failed", "queued", "cancelled"]),
                    "progress": 100 if done else 0, "attempts": 1, "thumbnails_count": 0,
                    "label": rng.choice(["Animation", "Flat_Content", "Gaming", "Natural_Content"]) if done else None,
                    "confidence": round(rng.random(), 4) if done else None,
                    "created_at": now - timedelta(seconds=rows - i)})
            conn.execute(insert(Job.__table__), chunk)
        conn.execute(text("ANALYZE"))


def cursor_at(client, qs: str, depth: int) -> str:
    """The cursor of the row `depth` rows into this ordering (taken from the database directly)."""
    from flask import request  # noqa: F401  (app context below)

    from api.jobs import _encode_cursor, history_query
    from api.store import get_session

    app = client.application
    with app.test_request_context("/api/jobs?" + qs):
        job = get_session().execute(history_query().offset(depth).limit(1)).scalars().one()
        params = dict(p.split("=") for p in qs.split("&"))
        return _encode_cursor(job, params.get("sort", "created_at"), params.get("order", "desc"))


def measure(client, path: str, repeat: int) -> tuple[float, float, int]:
    times = []
    status = None
    for _ in range(repeat):
        t = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - t)
        status = r.status_code
    times.sort()
    return statistics.median(times) * 1000, times[min(len(times) - 1, int(0.99 * len(times)))] * 1000, status


def run_backend(name: str, url: str, rows: int, repeat: int) -> list[tuple]:
    import servicekit as kit

    tmp = Path(tempfile.mkdtemp(prefix="bench-history-"))
    env = kit.service_env(tmp, "redis://127.0.0.1:6379/0", url, tmp, tmp)
    out = []
    with kit.environ(env):
        t = time.perf_counter()
        fill(url, rows)
        print(f"[{name}] {rows} rows inserted in {time.perf_counter() - t:.1f} s", flush=True)
        from api import create_app

        client = create_app({"TESTING": True}).test_client()
        half = rows // 2
        cases = [
            ("newest first, page 1", "/api/jobs?per_page=50"),
            ("sort=confidence desc, page 1", "/api/jobs?sort=confidence&per_page=50"),
            ("sort=confidence desc, page 200 (deepest offset allowed)", "/api/jobs?sort=confidence&per_page=50&page=200"),
            ("sort=confidence desc, cursor at row 50,000",
             "/api/jobs?sort=confidence&per_page=50&cursor=" + cursor_at(client, "sort=confidence", half)),
            ("sort=label asc, cursor at row 50,000",
             "/api/jobs?sort=label&order=asc&per_page=50&cursor=" + cursor_at(client, "sort=label&order=asc", half)),
            ("status=done sort=created_at, cursor at row 50,000",
             "/api/jobs?status=done&per_page=50&cursor=" + cursor_at(client, "status=done", half)),
            ("q=cdn7. page 1", "/api/jobs?q=cdn7.&per_page=50"),
            ("q=cdn7. cursor at row 1,000", "/api/jobs?q=cdn7.&per_page=50&cursor=" + cursor_at(client, "q=cdn7.", 1000)),
            ("sort=confidence page=1000 (refused: offset_too_large)", "/api/jobs?sort=confidence&per_page=50&page=1000"),
        ]
        for label, path in cases:
            p50, p99, status = measure(client, path, repeat)
            out.append((name, label, p50, p99, status))
            print(f"[{name}] {label:55s} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  (HTTP {status})", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import servicekit as kit

    results = run_backend("sqlite", f"sqlite:///{tempfile.mkdtemp(prefix='bench-history-')}/h.db",
                          args.rows, args.repeat)
    pg = None if args.no_postgres else kit.postgres_schema_url()
    if pg is not None:
        try:
            results += run_backend("postgresql", pg[0], args.rows, args.repeat)
        finally:
            from db import session
            session.get_engine(pg[0]).dispose()
            kit.drop_postgres_schema(pg[1])
    print("\n| backend | query (50 rows a page) | p50 ms | p99 ms |\n|---|---|---|---|")
    for name, label, p50, p99, status in results:
        print(f"| {name} | {label} | {p50:.1f} | {p99:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
