"""Callbacks, kept in the database until delivered.

When a job ends, the transaction that ends it also writes a `callbacks` row (pending). A thread in
every worker's parent process delivers due rows: each attempt is claimed with a conditional UPDATE
(so two workers never send the same attempt), failures back off exponentially up to CALLBACK_RETRIES,
then the row is `failed`. Only the database is involved: a Redis outage when a job ends, or while
a callback is due, loses nothing.

Signature (when CALLBACK_SECRET is set): X-Vidclass-Timestamp is the Unix time of the attempt and
X-Vidclass-Signature is "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body). A receiver
recomputes it and refuses timestamps older than a few minutes, so a captured request cannot be
replayed later.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import select, update

from db import session as db_session
from db import settings
from db.models import Callback, Job, utcnow

log = logging.getLogger(__name__)

LEASE_S = 60          # an attempt in flight is not retried by anyone else for this long
PER_PASS = 32
MAX_BACKOFF_S = 300

_thread: threading.Thread | None = None
_stop = threading.Event()


def record(session, job_id: str, url: str | None) -> None:
    """Owe a callback for this job ending: call inside the transaction that ends the job."""
    if not url:
        return
    session.add(Callback(job_id=job_id, url=url, status="pending", attempts=0, next_attempt_at=utcnow(),
                         created_at=utcnow()))
    session.execute(update(Job).where(Job.id == job_id).values(callback_status="pending"))


def sign(body: bytes, secret: str, timestamp: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _claim_due(now) -> list[tuple[str, str, str, int]]:
    """(callback id, job id, url, attempts) of due callbacks this process now owns."""
    owned = []
    with db_session.session_scope() as s:
        due = s.execute(select(Callback.id, Callback.job_id, Callback.url, Callback.attempts,
                               Callback.next_attempt_at)
                        .where(Callback.status == "pending", Callback.next_attempt_at <= now)
                        .order_by(Callback.next_attempt_at).limit(PER_PASS)).all()
        for cb_id, job_id, url, attempts, at in due:
            taken = s.execute(update(Callback).where(Callback.id == cb_id, Callback.status == "pending",
                                                     Callback.next_attempt_at == at)
                              .values(next_attempt_at=now + timedelta(seconds=LEASE_S)))
            if taken.rowcount == 1:
                owned.append((cb_id, job_id, url, attempts))
    return owned


def post(url: str, job_id: str, body: bytes) -> tuple[bool, bool, str]:
    """One POST: (delivered, permanent failure, reason as a plain sentence).

    Every connection the POST opens, redirects included, is checked by netguard on its resolved
    address (BLOCK_PRIVATE_URLS, ALLOWED_PRIVATE_NETWORKS): a callback to an internal address, or
    one redirected there, is refused before anything is sent, and fails for good (no retries).
    """
    import requests

    from vidclass.media import netguard
    from vidclass.media.download import network_error

    headers = {"Content-Type": "application/json", "X-Vidclass-Job": job_id}
    secret = settings.get("CALLBACK_SECRET")
    if secret:
        timestamp = str(int(time.time()))
        headers["X-Vidclass-Timestamp"] = timestamp
        headers["X-Vidclass-Signature"] = sign(body, secret, timestamp)
    with netguard.guarded(settings.get("ALLOWED_PRIVATE_NETWORKS"),
                          block=settings.get("BLOCK_PRIVATE_URLS")) as scope:
        try:
            response = requests.post(url, data=body, headers=headers, timeout=10)
            ok, permanent, reason = response.status_code < 300, False, f"HTTP {response.status_code}"
        except (requests.Timeout, requests.ConnectionError) as exc:
            error = network_error(exc, url)
            ok, permanent, reason = False, bool(error.permanent), str(error)
        except requests.RequestException as exc:
            log.info("callback of job %s to %s: %r", job_id, url, exc)
            ok, permanent, reason = False, True, f"The callback URL {url} cannot be used."
    if scope.blocked:                # a blocked address stays blocked: no retries
        return False, True, netguard.describe(scope.blocked[-1])
    return ok, permanent, reason


def deliver(cb_id: str, job_id: str, url: str, attempts: int) -> str:
    """Attempt one owned callback; returns its new status."""
    with db_session.session_scope() as s:
        job = s.get(Job, job_id)
        body = json.dumps(job.to_dict(), sort_keys=True).encode() if job else b"{}"
    ok, permanent, reason = post(url, job_id, body)
    attempts += 1
    now = utcnow()
    if ok:
        values, job_status = dict(status="delivered", delivered_at=now, last_error=None), "delivered"
    elif permanent or attempts > settings.get("CALLBACK_RETRIES"):
        values, job_status = dict(status="failed", last_error=reason[:500]), "failed"
        log.warning("callback of job %s to %s failed for good: %s", job_id, url, reason)
    else:
        delay = min(MAX_BACKOFF_S, 2 ** (attempts - 1))
        values = dict(last_error=reason[:500], next_attempt_at=now + timedelta(seconds=delay))
        job_status = f"retrying ({attempts})"
    with db_session.session_scope() as s:
        s.execute(update(Callback).where(Callback.id == cb_id).values(attempts=attempts, **values))
        s.execute(update(Job).where(Job.id == job_id).values(callback_status=job_status,
                                                              callback_error=values.get("last_error")))
    return values.get("status", "pending")


def deliver_due(pool: ThreadPoolExecutor | None = None) -> int:
    """One pass: attempt every due callback (in parallel: one slow receiver must not hold the rest)."""
    owned = _claim_due(utcnow())
    if not owned:
        return 0
    if pool is None:
        for item in owned:
            deliver(*item)
    else:
        for future in [pool.submit(deliver, *item) for item in owned]:
            future.result()
    return len(owned)


def loop() -> None:
    tick = settings.get("OUTBOX_INTERVAL_S")
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="vidclass-callback") as pool:
        while not _stop.is_set():
            try:
                if deliver_due(pool) == PER_PASS:
                    continue            # more are due: no pause
            except Exception as exc:     # the database briefly unavailable: try again next tick
                log.warning("callback delivery pass failed: %s", exc)
            _stop.wait(tick)


def start_thread() -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(target=loop, daemon=True, name="vidclass-callbacks")
    _thread.start()


def stop_thread() -> None:
    _stop.set()
