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

from db.models import new_ids
from worker import celery_app as names

_local = threading.local()
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


STAGES = {"download": (names.DOWNLOAD_JOB, names.DOWNLOAD_QUEUE),
          "classify": (names.CLASSIFY_JOB, names.CLASSIFY_QUEUE)}


def stage_of(source_kind: str, file_path: str | None) -> str:
    """The stage a queued job waits for: a URL job without its file yet is downloaded first;
    everything else (downloaded URLs, uploads, test-set names) is classified."""
    return "download" if source_kind == "url" and not file_path else "classify"


def stages_of(job_ids) -> dict[str, list[str]]:
    """{stage: [job ids]} from the database (ids not found are left out)."""
    from sqlalchemy import select

    from db import session as db_session
    from db.models import Job

    out: dict[str, list[str]] = {}
    job_ids = list(job_ids)
    with db_session.session_scope() as s:
        for start in range(0, len(job_ids), 1000):
            rows = s.execute(select(Job.id, Job.source_kind, Job.file_path)
                             .where(Job.id.in_(job_ids[start:start + 1000]))).all()
            for job_id, kind, path in rows:
                out.setdefault(stage_of(kind, path), []).append(job_id)
    return out


def publish_job(job_id: str, app=None, stage: str | None = None) -> None:
    publish_jobs([job_id], app=app, stage=stage)


def publish_jobs(job_ids, app=None, chunk: int = 2000, stage: str | None = None) -> int:
    """Publish every id to its stage's queue (download or classify); returns how many were
    published. stage=None looks each job's stage up in the database (stage_of)."""
    app = app or names.app
    job_ids = list(job_ids)
    if not job_ids:
        return 0
    if stage is None:
        return sum(publish_jobs(ids, app=app, chunk=chunk, stage=st)
                   for st, ids in stages_of(job_ids).items())
    task, queue = STAGES[stage]
    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        with app.producer_or_acquire() as producer, producer.batch(max_size=chunk):
            for job_id in job_ids:
                app.send_task(task, args=[job_id], queue=queue, producer=producer)
        return len(job_ids)
    client = _redis(url)
    prefix = (app.conf.broker_transport_options or {}).get("global_keyprefix", "")
    for start in range(0, len(job_ids), chunk):
        part = job_ids[start:start + chunk]
        # LPUSH takes many values: one command per chunk, the queue order kept (oldest first out).
        ids = new_ids(2 * len(part))
        client.lpush(prefix + queue, *(
            _message(task, [j], queue, ids[2 * k], ids[2 * k + 1]) for k, j in enumerate(part)))
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


def _template(task: str, queue: str) -> str:
    """The JSON that kombu's Redis transport stores for app.send_task(task, [arg], queue=queue),
    with placeholders for the per-message values (filled in by _message)."""
    return json.dumps({
        "body": "@BODY@",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": "@ID@", "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": "@ID@", "parent_id": None,
            "argsrepr": "@ARGS@", "kwargsrepr": "{}", "origin": _ORIGIN,
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": "@ID@", "reply_to": None, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": "@TAG@",
        },
    })


_TEMPLATES: dict = {}
_EMBED = ', {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


def _message(task: str, args: list, queue: str, task_id: str | None = None, tag: str | None = None) -> str:
    template = _TEMPLATES.get((task, queue))
    if template is None:
        template = _TEMPLATES[(task, queue)] = _template(task, queue)
    task_id = task_id or str(uuid.uuid4())
    body = base64.b64encode(("[" + json.dumps(args) + _EMBED).encode()).decode()
    return (template.replace("@ID@", task_id).replace("@TAG@", tag or str(uuid.uuid4()))
            .replace("@BODY@", body).replace("@ARGS@", json.dumps(repr(args))[1:-1]))
