"""What workers tell the API through Redis: the loaded model, and which worker nodes are alive.

The API never loads the model; /api/health reads these keys instead.
"""
from __future__ import annotations

import json
import time

from db import settings



def key(name: str) -> str:
    """A Redis key of ours, under REDIS_PREFIX like Celery's own keys."""
    return settings.get("REDIS_PREFIX") + "vidclass:" + name


def client():
    import redis

    return redis.Redis.from_url(settings.redis_url(), socket_timeout=5, socket_connect_timeout=5)


def publish_model(version: str, pipeline: dict, members: int, worker: str, runtime: dict | None = None) -> None:
    """Called by each pool process once its ensemble is loaded; `runtime` says where it runs
    (device, the members' runtime, the nets' runtimes and ONNX Runtime providers)."""
    info = {"model_version": version, "pipeline": pipeline, "members": members,
            "worker": worker, "loaded_at": time.time(), "runtime": runtime}
    try:
        r = client()
        r.set(key("model"), json.dumps(info))
        # Per process too (host:pid): the dashboard shows each worker node its processes' models.
        r.set(key("model-of:") + worker, version, ex=7 * 86400)
    except Exception:
        pass   # health reporting must never stop a worker


def models_of(redis_client, processes: list[str]) -> dict[str, str | None]:
    """{host:pid: model version} of pool processes (None: not loaded yet)."""
    if not processes:
        return {}
    values = redis_client.mget([key("model-of:") + p for p in processes])
    return {p: v.decode() if v else None for p, v in zip(processes, values)}


def beat_worker(hostname: str, ttl_s: float, details: dict | None = None) -> None:
    """A worker node is alive; `details` says what it serves (queues, concurrency, since when,
    tasks active and processed, its pool processes)."""
    client().set(key("worker:") + hostname, json.dumps({"hostname": hostname, "at": time.time(), **(details or {})}),
                 ex=max(1, int(ttl_s)))


def publish_supervisor(state: dict, ttl_s: float = 30) -> None:
    """`vidclass up` reports the processes it supervises (restarts, last exit); expires with it."""
    try:
        client().set(key("supervisor"), json.dumps(state), ex=max(1, int(ttl_s)))
    except Exception:
        pass


def read(redis_client) -> dict:
    """{'model': {...} or None, 'workers': [hostname, ...], 'worker_details': {hostname: {...}},
    'supervisor': {...} or None}."""
    raw, sup = redis_client.mget([key("model"), key("supervisor")])
    prefix = key("worker:")
    names = sorted(k.decode() for k in redis_client.scan_iter(prefix + "*"))
    beats = redis_client.mget(names) if names else []
    details = {}
    for name, beat in zip(names, beats):
        try:
            details[name[len(prefix):]] = json.loads(beat) if beat else {}
        except ValueError:
            details[name[len(prefix):]] = {}
    return {"model": json.loads(raw) if raw else None, "workers": sorted(details),
            "worker_details": details, "supervisor": json.loads(sup) if sup else None}
