"""/api/batches: up to MAX_BATCH_URLS URLs in one request, bulk-inserted and bulk-published."""
from __future__ import annotations

import csv

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from api.errors import ApiError
from api.jobs import delete_jobs
from api.store import celery, get_session
from api.submit import (check_key_reuse, check_url, idempotency_key, job_options, json_body, mark_published,
                        request_digest, url_problem)
from db.models import FINAL, RUN_RESULT_COLUMNS, Batch, Job, new_id, new_ids, utcnow
from worker.enqueue import publish_jobs

bp = Blueprint("batches", __name__, url_prefix="/api/batches")

# Rejected lines kept (and returned) per batch; the rest are only counted. 9,999 bad 5 KB lines
# must not become 51 MB in the database and in every GET /api/batches/<id>.
INVALID_LINES_KEPT = 100
VALUE_CHARS_KEPT = 200


def parse_lines(text: str, is_csv: bool = False) -> list[tuple[int, str]]:
    """The one parser of URL lists, pasted or uploaded: (line number in the user's text, value).

    Blank lines and lines starting with `#` are skipped but still counted, so a rejected line is
    reported with the number the user sees in their editor. CSV: the `url` column when the first
    (non-comment) row names one, else the first column."""
    kept = [(n, line) for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]
    if not is_csv:
        return [(n, line.strip()) for n, line in kept]
    rows = [(n, next(csv.reader([line]), [])) for n, line in kept]
    column = 0
    if rows:
        header = [c.strip().lower() for c in rows[0][1]]
        if "url" in header:
            column = header.index("url")
            rows = rows[1:]
    return [(n, row[column].strip()) for n, row in rows if len(row) > column and row[column].strip()]


def _request_lines() -> tuple[list[tuple[int, object]], dict]:
    if request.files or (request.mimetype or "").startswith("multipart/"):
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "missing_file", "multipart request needs a `file` field (text or CSV, "
                                                "one URL a line)", field="file")
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(422, "bad_file", "the URL list must be UTF-8 text", field="file") from None
        name = (upload.filename or "").lower()
        is_csv = name.endswith(".csv") or (upload.mimetype or "") in ("text/csv", "application/csv")
        return parse_lines(text, is_csv), {"name": request.form.get("name") or upload.filename,
                                           "callback_url": request.form.get("callback_url") or None,
                                           "options": job_options(request.form, form=True)}
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type",
                       "send JSON {\"urls\": [...]} or a multipart `file` (text or CSV)")
    body = json_body()
    urls = body.get("urls")
    if isinstance(body.get("text"), str) and urls is None:
        # A pasted list, as typed: the same parser as an uploaded file.
        return parse_lines(body["text"], bool(body.get("csv"))), {"name": body.get("name"),
                                                                   "callback_url": body.get("callback_url"),
                                                                   "options": job_options(body)}
    if not isinstance(urls, list):
        raise ApiError(400, "missing_urls", "JSON body needs `urls` (a list of URLs) or `text` (the "
                                            "list as typed: one URL a line, # comments)", field="urls")
    lines = [(n, u.strip() if isinstance(u, str) else u) for n, u in enumerate(urls, 1)
             if not (isinstance(u, str) and not u.strip())]
    return lines, {"name": body.get("name"), "callback_url": body.get("callback_url"),
                   "options": job_options(body)}


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
        raise ApiError(422, "no_valid_urls", "no valid http(s) URL in the batch", invalid_lines=invalid,
                       invalid_count=invalid_count)

    session = get_session()
    key = idempotency_key()
    # Options count only when given, so a key made before options existed still matches.
    digest = request_digest([v for _, v in lines], name, callback,
                            *([extras["options"]] if extras["options"] else [])) if key else None
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
             "callback_url": callback, "thumbnails_count": 0, "options": extras["options"]}
            for job_id, url in zip(new_ids(len(good)), good)]
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
    response = jsonify({**batch.to_dict(), "queued": len(good), "invalid": invalid_count,
                        "status_counts": {"queued": len(good)}, "progress": 0.0})
    response.headers["Location"] = f"/api/batches/{batch.id}"
    return response, 202


