"""End-to-end throughput: videos/minute for a batch of URL jobs with 1, 2 and 3 classification
workers, the production layout on this machine (PostgreSQL schema, Redis prefix, one download
worker, N `vidclass worker --queues classify -c 1`), and where the time goes.

    .venv/bin/python -m bench.bench_throughput [--clips 100] [--workers 1,2,3] [--json out.json]

Clips are the test fixtures served from 127.0.0.1 (each URL distinct; the per-process feature
cache is off, so every clip is decoded and run through the CNN). The model is the shipped
ensemble in models_enhanced/ when it loads, else a random-weight one on the same pipeline (the
CNN, which dominates, is the same). Not a test: nothing asserts on these numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import servicekit as kit  # noqa: E402


def _worker(env, queues, name, concurrency, log):
    return subprocess.Popen([sys.executable, "-m", "vidclass.cli", "worker", "--queues", queues,
                             "--name", name, "--concurrency", str(concurrency)],
                            cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def models_dir(tmp: Path) -> Path:
    shipped = REPO / "models_enhanced"
    try:
        from vidclass.model.ensemble import Ensemble

        Ensemble.load(shipped, device="cpu")
        return shipped
    except Exception as exc:  # noqa: BLE001
        print(f"shipped models do not load ({exc}); using a random-weight ensemble", file=sys.stderr)
        (tmp / "models").mkdir(exist_ok=True)
        kit.write_random_models(tmp / "models")
        return tmp / "models"


def run_one(n_workers: int, n_clips: int, tmp: Path, models: Path, server, redis_url: str) -> dict:
    pg = kit.postgres_schema_url()
    db_url, schema = pg if pg else (f"sqlite:///{tmp / f'bench-{n_workers}.db'}", None)
    run_tmp = tmp / f"w{n_workers}"
    run_tmp.mkdir()
    env = kit.service_env(run_tmp, redis_url, db_url, models, run_tmp / "no-features",
                          VIDCLASS_FEATURE_CACHE="0", THUMBNAILS_PER_JOB="4")
    procs = []
    try:
        with kit.environ(env):
            from api import create_app
            from db import session

            session.upgrade(db_url)
            client = create_app({"TESTING": True}).test_client()
            procs.append(_worker(env, "download", "dl@%h", 4, run_tmp / "download.log"))
            for i in range(n_workers):
                procs.append(_worker(env, "classify", f"c{i}@%h", 1, run_tmp / f"c{i}.log"))
            # Warm-up: every classification process has loaded the model before the clock starts.
            from worker import health_keys

            time.sleep(2)
            warm = [client.post("/api/jobs", json={"url": server.url(kit.CLIPS[0].name) + f"?warm={i}"})
                    .get_json()["id"] for i in range(n_workers * 2)]
            kit.wait_for(lambda: all(client.get(f"/api/jobs/{j}").get_json()["status"] == "done"
                                     for j in warm), 600, interval=0.5, what="warm-up jobs")
            # At rest: the model loaded and a few jobs done, before the batch.
            time.sleep(2)
            rest = [_group_rss_mb(p.pid) for p in procs[1:]]
            urls = [server.url(kit.CLIPS[i % len(kit.CLIPS)].name) + f"?n={i}" for i in range(n_clips)]
            t0 = time.perf_counter()
            batch = client.post("/api/batches", json={"urls": urls}).get_json()
            # Memory along the batch (a leak grows with jobs done): every ~10 s, the classify
            # workers' RSS beside the number of jobs finished.
            series, next_sample = [], 0.0
            while True:
                b = client.get(f"/api/batches/{batch['id']}").get_json()
                if time.perf_counter() >= next_sample or b["done"]:
                    series.append({"finished": b["finished"],
                                   "classify_worker_mb": [_group_rss_mb(p.pid) for p in procs[1:]]})
                    next_sample = time.perf_counter() + 10
                if b["done"]:
                    final = b
                    break
                assert time.perf_counter() - t0 < 3600, "batch did not finish in an hour"
                time.sleep(0.5)
            wall = time.perf_counter() - t0
            rss = {"download_worker_mb": _group_rss_mb(procs[0].pid),
                   "classify_worker_at_rest_mb": rest,
                   "classify_worker_mb": [_group_rss_mb(p.pid) for p in procs[1:]], "series": series}
            from sqlalchemy import select

            from db.models import Job

            with session.session_scope() as s:
                jobs = s.execute(select(Job).where(Job.batch_id == batch["id"])).scalars().all()
                rows = [(j.stage_timings or {}, j.created_at, j.started_at, j.finished_at) for j in jobs]
            health_keys  # noqa: B018
    finally:
        for p in procs:
            _stop(p)
        if schema:
            kit.drop_postgres_schema(schema)
    stages: dict[str, list[float]] = {}
    for timings, *_ in rows:
        for k, v in timings.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                stages.setdefault(k, []).append(float(v))
    latency = [(f - c).total_seconds() for _, c, _, f in rows if f and c]
    return {"classify_workers": n_workers, "clips": n_clips, "status_counts": final["status_counts"],
            "wall_s": round(wall, 1), "videos_per_min": round(n_clips / wall * 60, 1),
            "mean_stage_s": {k: round(statistics.mean(v), 3) for k, v in sorted(stages.items())},
            "median_latency_s": round(statistics.median(latency), 1) if latency else None,
            "database": "postgresql" if schema else "sqlite", "rss": rss}


def _group_rss_mb(pgid: int) -> dict:
    """RSS (MB) of each process of a worker's process group: the Celery parent and its pool."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0)
        role = "parent" if int(entry.name) == pgid else f"pool-{entry.name}"
        out[role] = round(rss / 1024)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="vidclass-bench-"))
    models = models_dir(tmp)
    clips = kit.copy_clips(tmp / "clips")
    server = kit.ClipServer(tmp / "clips")
    redis_url, redis_proc = kit.shared_redis()
    results = []
    try:
        for n in [int(x) for x in args.workers.split(",")]:
            r = run_one(n, args.clips, tmp, models, server, redis_url)
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        server.close()
        if redis_proc is not None:
            redis_proc.terminate()
    info = {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "models": str(models.name),
            "clips_sizes_kb": sorted(round(p.stat().st_size / 1024) for p in clips.values()
                                     if p.suffix == ".mp4"), "results": results}
    if args.json:
        args.json.write_text(json.dumps(info, indent=2))
    print(json.dumps({k: v for k, v in info.items() if k != "results"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
