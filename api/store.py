"""Per-request database session and the app's Celery client (flaskr-style helpers)."""
from __future__ import annotations

from flask import current_app, g

from db import session as db_session


def get_session():
    """The request's SQLAlchemy session, closed at teardown."""
    if "db" not in g:
        g.db = db_session.get_sessionmaker(current_app.config["DATABASE_URL"])()
    return g.db


def close_session(_exc=None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def celery():
    """Celery app for publishing by task name; never imports worker.tasks (nor torch)."""
    return current_app.extensions["vidclass.celery"]


def init_app(app) -> None:
    from worker.celery_app import make_app

    app.teardown_appcontext(close_session)
    app.extensions["vidclass.celery"] = make_app(app.config["REDIS_URL"] or None)


def redis_client():
    """A redis client on the broker's URL, one per URL and process (health, rate limits)."""
    import redis

    clients = current_app.extensions.setdefault("vidclass.redis", {})
    url = celery().conf.broker_url
    if url not in clients:
        clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return clients[url]


def fast_call(task: str, args=None, timeout: float = 5.0):
    """Call a task on the FAST queue and wait for its answer (raises on timeout)."""
    from worker.celery_app import FAST_QUEUE

    result = celery().send_task(task, args=args or [], queue=FAST_QUEUE, expires=timeout)
    try:
        return result.get(timeout=timeout)
    finally:
        # Unsubscribe now, not in AsyncResult.__del__ (which may run at interpreter exit).
        try:
            result.backend.remove_pending_result(result)
        except Exception:
            pass
