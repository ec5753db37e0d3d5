"""Storage of the clip features every finished job keeps (issue "The service learns from its users"):
10,000 done jobs with and without their pooled vector ([mean | std] of the shipped pipeline's 2,974
values per frame, float16 = 11,896 bytes), on SQLite (file size) and PostgreSQL (table size).

    .venv/bin/python -m bench.bench_feature_storage [--rows 10000] [--no-postgres]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def fill(url: str, rows: int, with_features: bool) -> None:
    from sqlalchemy import insert

    from db import session
    from db.models import Job, new_ids, utcnow
    from vidclass.features.backbone import shipped_pipeline

    dim = shipped_pipeline().feature_dim
    rng = np.random.default_rng(0)
    now = utcnow()
    session.upgrade(url)
    with session.session_scope(url) as s:
        for start in range(0, rows, 1000):
            batch = [{"id": job_id, "source_kind": "url", "source": f"https://example.org/{start + i}.mp4",
                      "status": "done", "progress": 100, "attempts": 1, "label": "Gaming", "confidence": 0.9,
                      "thumbnails_count": 0, "created_at": now, "finished_at": now,
                      "clip_features": rng.normal(size=2 * dim).astype(np.float16).tobytes() if with_features else None,
                      "features_pipeline": "0123456789ab" if with_features else None}
                     for i, job_id in enumerate(new_ids(min(1000, rows - start)))]
            s.connection().execute(insert(Job.__table__), batch)


def sqlite_bytes(rows: int, with_features: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.db"
        fill(f"sqlite:///{path}", rows, with_features)
        return path.stat().st_size


def postgres_bytes(rows: int, with_features: bool) -> int | None:
    import psycopg

    schema = f"bench_storage_{os.getpid()}_{int(with_features)}"
    base = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    try:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError:
        return None
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    try:
        fill(url, rows, with_features)
        with psycopg.connect(base) as conn:
            return conn.execute(f"SELECT pg_total_relation_size('{schema}.jobs')").fetchone()[0]
    finally:
        from db import session
        session.dispose_all()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    out = {"rows": args.rows}
    for backend, measure in (("sqlite", sqlite_bytes), ("postgresql", postgres_bytes)):
        if backend == "postgresql" and args.no_postgres:
            continue
        plain, kept = measure(args.rows, False), measure(args.rows, True)
        if plain is None:
            continue
        out[backend] = {"without_mb": round(plain / 1e6, 1), "with_mb": round(kept / 1e6, 1),
                        "per_job_kb": round((kept - plain) / args.rows / 1e3, 2)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
