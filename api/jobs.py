"""/api/jobs: submit, read, cancel, retry, history (filters, sort, pages, CSV) and thumbnails."""
from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_file, stream_with_context
from sqlalchemy import Text, cast, delete, false, func, or_, select, tuple_, update

from api.errors import ApiError
from api.store import get_session
from api.submit import create_job, idempotency_key, job_request, json_body, publish
from db.models import FINAL, RUN_RESULT_COLUMNS, SOURCE_KINDS, STATUSES, Job, utcnow
from vidclass import CLASS_NAMES     # a plain tuple: vidclass/__init__.py imports nothing

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")

SORTS = {"created_at": Job.created_at, "confidence": Job.confidence, "label": Job.label,
         "review": Job.review_score,
         "status": Job.status}
NULLABLE_SORTS = ("confidence", "label", "review")      # their NULLs sort last in both orders
# One plain value per cell (spreadsheets sort on them): a column per class probability and per
# pipeline stage, never a JSON string.
PROBABILITY_COLUMNS = tuple(f"p_{name}" for name in CLASS_NAMES)
TIMING_COLUMNS = ("download_s", "sample_s", "features_s", "classify_s", "thumbnails_s", "total_s")
CSV_COLUMNS = ("id", "batch_id", "source_kind", "source", "status", "progress", "label", "confidence",
               "subcategory", "subcategory_confidence", "agreement", "true_label", "labelled_at",
               "model_version", "error_code", "error_message", "attempts", "created_at", "started_at",
               "finished_at", *PROBABILITY_COLUMNS, *TIMING_COLUMNS, "mixed", "whole_video_label",
               "whole_video_confidence")


@bp.post("")
def submit():
    kind, source, extras = job_request()
    job, created = create_job(kind, source, idempotency_key=idempotency_key(), **extras)
    return jsonify(job.to_dict()), 202 if created else 200, {"Location": f"/api/jobs/{job.id}"}


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
    return jsonify(job.to_dict()), 202, {"Location": f"/api/jobs/{job.id}"}


@bp.put("/<job_id>/label")
def set_label(job_id):
    """The user's correction: {"label": "<class>"} sets the job's true label, {"label": null}
    clears it. Kept apart from the model's answer (and through retries) for `vidclass export-labels`."""
    body = json_body()
    if "label" not in body:
        raise ApiError(400, "missing_label", f"JSON body needs `label`: one of {', '.join(CLASS_NAMES)}, "
                                             f"or null to clear the correction", field="label")
    raw = body["label"]
    if raw is not None and not isinstance(raw, str):
        raise ApiError(400, "bad_label", "label must be a class name or null", field="label")
    label = _labels(raw, "label", "bad_label") if raw is not None else []
    if raw is not None and (len(label) != 1 or label[0] not in CLASS_NAMES):
        raise ApiError(400, "bad_label", f"label must be one of {', '.join(CLASS_NAMES)}", field="label")
    session = get_session()
    job = load_job(job_id)
    if job.status != "done":
        raise ApiError(409, "job_not_done", f"job {job_id} is {job.status}: only a finished result can be "
                                            f"corrected (a failed job has no answer and nothing to learn from)")
    job.true_label = label[0] if label else None
    job.labelled_at = utcnow() if label else None
    session.commit()
    reason = unlearnable_reason(session, job)
    return jsonify({**job.to_dict(), "learnable": reason is None, "learnable_reason": reason})


def unlearnable_reason(session, job: Job) -> str | None:
    """None when a retrain learns from this job's correction (the rule is worker/retrain.py's
    learnable_corrections), else why not, in words."""
    from api.models import active_version
    from worker.retrain import learnable_corrections

    if job.true_label is None:
        return "no correction is set"
    active = active_version(session)
    pipeline = active.pipeline_version if active is not None else job.features_pipeline
    if session.execute(learnable_corrections(pipeline).where(Job.id == job.id)).first() is not None:
        return None
    if job.source_kind == "test-set":
        return "a test-set clip: it is in the corpus already, with its own label"
    if job.clip_features is None:
        return ("its clip features were not kept (made before they were stored, or cleared after "
                "FEATURE_RETENTION_DAYS): the correction is recorded, but a retrain cannot learn from it")
    return "its features were made by another feature pipeline than the active model's"


def remove_stored_files(job: Job) -> None:
    """A job's stored data on disk: its upload or download and its thumbnails."""
    import shutil

    from db import settings

    for folder in (Path(current_app.config["UPLOAD_DIR"]) / job.id, Path(settings.download_dir()) / job.id,
                   Path(current_app.config["THUMBNAIL_DIR"]) / job.id):
        shutil.rmtree(folder, ignore_errors=True)
    for path in [job.file_path] + list(job.thumbnail_paths or []):
        if path:
            Path(path).unlink(missing_ok=True)