@bp.get("")
def list_batches():
    """Newest first, with each batch's counts per status, progress and label breakdown."""
    from api.jobs import _int_arg

    per_page = _int_arg("per_page", 20, 1, 200)
    page = _int_arg("page", 1, 1, 10**6)
    session = get_session()
    total = session.execute(select(func.count()).select_from(Batch)).scalar()
    batches = session.execute(select(Batch).order_by(Batch.created_at.desc(), Batch.id.desc())
                              .limit(per_page).offset((page - 1) * per_page)).scalars().all()
    summaries = summarise([b.id for b in batches])
    return jsonify({"batches": [{**b.to_dict(), **_progress(b, *summaries.get(b.id, ({}, {}, 0)))}
                                for b in batches],
                    "page": page, "per_page": per_page, "total": total,
                    "pages": (total + per_page - 1) // per_page})


def summarise(batch_ids: list[str]) -> dict[str, tuple[dict, dict, int]]:
    """batch id -> (counts per status, done jobs per label, summed progress of unfinished jobs),
    two grouped queries for a whole page of batches."""
    out: dict[str, tuple[dict, dict, int]] = {}
    if not batch_ids:
        return out
    session = get_session()
    for batch_id, status, count, progress in session.execute(
            select(Job.batch_id, Job.status, func.count(), func.coalesce(func.sum(Job.progress), 0))
            .where(Job.batch_id.in_(batch_ids)).group_by(Job.batch_id, Job.status)):
        counts, labels, running = out.setdefault(batch_id, ({}, {}, 0))
        counts[status] = count
        out[batch_id] = (counts, labels, running + (int(progress) if status not in FINAL else 0))
    for batch_id, label, count in session.execute(
            select(Job.batch_id, Job.label, func.count())
            .where(Job.batch_id.in_(batch_ids), Job.status == "done", Job.label.is_not(None))
            .group_by(Job.batch_id, Job.label)):
        out[batch_id][1][label] = count
    return out


def _progress(batch: Batch, counts: dict, labels: dict, unfinished_progress: int) -> dict:
    finished = sum(counts.get(s, 0) for s in FINAL)
    total = batch.total or 0
    # A finished job counts 100 % whatever its progress column says (failed jobs stop early).
    progress = (100.0 * finished + unfinished_progress) / total if total else 100.0
    return {"status_counts": counts, "label_counts": labels, "finished": finished,
            "progress": round(min(progress, 100.0), 2), "done": finished >= total}


def _load_batch(batch_id: str) -> Batch:
    batch = get_session().get(Batch, batch_id)
    if batch is None:
        raise ApiError(404, "batch_not_found", f"no batch with id {batch_id!r}")
    return batch


@bp.post("/<batch_id>/cancel")
def cancel_batch(batch_id):
    """Cancel every queued and running job of the batch (workers stop running ones at their next
    heartbeat); finished jobs stay as they are."""
    batch = _load_batch(batch_id)
    session = get_session()
    result = session.execute(update(Job).where(Job.batch_id == batch_id, Job.status.notin_(FINAL))
                             .values(status="cancelled", finished_at=utcnow()))
    session.commit()
    body = batch_state(batch).get_json()
    return jsonify({**body, "cancelled": result.rowcount})


@bp.post("/<batch_id>/retry")
def retry_batch(batch_id):
    """Run the batch's failed jobs again (the same jobs, as POST /api/jobs/<id>/retry does)."""
    batch = _load_batch(batch_id)
    session = get_session()
    ids = session.execute(select(Job.id).where(Job.batch_id == batch_id, Job.status == "failed")).scalars().all()
    if ids:
        session.execute(update(Job).where(Job.id.in_(ids), Job.status == "failed")
                        .values({**dict.fromkeys(RUN_RESULT_COLUMNS), "status": "queued", "progress": 0,
                                 "attempts": 0, "thumbnails_count": 0, "enqueued_at": None}))
        session.commit()
        try:
            publish_jobs(list(ids), app=celery())
        except Exception as exc:
            current_app.logger.warning("could not publish retried jobs of batch %s (the outbox will): %s",
                                       batch_id, exc)
        else:
            mark_published(Job.id.in_(ids))
    response = jsonify({**batch_state(batch).get_json(), "retried": len(ids)})
    response.headers["Location"] = f"/api/batches/{batch_id}"
    return response, 202


def _batch_by_key(key: str) -> Batch | None:
    return get_session().execute(select(Batch).where(Batch.idempotency_key == key)).scalar_one_or_none()


@bp.get("/<batch_id>")
def get_batch(batch_id):
    return batch_state(_load_batch(batch_id))


def batch_state(batch: Batch):
    return jsonify({**batch.to_dict(), **_progress(batch, *summarise([batch.id]).get(batch.id, ({}, {}, 0)))})


@bp.delete("/<batch_id>")
def delete_batch(batch_id):
    """The batch, its jobs and their stored files (uploads, downloads, thumbnails)."""
    batch = _load_batch(batch_id)
    session = get_session()
    delete_jobs(session, session.execute(select(Job).where(Job.batch_id == batch.id)).scalars().all())
    session.execute(delete(Batch).where(Batch.id == batch.id))
    session.commit()
    return "", 204
