"""JSON errors for every 4xx/5xx: {"code": stable_code, "message": human text}."""
from __future__ import annotations

import logging
import re

from flask import jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# Werkzeug's names, made stable codes ("Request Entity Too Large" -> "payload_too_large").
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 429: "too_many_requests", 500: "internal_error",
               503: "unavailable"}


class ApiError(Exception):
    """Raise anywhere in a view: becomes an HTTP error with a stable code."""

    def __init__(self, http_status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.http_status, self.code, self.message, self.extra = http_status, code, message, extra


def error_response(http_status: int, code: str, message: str, **extra):
    response = jsonify({"code": code, "message": message, **extra})
    response.status_code = http_status
    return response


def refuse_nul_characters() -> None:
    """400 bad_character for a NUL in a query parameter or form field: PostgreSQL cannot store one
    in text, and no name, URL or filter has a use for it. (JSON bodies: api.submit.json_body.)"""
    fields = list(request.args.items(multi=True))
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields += list(request.form.items(multi=True))
    for name, value in fields:
        name, value = name or "", value if isinstance(value, str) else ""
        if "\0" in name or "\0" in value:
            raise ApiError(400, "bad_character", "NUL characters are not accepted", field=name.replace("\0", ""))


def register(app) -> None:
    app.before_request(refuse_nul_characters)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        extra = dict(exc.extra)
        challenge = extra.pop("www_authenticate", False)
        response = error_response(exc.http_status, exc.code, exc.message, **extra)
        if challenge:
            response.headers["WWW-Authenticate"] = 'Bearer realm="vidclass"'
        if "retry_after" in extra:
            response.headers["Retry-After"] = str(extra["retry_after"])
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = _HTTP_CODES.get(exc.code) or re.sub(r"\W+", "_", (exc.name or "error").lower()).strip("_")
        message = exc.description or exc.name
        if exc.code == 413:
            limit = app.config.get("MAX_UPLOAD_MB")
            message = f"request body too large (uploads are limited to {limit} MB: MAX_UPLOAD_MB)"
        response = error_response(exc.code or 500, code, message)
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")     # the detail is for the log, not the client
        return error_response(500, "internal_error", "An internal error occurred; the server's log "
                                                     "has the details.")
