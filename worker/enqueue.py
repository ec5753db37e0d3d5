"""Publishing jobs by task name: one at a time, or thousands in one pipelined Redis round trip.

Used by the API (which must not import worker.tasks or torch) and by the reconciler.

Bulk publishing: Celery's send_task costs ~0.4 ms of Python per message even inside kombu's
producer.batch(), too slow for a 10,000-URL batch in under 2 s. On a Redis broker we therefore
build the same Celery protocol-2 message that send_task would (see _message) and LPUSH them
through one non-transactional pipeline; test_worker checks a real worker consumes them.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import threading
import uuid

from worker import celery_app as names

_local = threading.local()
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


def publish_job(job_id: str, app=None) -> None:
    app = app or names.app
    app.send_task(names.PROCESS_JOB, args=[job_id], queue=names.JOBS_QUEUE)


def publish_callback(job_id: str, app=None) -> None:
    app = app or names.app
    app.send_task(names.SEND_CALLBACK, args=[job_id], queue=names.JOBS_QUEUE)


def publish_jobs(job_ids, app=None, chunk: int = 2000) -> int:
    """Publish process_job for every id; returns how many were published."""
    app = app or names.app
    job_ids = list(job_ids)
    if not job_ids:
        return 0
    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        with app.producer_or_acquire() as producer, producer.batch(max_size=chunk):
            for job_id in job_ids:
                app.send_task(names.PROCESS_JOB, args=[job_id], queue=names.JOBS_QUEUE,
                              producer=producer)
        return len(job_ids)
    client = _redis(url)
    prefix = (app.conf.broker_transport_options or {}).get("global_keyprefix", "")
    for start in range(0, len(job_ids), chunk):
        part = job_ids[start:start + chunk]
        # LPUSH takes many values: one command per chunk, the queue order kept (oldest first out).
        client.lpush(prefix + names.JOBS_QUEUE, *(_message(names.PROCESS_JOB, [j], names.JOBS_QUEUE)
                                         for j in part))
    return len(job_ids)


def _redis(url: str):
    import redis

    clients = getattr(_local, "clients", None)
    if clients is None:
        clients = _local.clients = {}
    pid_url = (os.getpid(), url)
    if pid_url not in clients:
        clients[pid_url] = redis.Redis.from_url(url)
    return clients[pid_url]


def _message(task: str, args: list, queue: str) -> str:
    """The JSON that kombu's Redis transport stores for app.send_task(task, args, queue=queue)."""
    task_id = str(uuid.uuid4())
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return json.dumps({
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": task_id, "parent_id": None,
            "argsrepr": repr(args), "kwargsrepr": "{}", "origin": _ORIGIN,
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "reply_to": None, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    })
