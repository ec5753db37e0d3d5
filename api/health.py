"""GET /api/health (database, queue, model versions) and Prometheus GET /metrics.

Health is public, so it shows versions and states, never connection URLs or raw error text
(which can carry host names and passwords); the detail goes to the log.
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import func, select

import vidclass
from api import auth
from api.store import celery, fast_call, get_session, redis_client
from db import session as db_session
from db.models import STATUSES, Job
from worker import celery_app as names
from worker import health_keys

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

_redis = redis_client


def _depth(r) -> dict:
    prefix = (celery().conf.broker_transport_options or {}).get("global_keyprefix", "")
    return {q: r.llen(prefix + q) for q in names.QUEUES}


@bp.get("/api/health")
def health():
    url = current_app.config["DATABASE_URL"]
    database = {"backend": url.split(":", 1)[0].split("+", 1)[0]}
    keys = None
    try:
        database["revision"] = db_session.current_revision(url)
        database["ok"] = database["revision"] is not None
        if not database["ok"]:
            database["error"] = "schema missing: run `vidclass db upgrade`"
        else:
            database["version"] = _database_version()
            keys = auth.keys_required(get_session())
    except Exception as exc:
        log.warning("health: database unavailable: %s", exc)
        database.update(ok=False, error="database unavailable")
    queue = {"backend": "redis"}
    model, workers, supervisor = None, [], None
    try:
        r = _redis()
        queue["version"] = r.info("server").get("redis_version")
        queue["depth"] = _depth(r)
        queue["ok"] = True
        seen = health_keys.read(r)
        model, workers, supervisor = seen["model"], seen["workers"], seen.get("supervisor")
    except Exception as exc:
        log.warning("health: queue unavailable: %s", exc)
        queue.update(ok=False, error="queue unavailable")
    if model is None and queue.get("ok"):
        try:     # no worker has written its model yet: ask one over the fast queue
            info = fast_call(names.MODEL_INFO, timeout=2)
            model = info if "error" in info else {"model_version": info.get("model_version"),
                                                  "pipeline": info.get("pipeline")}
        except Exception:
            model = None
    ok = bool(database.get("ok") and queue.get("ok"))
    body = {"status": "ok" if ok else "degraded", "version": vidclass.__version__,
            "database": database, "queue": queue, "model": model, "workers": workers,
            "auth": {"keys_required": keys}}
    if supervisor is not None:      # under `vidclass up`: restarts of the processes it supervises
        body["supervisor"] = supervisor
    return jsonify(body), 200 if ok else 503


def _database_version() -> str | None:
    engine = db_session.get_engine(current_app.config["DATABASE_URL"])
    info = engine.dialect.server_version_info
    if info is None:
        with engine.connect():
            info = engine.dialect.server_version_info
    return ".".join(str(p) for p in info) if info else None


@bp.get("/metrics")
def metrics():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily

    session = get_session()
    counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    recent = session.execute(select(Job.stage_timings).where(Job.status == "done")
                             .order_by(Job.finished_at.desc()).limit(1000)).scalars().all()
    depth, workers = {}, 0
    try:
        r = _redis()
        depth = _depth(r)
        workers = len(health_keys.read(r)["workers"])
    except Exception:
        pass

    class Collector:
        def collect(self):
            jobs = GaugeMetricFamily("vidclass_jobs", "Jobs in the database by status", labels=["status"])
            for status in STATUSES:
                jobs.add_metric([status], counts.get(status, 0))
            yield jobs
            stages = SummaryMetricFamily("vidclass_stage_duration_seconds",
                                         "Stage durations of the last 1000 finished jobs",
                                         labels=["stage"])
            sums: dict[str, list[float]] = {}
            for timings in recent:
                for key, value in (timings or {}).items():
                    if key.endswith("_s") and isinstance(value, (int, float)):
                        sums.setdefault(key[:-2], []).append(float(value))
            for stage, values in sorted(sums.items()):
                stages.add_metric([stage], count_value=len(values), sum_value=sum(values))
            yield stages
            queue = GaugeMetricFamily("vidclass_queue_depth", "Messages waiting in the broker queue",
                                      labels=["queue"])
            for name, value in depth.items():
                queue.add_metric([name], value)
            yield queue
            yield GaugeMetricFamily("vidclass_workers", "Worker nodes with a live heartbeat", value=workers)
            yield GaugeMetricFamily("vidclass_scrape_timestamp_seconds", "When this scrape ran",
                                    value=time.time())

    registry = CollectorRegistry()
    registry.register(Collector())
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")
