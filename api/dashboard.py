"""GET /api/dashboard: workers and queue at a glance (what Celery Flower is used for).

Everything comes from what is already there: queue depths and live workers from Redis, running
jobs, throughput and stage times from the database. Estimates (ETA) are labelled as such.
"""
from __future__ import annotations

import statistics
import time
from datetime import timedelta

from flask import Blueprint, jsonify
from sqlalchemy import func, select

from api.health import _depth
from api.store import get_session, redis_client
from db.models import FINAL, RUNNING, Batch, Job, utcnow
from worker import health_keys

bp = Blueprint("dashboard", __name__)

RECENT_DONE = 200       # jobs whose stage times make the medians
STAGES = ("download_s", "sample_s", "features_s", "classify_s", "thumbnails_s", "total_s")


def _iso(value):
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


def _worker_row(r, name: str, d: dict, now: float) -> dict:
    """A worker node as its heartbeat describes it, with the model each of its processes holds
    (model_version: the one they agree on; null while loading or for a download worker)."""
    models = health_keys.models_of(r, d.get("processes") or [])
    loaded = sorted({v for v in models.values() if v})
    return {"name": name, "queues": d.get("queues"), "concurrency": d.get("concurrency"),
            "active": d.get("active"), "processed": d.get("processed"),
            "uptime_s": round(now - d["started_at"], 1) if d.get("started_at") else None,
            "serves_model": d.get("serves_model"),
            "model_version": loaded[0] if len(loaded) == 1 else None, "model_versions": loaded}


@bp.get("/api/dashboard")
def dashboard():
    session = get_session()
    now = utcnow()
    queues, workers, model, redis_ok = {}, [], None, True
    try:
        r = redis_client()
        queues = _depth(r)
        seen = health_keys.read(r)
        model = seen["model"]
        workers = [_worker_row(r, name, details, time.time()) for name, details in seen["worker_details"].items()]
    except Exception:
        redis_ok = False
    version = (model or {}).get("model_version")

    running = session.execute(select(Job).where(Job.status.in_(RUNNING))
                              .order_by(Job.started_at).limit(100)).scalars().all()
    # Jobs finished per minute over the last hour, oldest minute first.
    hour_ago = now - timedelta(hours=1)
    finished = session.execute(select(Job.finished_at).where(Job.finished_at >= hour_ago,
                                                             Job.status.in_(("done", "failed")))).scalars().all()
    per_minute = [0] * 60
    for t in finished:
        per_minute[min(59, max(0, int((t - hour_ago).total_seconds() // 60)))] += 1
    timings = session.execute(select(Job.stage_timings).where(Job.status == "done", Job.finished_at.is_not(None))
                              .order_by(Job.finished_at.desc()).limit(RECENT_DONE)).scalars().all()
    medians = {}
    for stage in STAGES:
        values = [t[stage] for t in timings if t and isinstance(t.get(stage), (int, float))
                  and not isinstance(t.get(stage), bool)]
        if values:
            medians[stage] = round(statistics.median(values), 3)

    # ETA of unfinished batches: remaining jobs x median job time / jobs running in parallel.
    parallel = max(1, len(running))
    per_job = medians.get("total_s")
    open_batches = session.execute(
        select(Job.batch_id, func.count()).where(Job.batch_id.is_not(None), Job.status.notin_(FINAL))
        .group_by(Job.batch_id).limit(20)).all()
    batches = []
    for batch_id, remaining in open_batches:
        batch = session.get(Batch, batch_id)
        batches.append({"id": batch_id, "name": batch.name if batch else None,
                        "total": batch.total if batch else None, "remaining": remaining,
                        "eta_s": round(remaining * per_job / parallel, 1) if per_job else None})
    return jsonify({
        "queues": queues, "queue_ok": redis_ok,
        "workers": workers,
        "model": {"model_version": version, "members": (model or {}).get("members")} if model else None,
        "running": [{"id": j.id, "source": j.source, "source_kind": j.source_kind, "status": j.status,
                     "progress": j.progress, "worker": j.worker, "batch_id": j.batch_id,
                     "started_at": _iso(j.started_at)} for j in running],
        "throughput": {"per_minute": per_minute, "last_hour": sum(per_minute)},
        "stage_medians_s": medians, "stage_sample": len(timings),
        "batches": batches, "eta_parallel_jobs": parallel,
    })
