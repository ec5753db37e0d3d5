"""/api/batches: up to MAX_BATCH_URLS URLs in one request, bulk-inserted and bulk-published."""
from __future__ import annotations

import csv

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from api.errors import ApiError
from api.store import celery, get_session
from api.submit import (check_key_reuse, check_url, idempotency_key, json_body, mark_published,
                        request_digest, url_problem)
from db.models import FINAL, Batch, Job, new_id, new_ids, utcnow
from worker.enqueue import publish_jobs

bp = Blueprint("batches", __name__, url_prefix="/api/batches")

# Rejected lines kept (and returned) per batch; the rest are only counted. 9,999 bad 5 KB lines
# must not become 51 MB in the database and in every GET /api/batches/<id>.
INVALID_LINES_KEPT = 100
VALUE_CHARS_KEPT = 200


def parse_lines(text: str, is_csv: bool) -> list[tuple[int, str]]:
    """(line number, value) for each non-blank line; CSV: the `url` column, else the first one."""
    lines = text.splitlines()
    if not is_csv:
        return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    rows = list(csv.reader(lines))
    column, start = 0, 0
    if rows:
        header = [c.strip().lower() for c in rows[0]]
        if "url" in header:
            column, start = header.index("url"), 1
    out = []
    for n, row in enumerate(rows[start:], start + 1):
        value = row[column].strip() if len(row) > column else ""
        if value:
            out.append((n, value))
    return out


def _request_lines() -> tuple[list[tuple[int, object]], dict]:
    if request.files or (request.mimetype or "").startswith("multipart/"):
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "missing_file", "multipart request needs a `file` field (text or CSV, "
                                                "one URL a line)", field="file")
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_file", "the URL list must be UTF-8 text", field="file") from None
        name = (upload.filename or "").lower()
        is_csv = name.endswith(".csv") or (upload.mimetype or "") in ("text/csv", "application/csv")
        return parse_lines(text, is_csv), {"name": request.form.get("name") or upload.filename,
                                           "callback_url": request.form.get("callback_url") or None}
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type",
                       "send JSON {\"urls\": [...]} or a multipart `file` (text or CSV)")
    body = json_body()
    urls = body.get("urls")
    if not isinstance(urls, list):
        raise ApiError(400, "missing_urls", "JSON body needs `urls`: a list of URLs", field="urls")
    lines = [(n, u.strip() if isinstance(u, str) else u) for n, u in enumerate(urls, 1)
             if not (isinstance(u, str) and not u.strip())]
    return lines, {"name": body.get("name"), "callback_url": body.get("callback_url")}


@bp.post("")
def create_batch():
    lines, extras = _request_lines()
    limit = current_app.config["MAX_BATCH_URLS"]
    if len(lines) > limit:
        raise ApiError(413, "too_many_urls", f"{len(lines)} URLs in one batch; the limit is {limit} "
                                             f"(MAX_BATCH_URLS)", limit=limit)
    callback = extras.get("callback_url")
    if callback is not None:
        check_url(callback, "callback_url")
    name = extras.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "bad_name", "name must be a string", field="name")

    max_length = current_app.config["MAX_URL_LENGTH"]
    invalid, invalid_count, good, seen = [], 0, [], {}

    def reject(n, value, code, message):
        nonlocal invalid_count
        invalid_count += 1
        if len(invalid) < INVALID_LINES_KEPT:
            text = value if isinstance(value, str) else repr(value)
            invalid.append({"line": n, "value": text[:VALUE_CHARS_KEPT], "code": code,
                            "message": message})

    for n, value in lines:
        code, message = url_problem(value, max_length)
        if code:
            reject(n, value, code, message)
        elif value in seen:
            reject(n, value, "duplicate_url", f"same URL as line {seen[value]}; queued once")
        else:
            seen[value] = n
            good.append(value)
    if not good:
        raise ApiError(400, "no_valid_urls", "no valid http(s) URL in the batch", invalid_lines=invalid,
                       invalid_count=invalid_count)

    session = get_session()
    key = idempotency_key()
    digest = request_digest([v for _, v in lines], name, callback) if key else None
    if key:
        existing = _batch_by_key(key)
        if existing is not None:
            check_key_reuse(existing.request_hash, digest)
            return batch_state(existing), 200
    now = utcnow()
    batch = Batch(id=new_id(), name=name[:255] if name else None, created_at=now, total=len(good),
                  invalid_lines={"count": invalid_count, "lines": invalid},
                  idempotency_key=key, request_hash=digest)
    session.add(batch)
    try:
        session.flush()
    except IntegrityError:       # the same key, committed meanwhile by a concurrent request
        session.rollback()
        existing = _batch_by_key(key)
        check_key_reuse(existing.request_hash, digest)
        return batch_state(existing), 200
    # enqueued_at NULL: the batch and its jobs are committed together, in the outbox; published
    # right after. If this process dies in between, a worker publishes them within seconds.
    rows = [{"id": job_id, "batch_id": batch.id, "source_kind": "url", "source": url,
             "status": "queued", "progress": 0, "attempts": 0, "created_at": now, "enqueued_at": None,
             "callback_url": callback, "thumbnails_count": 0} for job_id, url in zip(new_ids(len(good)), good)]
    # One multi-row INSERT per chunk (SQLAlchemy "insertmanyvalues"), then one commit.
    session.connection().execute(insert(Job.__table__), rows)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = _batch_by_key(key) if key else None
        if existing is None:
            raise
        check_key_reuse(existing.request_hash, digest)
        return batch_state(existing), 200
    try:
        publish_jobs([r["id"] for r in rows], app=celery(), stage="download")   # every one a URL
    except Exception as exc:
        current_app.logger.warning("could not publish batch %s (the workers' outbox will): %s", batch.id, exc)
    else:
        mark_published(Job.batch_id == batch.id)
    return jsonify({**batch.to_dict(), "queued": len(good), "invalid": invalid_count,
                    "status_counts": {"queued": len(good)}, "progress": 0.0}), 202


def _batch_by_key(key: str) -> Batch | None:
    return get_session().execute(select(Batch).where(Batch.idempotency_key == key)).scalar_one_or_none()


@bp.get("/<batch_id>")
def get_batch(batch_id):
    batch = get_session().get(Batch, batch_id)
    if batch is None:
        raise ApiError(404, "batch_not_found", f"no batch with id {batch_id!r}")
    return batch_state(batch)


def batch_state(batch: Batch):
    session = get_session()
    batch_id = batch.id
    counts = dict(session.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id)
                                  .group_by(Job.status)).all())
    finished = sum(counts.get(s, 0) for s in FINAL)
    total = batch.total or 0
    # A finished job counts 100 % whatever its progress column says (failed jobs stop early).
    progress = 100.0 * finished / total if total else 100.0
    if total and finished < total:
        unfinished_progress = session.execute(
            select(func.coalesce(func.sum(Job.progress), 0))
            .where(Job.batch_id == batch_id, Job.status.notin_(FINAL))).scalar()
        progress = (100.0 * finished + unfinished_progress) / total
    return jsonify({**batch.to_dict(), "status_counts": counts, "finished": finished,
                    "progress": round(progress, 2), "done": finished >= total})