def delete_jobs(session, jobs: list[Job]) -> None:
    """Delete jobs with their callbacks and stored files. A worker still running one notices at its
    next write (the row is gone) and stops."""
    from db.models import Callback

    ids = [j.id for j in jobs]
    # Lock the rows first: a worker finishing one of them updates its row and records its callback
    # in one transaction, so it either commits before us (its callback is deleted below) or finds
    # the row gone and records none. Without the lock, PostgreSQL could see a callback committed
    # between the two deletes, and the job's delete would violate the foreign key.
    session.execute(select(Job.id).where(Job.id.in_(ids)).with_for_update())
    for job in jobs:
        remove_stored_files(job)
    session.execute(delete(Callback).where(Callback.job_id.in_(ids)))
    session.execute(delete(Job).where(Job.id.in_(ids)))
    session.commit()


@bp.delete("/<job_id>")
def delete_job(job_id):
    session = get_session()
    delete_jobs(session, [load_job(job_id)])
    return "", 204


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

# An ISO date, or an RFC 3339 date-time (the offset optional: then UTC). Python's fromisoformat
# alone also takes other ISO shapes ("20240101", "2024-01-01T10") the OpenAPI document does not.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


def _parse_time(value: str, field: str, end: bool) -> datetime:
    try:
        if _DATE.fullmatch(value):     # a date: from its start / to the end of that day
            day = datetime.fromisoformat(value)
            return day + timedelta(days=1) if end else day
        match = _DATE_TIME.fullmatch(value)
        if not match:
            raise ValueError(value)
        day, time_of_day, fraction, offset = match.groups()
        offset = "+00:00" if offset in (None, "Z", "z") else offset
        parsed = datetime.fromisoformat(f"{day}T{time_of_day}{(fraction or '')[:7]}{offset}")
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


HISTORY_ARGS = {"status", "label", "segment_label", "subcategory", "batch", "source_kind", "q", "created_from", "created_to",
                "model_version", "model",
                "min_confidence", "corrected", "disagrees", "uncertain", "sort", "order", "page", "cursor",
                "per_page", "format", "download"}


def history_filters():
    """(SELECT with the filters, sort name, order) of GET /api/jobs's arguments."""
    args = request.args
    unknown = sorted(set(args) - HISTORY_ARGS)
    if unknown:       # a misspelt filter (`lable=`) would otherwise return everything
        raise ApiError(400, "unknown_parameter", f"unknown query parameter {unknown[0]!r}; known: "
                                                 f"{', '.join(sorted(HISTORY_ARGS))}", field=unknown[0])
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
        query = query.where(Job.label.in_(_labels(args["label"], "label")))
    if args.get("segment_label"):
        # Any segment of the job's timeline with one of these labels. The timeline is a JSON list
        # stored as json.dumps wrote it (SQLite and PostgreSQL alike): match its "label" entries.
        wanted = _labels(args["segment_label"], "segment_label")
        query = query.where(or_(*[cast(Job.segments, Text).like(f'%"label": "{name}"%') for name in wanted]))
    if args.get("subcategory"):
        wanted = [v.strip() for v in args["subcategory"].split(",") if v.strip()]
        query = query.where(Job.subcategory.in_(wanted))
    if args.get("batch"):
        query = query.where(Job.batch_id == args["batch"])
    if args.get("model_version"):      # the digest jobs record
        query = query.where(Job.model_version.in_([v.strip() for v in args["model_version"].split(",") if v.strip()]))
    if args.get("model"):              # a model version's number (GET /api/models)
        from db.models import ModelVersion

        if not re.fullmatch(r"[0-9]+", args["model"]):
            raise ApiError(400, "bad_filter", "model is a model version number (GET /api/models)", field="model")
        from api.models import MAX_ID

        number = int(args["model"])
        digest = get_session().execute(select(ModelVersion.digest).where(ModelVersion.id == number)).scalar() \
            if number <= MAX_ID else None
        query = query.where(Job.model_version == digest) if digest else query.where(false())
    corrected = _flag_arg("corrected")
    if corrected is not None:
        query = query.where(Job.true_label.is_not(None) if corrected else Job.true_label.is_(None))
    disagrees = _flag_arg("disagrees")
    if disagrees is not None:
        wrong = Job.true_label != Job.label
        query = query.where(Job.true_label.is_not(None), Job.label.is_not(None),
                            wrong if disagrees else ~wrong)
    if args.get("source_kind"):
        if args["source_kind"] not in SOURCE_KINDS:
            raise ApiError(400, "bad_filter", f"source_kind is one of {', '.join(SOURCE_KINDS)}", field="source_kind")
        query = query.where(Job.source_kind == args["source_kind"])
    if args.get("q"):
        # Literal substring match: escape LIKE's wildcards in the user's text.
        q = args["q"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Job.source.like(f"%{q}%", escape="\\"))
    if args.get("created_from"):
        query = query.where(Job.created_at >= _parse_time(args["created_from"], "created_from", False))
    if args.get("created_to"):
        end = _parse_time(args["created_to"], "created_to", True)
        query = query.where(Job.created_at < end if _DATE.fullmatch(args["created_to"]) else Job.created_at <= end)
    if args.get("min_confidence"):
        try:
            minimum = float(args["min_confidence"])
        except ValueError:
            raise ApiError(400, "bad_filter", "min_confidence must be a number", field="min_confidence") from None
        if not 0 <= minimum <= 1:
            raise ApiError(400, "bad_filter", f"min_confidence is a fraction between 0 and 1 (0.9 for 90%), "
                                              f"got {args['min_confidence']!r}", field="min_confidence")
        query = query.where(Job.confidence >= minimum)
    uncertain = _flag_arg("uncertain")
    if uncertain is not None:
        query = query.where(Job.uncertain.is_(uncertain))
    sort = args.get("sort", "created_at")
    if sort not in SORTS:
        raise ApiError(400, "bad_sort", f"sort must be one of {', '.join(SORTS)}", field="sort")
    order = args.get("order", "desc").lower()
    if order not in ("asc", "desc"):
        raise ApiError(400, "bad_sort", "order must be asc or desc", field="order")
    return query, sort, order


