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
        client().set(key("model"), json.dumps(info))
    except Exception:
        pass   # health reporting must never stop a worker


def beat_worker(hostname: str, ttl_s: float) -> None:
    client().set(key("worker:") + hostname, json.dumps({"hostname": hostname, "at": time.time()}),
                 ex=max(1, int(ttl_s)))


def publish_supervisor(state: dict, ttl_s: float = 30) -> None:
    """`vidclass up` reports the processes it supervises (restarts, last exit); expires with it."""
    try:
        client().set(key("supervisor"), json.dumps(state), ex=max(1, int(ttl_s)))
    except Exception:
        pass


def read(redis_client) -> dict:
    """{'model': {...} or None, 'workers': [hostname, ...], 'supervisor': {...} or None}."""
    raw, sup = redis_client.mget([key("model"), key("supervisor")])
    prefix = key("worker:")
    workers = sorted(k.decode()[len(prefix):] for k in redis_client.scan_iter(prefix + "*"))
    return {"model": json.loads(raw) if raw else None, "workers": workers,
            "supervisor": json.loads(sup) if sup else None}
