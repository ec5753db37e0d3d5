"""/api/jobs: submit, read, cancel, retry, history (filters, sort, pages, CSV) and thumbnails."""
from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_file, stream_with_context
from sqlalchemy import func, select, tuple_, update

from api.errors import ApiError
from api.store import get_session
from api.submit import create_job, idempotency_key, job_request, publish
from db.models import FINAL, RUN_RESULT_COLUMNS, STATUSES, Job, utcnow

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")

SORTS = {"created_at": Job.created_at, "confidence": Job.confidence, "label": Job.label,
         "status": Job.status}
NULLABLE_SORTS = ("confidence", "label")      # their NULLs sort last in both orders
CSV_COLUMNS = ("id", "batch_id", "source_kind", "source", "status", "progress", "label", "confidence",
               "subcategory", "agreement", "model_version", "error_code", "error_message", "attempts",
               "created_at", "started_at", "finished_at", "probabilities", "stage_timings")


@bp.post("")
def submit():
    kind, source, extras = job_request()
    job, created = create_job(kind, source, idempotency_key=idempotency_key(), **extras)
    return jsonify(job.to_dict()), 202 if created else 200


def load_job(job_id: str) -> Job:
    job = get_session().get(Job, job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    return job


@bp.get("/<job_id>")
def get_job(job_id):
    return jsonify(load_job(job_id).to_dict())


@bp.post("/<job_id>/cancel")
def cancel(job_id):
    session = get_session()
    job = load_job(job_id)
    if job.status in FINAL:
        raise ApiError(409, "not_cancellable", f"job is already {job.status}", status=job.status)
    # Conditional: a worker finishing at the same moment wins, and we report that instead.
    result = session.execute(update(Job).where(Job.id == job_id, Job.status.notin_(FINAL))
                             .values(status="cancelled", finished_at=utcnow()))
    session.commit()
    session.refresh(job)
    if result.rowcount != 1:
        raise ApiError(409, "not_cancellable", f"job is already {job.status}", status=job.status)
    return jsonify(job.to_dict())


@bp.post("/<job_id>/retry")
def retry(job_id):
    session = get_session()
    job = load_job(job_id)
    if job.status not in ("failed", "cancelled"):
        raise ApiError(409, "not_retryable", f"only failed or cancelled jobs can be retried; "
                                             f"this one is {job.status}", status=job.status)
    if job.source_kind == "upload" and not job.file_path:
        raise ApiError(409, "upload_expired", "this job's uploaded file was deleted "
                                              "(UPLOAD_RETENTION_H after the job ended); upload it again")
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(("failed", "cancelled")))
        .values({**dict.fromkeys(RUN_RESULT_COLUMNS), "status": "queued", "progress": 0,
                 "attempts": 0, "thumbnails_count": 0, "enqueued_at": None}))
    session.commit()
    if result.rowcount != 1:
        raise ApiError(409, "not_retryable", "the job changed state meanwhile; read it again")
    session.refresh(job)
    publish(job)
    return jsonify(job.to_dict()), 202


@bp.get("/<job_id>/thumbnails/<int:n>.jpg")
def thumbnail(job_id, n):
    job = load_job(job_id)
    paths = job.thumbnail_paths or []
    if n >= len(paths) or not Path(paths[n]).is_file():
        raise ApiError(404, "thumbnail_not_found", f"job {job_id} has no thumbnail {n}")
    return send_file(paths[n], mimetype="image/jpeg", max_age=3600)


@bp.get("/<job_id>/segments/<int:n>.jpg")
def segment_thumbnail(job_id, n):
    job = load_job(job_id)
    segments = job.segments or []
    path = segments[n].get("thumbnail_path") if n < len(segments) else None
    if not path or not Path(path).is_file():
        raise ApiError(404, "thumbnail_not_found", f"job {job_id} has no segment thumbnail {n}")
    return send_file(path, mimetype="image/jpeg", max_age=3600)


# ------------------------------------------------------------------ history