FLAG_VALUES = ("1", "0", "true", "false")


def _flag_arg(name: str) -> bool | None:
    """1/0 (true/false) or None when the argument is absent or empty (an empty form field)."""
    raw = request.args.get(name, "")
    if raw == "":
        return None
    if raw in FLAG_VALUES:
        return raw in ("1", "true")
    raise ApiError(400, "bad_filter", f"{name} must be 1 or 0", field=name)


# A filter may also ask for "mixed": videos whose timeline has no dominant class.
_CANONICAL_LABELS = {name.lower(): name for name in CLASS_NAMES} | {"mixed": "mixed"}


def _labels(raw: str, field: str, code: str = "bad_filter") -> list[str]:
    """Comma-separated class names, any case ("gaming", "flat_content"), as stored."""
    out = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name = _CANONICAL_LABELS.get(part.lower())
        if name is None:
            raise ApiError(400, code, f"unknown label {part!r}; one of {', '.join(CLASS_NAMES)}",
                           field=field)
        out.append(name)
    return out


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
    fmt = request.args.get("format") or "json"
    if fmt not in ("json", "csv"):
        raise ApiError(400, "bad_format", "format must be json or csv", field="format")
    if request.args.get("download", "") not in ("",) + FLAG_VALUES:
        raise ApiError(400, "bad_format", "download must be 1 or 0", field="download")
    session = get_session()
    if fmt == "csv":
        return _csv_response(history_query())
    if is_export():
        return _json_export(history_query())
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
    value = getattr(job, SORTS[sort].key)
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
        elif cursor["v"] is not None and not isinstance(cursor["v"], (int, float) if sort in ("confidence", "review") else str):
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


def is_export() -> bool:
    """CSV, or JSON with download=1: every matching row, streamed as an attachment."""
    args = request.args
    return args.get("format") == "csv" or args.get("download") in ("1", "true")


def _stream_rows(query):
    """Every row of `query`, 500 at a time, in a session of its own: the request's session is
    closed at teardown, before the stream ends."""
    from db import session as db_session

    with db_session.session_scope(current_app.config["DATABASE_URL"]) as s:
        yield from s.execute(query.execution_options(yield_per=500)).scalars()


def _chunked(pieces, size: int = 1 << 16):
    buffer, length = [], 0
    for piece in pieces:
        buffer.append(piece)
        length += len(piece)
        if length > size:
            yield "".join(buffer)
            buffer, length = [], 0
    yield "".join(buffer)


def _csv_response(query) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(row) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        return buffer.getvalue()

    def rows():
        yield line(CSV_COLUMNS)
        for job in _stream_rows(query):
            yield line(_csv_row(job))

    return Response(stream_with_context(_chunked(rows())), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=vidclass-jobs.csv"})


def _json_export(query) -> Response:
    """{"jobs": [...every match...], "total": N}, written row by row (100,000 rows never sit in
    memory); total comes last so it counts exactly the rows written."""
    def pieces():
        yield '{"jobs": ['
        n = 0
        for job in _stream_rows(query):
            yield ("," if n else "") + "\n" + json.dumps(job.to_dict())
            n += 1
        yield f'\n], "total": {n}}}\n'

    return Response(stream_with_context(_chunked(pieces())), mimetype="application/json",
                    headers={"Content-Disposition": "attachment; filename=vidclass-jobs.json"})


def _csv_row(job: Job) -> list:
    d = job.to_dict()
    d["error_code"], d["error_message"] = job.error_code, job.error_message
    d["true_label"], d["labelled_at"] = job.true_label, d.get("labelled_at")
    probabilities = job.probabilities or {}
    timings = job.stage_timings or {}
    for name, column in zip(CLASS_NAMES, PROBABILITY_COLUMNS):
        d[column] = probabilities.get(name)
    for column in TIMING_COLUMNS:
        value = timings.get(column)
        d[column] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    whole = job.whole_video or {}
    d["whole_video_label"], d["whole_video_confidence"] = whole.get("label"), whole.get("confidence")
    return [csv_cell(d[c]) for c in CSV_COLUMNS]


# Spreadsheets run a cell starting with one of these as a formula (=HYPERLINK(...), -2+3+cmd).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text cell a spreadsheet shows as text: a leading quote neutralises a formula (OWASP)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
