"""The original app's API: GET /api/videos and synchronous POST /api/classify."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from api.errors import ApiError
from api.store import fast_call, get_session
from api.submit import create_job, idempotency_key, job_request, json_body, test_set_names
from db.models import FINAL
from worker import celery_app as names

bp = Blueprint("compat", __name__, url_prefix="/api")

_ERROR_STATUS = {"unknown_video": 404, "no_models": 503, "pipeline_mismatch": 500}


@bp.get("/videos")
def videos():
    listing = test_set_names()
    if listing is None:
        raise ApiError(503, "no_worker", "no worker answered on the fast queue; start `vidclass worker`")
    if "error" in listing:
        raise ApiError(503, listing["error"]["code"], listing["error"]["message"])
    return jsonify(listing)


def _wait_arg(body: dict | None) -> float:
    raw = request.args.get("wait", (body or {}).get("wait") if body is not None else None)
    if raw is None and request.form:
        raw = request.form.get("wait")
    if raw is None:
        return float(current_app.config["SYNC_WAIT_S"])
    try:
        wait = float(raw)
    except (TypeError, ValueError):
        raise ApiError(400, "bad_wait", "wait must be a number of seconds", field="wait") from None
    if not 0 <= wait <= 300:
        raise ApiError(400, "bad_wait", "wait must be between 0 and 300 seconds", field="wait")
    return wait


@bp.post("/classify")
def classify():
    body = json_body() if request.is_json else None
    wait = _wait_arg(body)
    if body is not None and "video" in body and "url" not in body:
        name = body["video"]
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "bad_video_name", "video must be a non-empty test-set name", field="video")
        try:
            result = fast_call(names.CLASSIFY_NAME, [name.strip()], timeout=max(wait, 1.0))
        except Exception as exc:
            raise ApiError(503, "no_worker", f"no worker answered within {max(wait, 1.0):g} s: "
                                             f"{type(exc).__name__}") from None
        if "error" in result:
            error = result["error"]
            raise ApiError(_ERROR_STATUS.get(error["code"], 400), error["code"], error["message"])
        return jsonify(result)

    kind, source, extras = job_request()
    job, _ = create_job(kind, source, idempotency_key=idempotency_key(), **extras)
    session = get_session()
    deadline = time.monotonic() + wait
    while job.status not in FINAL and time.monotonic() < deadline:
        time.sleep(0.2)
        session.refresh(job)
    data = job.to_dict()
    if job.status == "done":
        return jsonify({**data, "target": job.source, "job": job.id})
    if job.status in FINAL:
        error = data.get("error") or {"code": job.status, "message": f"job {job.status}"}
        return jsonify({"code": error["code"], "message": error["message"], "job": data}), 422
    return jsonify(data), 202, {"Location": f"/api/jobs/{job.id}"}