def _parse_time(value: str, field: str, end: bool) -> datetime:
    try:
        if len(value) == 10:           # a date: from its start / to the end of that day
            day = datetime.fromisoformat(value)
            return day + timedelta(days=1) if end else day
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "bad_filter", f"{field} must be an ISO date or datetime, got {value!r}",
                       field=field) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def history_query():
    """SELECT for GET /api/jobs's filters and sort (shared by JSON pages and CSV export)."""
    query, sort, order = history_filters()
    column = SORTS[sort]
    primary = column.asc() if order == "asc" else column.desc()
    tiebreak = Job.id.asc() if order == "asc" else Job.id.desc()
    return query.order_by(primary.nulls_last() if sort in NULLABLE_SORTS else primary, tiebreak)


def history_filters():
    """(SELECT with the filters, sort name, order) of GET /api/jobs's arguments."""
    args = request.args
    query = select(Job)
    status = args.get("status")
    if status:
        wanted = [s.strip() for s in status.split(",") if s.strip()]
        bad = [s for s in wanted if s not in STATUSES]
        if bad:
            raise ApiError(400, "bad_filter", f"unknown status {bad[0]!r}; one of {', '.join(STATUSES)}",
                           field="status")
        query = query.where(Job.status.in_(wanted))
    if args.get("label"):
        query = query.where(Job.label.in_([s.strip() for s in args["label"].split(",")]))
    if args.get("batch"):
        query = query.where(Job.batch_id == args["batch"])
    if args.get("source_kind"):
        query = query.where(Job.source_kind == args["source_kind"])
    if args.get("q"):
        # Literal substring match: escape LIKE's wildcards in the user's text.
        q = args["q"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Job.source.like(f"%{q}%", escape="\\"))
    if args.get("created_from"):
        query = query.where(Job.created_at >= _parse_time(args["created_from"], "created_from", False))
    if args.get("created_to"):
        end = _parse_time(args["created_to"], "created_to", True)
        query = query.where(Job.created_at < end if len(args["created_to"]) == 10 else Job.created_at <= end)
    if args.get("min_confidence"):
        try:
            minimum = float(args["min_confidence"])
        except ValueError:
            raise ApiError(400, "bad_filter", "min_confidence must be a number", field="min_confidence") from None
        query = query.where(Job.confidence >= minimum)
    sort = args.get("sort", "created_at")
    if sort not in SORTS:
        raise ApiError(400, "bad_sort", f"sort must be one of {', '.join(SORTS)}", field="sort")
    order = args.get("order", "desc").lower()
    if order not in ("asc", "desc"):
        raise ApiError(400, "bad_sort", "order must be asc or desc", field="order")
    return query, sort, order


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_page", f"{name} must be an integer", field=name) from None
    if not low <= value <= high:
        raise ApiError(400, "bad_page", f"{name} must be between {low} and {high}", field=name)
    return value


