"""Turning a request into a committed, queued job (shared by /api/jobs and /api/classify)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

from flask import current_app, request
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from api.errors import ApiError
from api.store import celery, fast_call, get_session
from db.models import Job, new_id, utcnow
from worker import celery_app as names
from worker.enqueue import publish_jobs, stage_of

log = logging.getLogger(__name__)


def json_body() -> dict:
    """The request's JSON object: 413 json_too_large above MAX_JSON_MB, 400 bad_json if it is not
    JSON, not an object, or nested too deeply to parse."""
    cached = getattr(request, "_vidclass_json", None)
    if cached is not None:
        return cached
    limit = int(float(current_app.config["MAX_JSON_MB"]) * (1 << 20))
    too_large = ApiError(413, "json_too_large", f"JSON request bodies are limited to "
                                                f"{current_app.config['MAX_JSON_MB']:g} MB (MAX_JSON_MB)")
    if (request.content_length or 0) > limit:
        raise too_large                     # refused before a byte of it is read
    raw = request.stream.read(limit + 1)    # bounded even without a Content-Length
    if len(raw) > limit:
        raise too_large
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "request body is not valid JSON") from None
    except RecursionError:                  # [[[[... 100,000 deep: not a 500
        raise ApiError(400, "bad_json", "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "request body must be a JSON object")
    if b"\\u0000" in raw:         # a NUL in any string (errors.refuse_nul_characters says why)
        raise ApiError(400, "bad_character", "NUL characters are not accepted")
    request._vidclass_json = body
    return body


def check_url(value, field: str = "url") -> str:
    """A usable http(s) URL, or ApiError 400 with code bad_url."""
    code, message = url_problem(value, current_app.config["MAX_URL_LENGTH"])
    if code:
        raise ApiError(400, code, message, field=field)
    return value.strip(URL_SPACE)


# What an accepted URL is: http(s), an optional user, a host name or bracketed IPv6 address, an
# optional port, then anything but spaces and control characters; spaces, tabs and line breaks
# around it are dropped. One pattern for the server and the OpenAPI document (api/openapi.py), so
# what the document calls valid is what is accepted. Explicit character classes, not \s: Python's
# and JavaScript's \s disagree (\x1c-\x1f), and a JSON Schema pattern is JavaScript's.
URL_SPACE = " \t\n\r\f\v"
_VISIBLE = r"[^\x00-\x20\x7f"
URL_PATTERN = (rf"[Hh][Tt][Tt][Pp][Ss]?://({_VISIBLE}/?#@]+@)?({_VISIBLE}/?#@:\[\]]+|\[[0-9A-Fa-f:.]+\])"
               rf"(:[0-9]{{1,5}})?([/?#]{_VISIBLE}]*)?")
_URL = re.compile(URL_PATTERN)


def url_problem(value, max_length: int) -> tuple[str | None, str | None]:
    """(code, message) of why `value` is not an accepted URL (surrounding spaces aside), or (None, None)."""
    if not isinstance(value, str) or not value.strip(URL_SPACE):
        return "bad_url", "URL must be a non-empty string"
    value = value.strip(URL_SPACE)
    if len(value) > max_length:
        return "url_too_long", f"URL is {len(value)} characters long; the limit is {max_length}"
    if _URL.fullmatch(value):
        return None, None
    if not re.match(r"(?i)[a-z][a-z0-9+.-]*://", value):
        return "bad_url", f"not a URL: {value[:80]!r} (expected http:// or https:// followed by a host)"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return "bad_url", "URL contains whitespace or a control character"
    scheme = value.split(":", 1)[0]
    if scheme.lower() not in ("http", "https"):
        return "bad_url", f"only http and https URLs are accepted, not {scheme!r}"
    return "bad_url", f"not a URL: {value[:80]!r} (expected a host name or [IPv6 address], then an optional :port)"


def test_set_names(timeout: float = 10.0) -> dict | None:
    """{category: [names]} from a worker over the fast queue, cached for a minute; None if no answer."""
    cache = current_app.extensions.setdefault("vidclass.videos", {})
    if cache.get("expires", 0) > time.monotonic():
        return cache["value"]
    try:
        value = fast_call(names.LIST_VIDEOS, timeout=timeout)
    except Exception as exc:
        log.warning("no worker answered the test-set name list: %s", exc)
        return None
    if "error" not in value:
        cache.update(value=value, expires=time.monotonic() + 60)
    return value


def check_video_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "bad_video_name", "video must be a non-empty test-set name", field="video")
    name = name.strip()
    listing = test_set_names()
    if listing is None:
        # Never accept an unchecked name: it would be stored, shown and exported as given.
        raise ApiError(503, "no_worker", "no worker answered the test-set name check; start "
                                         "`vidclass worker` and try again", field="video")
    if "error" in listing:
        raise ApiError(503, listing["error"]["code"], listing["error"]["message"])
    known = {n for names_ in listing["categories"].values() for n in names_}
    stems = [n for n in known if os.path.splitext(n)[0] == name]
    if name not in known and len(stems) != 1:
        raise ApiError(404, "unknown_video", f"{name!r} is not a test-set video name "
                                             f"(GET /api/videos lists them)", field="video")
    return name


def find_by_key(key: str) -> Job | None:
    return get_session().execute(select(Job).where(Job.idempotency_key == key)).scalar_one_or_none()


def request_digest(*parts) -> str:
    """What an Idempotency-Key promises: the same key always comes with this same request."""
    digest = hashlib.sha256()
    for part in parts:
        if hasattr(part, "stream"):              # an upload: its name and bytes
            digest.update((part.filename or "").encode())
            for chunk in iter(lambda: part.stream.read(1 << 20), b""):
                digest.update(chunk)
            part.stream.seek(0)
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def check_key_reuse(stored_hash: str | None, request_hash: str) -> None:
    if stored_hash is not None and stored_hash != request_hash:
        raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was already used for a "
                                                      "different request; use a new key")


# Form fields are text: the words a form may send for segments' true and false.
FORM_BOOLEANS = {"true": True, "1": True, "on": True, "yes": True,
                 "false": False, "0": False, "off": False, "no": False}


def job_options(values, form: bool = False) -> dict:
    """The per-job options of a request (a JSON body, or form fields with form=True): `segments`
    (true/false; absent or "auto" = by SEGMENT_MIN_VIDEO_S) and `min_segment_s` (seconds, > 0).
    JSON takes JSON types only (true, not "true"; 5, not "5"), as the OpenAPI document says.
    400 bad_option otherwise."""
    options = {}
    raw = values.get("segments")
    if form and raw in FORM_BOOLEANS:
        raw = FORM_BOOLEANS[raw]
    if raw is not None and raw != "auto":
        if not isinstance(raw, bool):
            raise ApiError(400, "bad_option", "segments must be true, false or \"auto\"", field="segments")
        options["segments"] = raw
    raw = values.get("min_segment_s")
    if raw is not None and not (form and raw == ""):
        value = float("nan")
        if form:
            try:
                value = float(raw)
            except ValueError:
                pass
        elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
        if not 0 < value <= 3600:
            raise ApiError(400, "bad_option", "min_segment_s must be a number of seconds in (0, 3600]",
                           field="min_segment_s")
        options["min_segment_s"] = value
    return options


def create_job(kind: str, source: str, *, callback_url=None, idempotency_key=None,
               upload=None, options=None) -> tuple[Job, bool]:
    """Commit a queued job, then publish it. Returns (job, created); created False = idempotent hit."""
    session = get_session()
    digest = None
    if idempotency_key:
        digest = request_digest(kind, source, callback_url, upload, *([options] if options else []))
        existing = find_by_key(idempotency_key)
        if existing is not None:
            check_key_reuse(existing.request_hash, digest)
            return existing, False
    job_id = new_id()
    file_path = save_upload(job_id, upload) if upload is not None else None
    now = utcnow()
    # enqueued_at NULL: in the outbox until publish() hears the broker has it.
    job = Job(id=job_id, source_kind=kind, source=source, file_path=file_path, status="queued",
              progress=0, attempts=0, created_at=now, enqueued_at=None, callback_url=callback_url,
              idempotency_key=idempotency_key, request_hash=digest, thumbnails_count=0,
              options=options or None)
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if file_path:
            Path(file_path).unlink(missing_ok=True)
        existing = find_by_key(idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        check_key_reuse(existing.request_hash, digest)
        return existing, False
    publish(job)
    return job, True


def publish(job: Job) -> None:
    """Queue a committed job (its row has enqueued_at NULL), then mark it published. If the broker
    is down, or this process dies first, the row stays NULL and a worker publishes it within
    OUTBOX_INTERVAL_S (worker/reconcile.py)."""
    try:
        # The Celery message, without send_task's overhead, on the queue of the job's first stage.
        publish_jobs([job.id], app=celery(), stage=stage_of(job.source_kind, job.file_path))
    except Exception as exc:
        log.warning("could not publish job %s (the workers' outbox will): %s", job.id, exc)
        return
    mark_published(Job.id == job.id)
    job.enqueued_at = utcnow()


def mark_published(where) -> None:
    session = get_session()
    session.execute(update(Job).where(where, Job.enqueued_at.is_(None)).values(enqueued_at=utcnow()))
    session.commit()


def upload_name(filename: str | None) -> str:
    """An uploaded file's name as stored and shown: its last path part, NFC, in any script (UTF-8
    kept, unlike werkzeug's ASCII-only secure_filename), with control characters, separators and
    leading dots removed; at most 150 characters, extension kept; "upload.bin" if nothing is left."""
    import unicodedata

    name = unicodedata.normalize("NFC", (filename or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(c if (c.isalnum() or c in " ._-()[]+,") else "_" for c in name
                   if unicodedata.category(c)[0] != "C")
    name = " ".join(name.split()).lstrip(". ")
    if len(name) > 150:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:140] + dot + ext[:9]) if dot and len(ext) < 10 else name[:150]
    return name or "upload.bin"


def save_upload(job_id: str, upload) -> str:
    name = upload_name(upload.filename)
    folder = Path(current_app.config["UPLOAD_DIR"]) / job_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    upload.save(path)
    if path.stat().st_size == 0:
        path.unlink()
        folder.rmdir()
        raise ApiError(422, "empty_file", "the uploaded file is empty", field="file")
    return str(path)


def job_request() -> tuple[str, str, dict]:
    """(kind, source, extras) from a JSON or multipart body: url, video (test-set name) or file."""
    if request.files or (request.mimetype or "").startswith("multipart/"):
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "missing_file", "multipart request needs a `file` field", field="file")
        callback = request.form.get("callback_url") or None
        if callback:
            check_url(callback, "callback_url")
        return "upload", upload_name(upload.filename), \
            {"upload": upload, "callback_url": callback, "options": job_options(request.form, form=True)}
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type",
                       "send JSON {\"url\": ...} or {\"video\": ...}, or a multipart `file` upload")
    body = json_body()
    callback = body.get("callback_url")
    if callback is not None:
        check_url(callback, "callback_url")
    if "url" in body and "video" in body:
        raise ApiError(400, "ambiguous_request", "give either `url` or `video`, not both")
    options = job_options(body)
    if "url" in body:
        return "url", check_url(body["url"]), {"callback_url": callback, "options": options}
    if "video" in body:
        return "test-set", check_video_name(body["video"]), {"callback_url": callback, "options": options}
    raise ApiError(400, "missing_source", "JSON body needs `url` (http/https) or `video` (a test-set name)")


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise ApiError(400, "bad_idempotency_key", "Idempotency-Key must be 1-255 characters")
    return key