@bp.get("")
def history():
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, "bad_format", "format must be json or csv", field="format")
    session = get_session()
    if fmt == "csv":
        return _csv_response(session, history_query())
    filtered, sort, order = history_filters()
    per_page = _int_arg("per_page", 50, 1, 500)
    body = {"per_page": per_page}
    raw_cursor = request.args.get("cursor")
    if raw_cursor:
        if request.args.get("page"):
            raise ApiError(400, "bad_page", "give either page or cursor, not both", field="cursor")
        rows = keyset_page(session, filtered, sort, order, _decode_cursor(raw_cursor, sort, order),
                           per_page + 1)
    else:
        page = _int_arg("page", 1, 1, 10**7)
        offset = (page - 1) * per_page
        limit = current_app.config["MAX_HISTORY_OFFSET"]
        if offset > limit:
            # Deep OFFSETs read and drop every skipped row: cheap to ask, costly to answer.
            raise ApiError(400, "offset_too_large", f"page {page} starts {offset} rows in; the limit is "
                                                    f"{limit} (MAX_HISTORY_OFFSET): walk with `cursor` "
                                                    f"(each page's next_cursor) instead", field="page")
        # Page 1 is the keyset page without a cursor: the same rows, but index range scans (an
        # ORDER BY ... DESC NULLS LAST cannot use PostgreSQL's ascending index).
        rows = (keyset_page(session, filtered, sort, order, None, per_page + 1) if offset == 0 else
                session.execute(history_query().limit(per_page + 1).offset(offset)).scalars().all())
        body["page"] = page
    more = len(rows) > per_page
    rows = rows[:per_page]
    total = session.execute(select(func.count()).select_from(filtered.subquery())).scalar()
    body.update(total=total, pages=(total + per_page - 1) // per_page)
    body["next_cursor"] = _encode_cursor(rows[-1], sort, order) if more else None
    return jsonify({"jobs": [j.to_dict() for j in rows], **body})


# Keyset ("cursor") pages: the cursor is the sort value and id of the last row shown, and the next
# page is the rows after it in (sort column, id) order: an index range scan on ix_jobs_<sort>_id,
# as fast on page 2,000 as on page 1. Nullable sorts put NULLs last: the non-NULL rows first, then
# the NULL ones by id, each part a range scan of its own.

def _encode_cursor(job: Job, sort: str, order: str) -> str:
    value = getattr(job, sort)
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps({"s": sort, "o": order, "v": value, "i": job.id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(raw: str, sort: str, order: str) -> dict:
    try:
        cursor = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(cursor, dict) or not isinstance(cursor.get("i"), str):
            raise ValueError
        if sort == "created_at":
            cursor["v"] = datetime.fromisoformat(cursor["v"])
        elif cursor["v"] is not None and not isinstance(cursor["v"], (int, float) if sort == "confidence" else str):
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "bad_cursor", "cursor is not one this server gave out", field="cursor") from None
    if (cursor.get("s"), cursor.get("o")) != (sort, order):
        raise ApiError(400, "bad_cursor", "this cursor belongs to another sort or order; keep the "
                                          "sort and order of the page that gave it", field="cursor")
    return cursor


def keyset_page(session, filtered, sort: str, order: str, cursor: dict | None, limit: int) -> list[Job]:
    column = SORTS[sort]
    asc = order == "asc"
    after = (lambda a, b: a > b) if asc else (lambda a, b: a < b)
    by = (column.asc(), Job.id.asc()) if asc else (column.desc(), Job.id.desc())
    by_id = Job.id.asc() if asc else Job.id.desc()
    nullable = sort in NULLABLE_SORTS
    rows: list[Job] = []
    if cursor is None or cursor["v"] is not None:
        query = filtered.where(column.is_not(None)) if nullable else filtered
        if cursor is not None:
            query = query.where(after(tuple_(column, Job.id), tuple_(cursor["v"], cursor["i"])))
        rows = session.execute(query.order_by(*by).limit(limit)).scalars().all()
    if nullable and len(rows) < limit:
        query = filtered.where(column.is_(None))
        if cursor is not None and cursor["v"] is None:
            query = query.where(after(Job.id, cursor["i"]))
        rows += session.execute(query.order_by(by_id).limit(limit - len(rows))).scalars().all()
    return rows


def _csv_response(session, query) -> Response:
    maker_url = current_app.config["DATABASE_URL"]

    def rows():
        from db import session as db_session

        # Its own session: the request's is closed at teardown, before the stream ends.
        with db_session.session_scope(maker_url) as s:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(CSV_COLUMNS)
            for job in s.execute(query.execution_options(yield_per=500)).scalars():
                writer.writerow(_csv_row(job))
                if buffer.tell() > 1 << 16:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()

    return Response(stream_with_context(rows()), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=vidclass-jobs.csv"})


def _csv_row(job: Job) -> list:
    d = job.to_dict()
    d["error_code"], d["error_message"] = job.error_code, job.error_message
    return [csv_cell(json.dumps(d[c], sort_keys=True) if c in ("probabilities", "stage_timings") and d[c]
                     else d[c]) for c in CSV_COLUMNS]


# Spreadsheets run a cell starting with one of these as a formula (=HYPERLINK(...), -2+3+cmd).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text cell a spreadsheet shows as text: a leading quote neutralises a formula (OWASP)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
