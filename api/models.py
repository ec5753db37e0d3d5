"""/api/models: model versions. Retrain from users' corrections (a queued job on the workers),
compare the candidate with the active model, promote it, roll back. Writes need an admin key once
keys are required (api/auth.py). The same functions serve `vidclass retrain` and `vidclass models`.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.errors import ApiError
from api.store import get_session
from db.models import Job, ModelVersion, utcnow

bp = Blueprint("models", __name__, url_prefix="/api/models")


def active_version(session) -> ModelVersion | None:
    return session.execute(select(ModelVersion).where(ModelVersion.status == "active")).scalar_one_or_none()


MAX_ID = 2**31 - 1       # the column is a 32-bit integer: larger numbers are no version


def load_version(session, model_id) -> ModelVersion:
    try:
        number = int(model_id)
    except (TypeError, ValueError):
        number = None
    row = session.get(ModelVersion, number) if number is not None and 1 <= number <= MAX_ID else None
    if row is None:
        raise ApiError(404, "model_not_found", f"no model version {model_id!r} (`vidclass models list`)")
    return row


def usable_corrections(session, pipeline_version: str | None) -> int:
    """How many corrections a retrain from a model with this feature pipeline learns from."""
    from worker.retrain import learnable_corrections

    return session.execute(select(func.count()).select_from(
        learnable_corrections(pipeline_version).with_only_columns(Job.id).order_by(None).subquery())).scalar()


def queue_retrain(session, celery_app, note: str | None = None) -> ModelVersion:
    """Insert a `training` version (the database allows one at a time) and publish its id."""
    from worker.celery_app import RETRAIN_MODEL, TRAIN_QUEUE

    active = active_version(session)
    if active is None:
        raise ApiError(409, "no_active_model", "no model version is active yet: a classification worker "
                                               "records the shipped model as version 1 when it starts")
    if not usable_corrections(session, active.pipeline_version):
        raise ApiError(409, "no_corrections", "no corrections to learn from: correct finished results first "
                                              "(PUT /api/jobs/<id>/label; test-set clips and jobs without "
                                              "stored features do not count)")
    row = ModelVersion(status="training", parent_id=active.id, created_at=utcnow(), heartbeat_at=utcnow(),
                       pipeline_version=active.pipeline_version, progress=0, note=note)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        running = session.execute(select(ModelVersion.id).where(ModelVersion.status == "training")).scalar()
        if running is None:
            raise
        raise ApiError(409, "retrain_running", f"model version {running} is training; one retrain runs at a time",
                       model_id=running) from None
    try:
        celery_app.send_task(RETRAIN_MODEL, args=[row.id], queue=TRAIN_QUEUE)
    except Exception as exc:
        row.status, row.error_message, row.finished_at = "failed", f"could not queue the retrain: {exc}", utcnow()
        session.commit()
        raise ApiError(503, "queue_unavailable", "the queue (Redis) is unreachable; nothing was started") from None
    return row


def promote(session, model_id, force: bool = False) -> ModelVersion:
    """Make a candidate the active version (the previous one retired, remembered for rollback).
    Refused when it is worse than the active one on the corpus's family folds by more than
    PROMOTE_MARGIN, unless forced."""
    row = load_version(session, model_id)
    if row.status != "candidate":
        raise ApiError(409, "not_a_candidate", f"model version {row.id} is {row.status}: only a candidate can be "
                                               f"promoted" + (" (`vidclass models rollback` returns to the "
                                                              "version before the active one)"
                                                              if row.status == "retired" else ""))
    gate = (row.metrics or {}).get("gate") or {}
    if not force and gate and not gate.get("passes"):
        raise ApiError(409, "worse_than_active",
                       f"model version {row.id} scores {gate['candidate_accuracy']:.1%} on the corpus's family folds, "
                       f"the active model {gate['active_accuracy']:.1%}: more than {gate['margin']:.1%} worse "
                       f"(PROMOTE_MARGIN); promote with force to override")
    active = active_version(session)
    _switch(session, active, row)
    return row


def rollback(session) -> ModelVersion:
    """Back to the version the active one replaced."""
    active = active_version(session)
    if active is None or active.replaced_id is None:
        raise ApiError(409, "nothing_to_roll_back", "the active model version replaced none: there is no "
                                                    "earlier version to return to")
    previous = load_version(session, active.replaced_id)
    _switch(session, active, previous, remember=False)
    return previous


def _switch(session, active: ModelVersion | None, new: ModelVersion, remember: bool = True) -> None:
    if active is not None:
        active.status = "retired"
        session.flush()                  # one active at a time (a unique index): retire first
    new.status, new.promoted_at = "active", utcnow()
    if remember:
        new.replaced_id = active.id if active is not None else None
    session.commit()


@bp.get("")
def list_versions():
    session = get_session()
    rows = session.execute(select(ModelVersion).order_by(ModelVersion.id.desc()).limit(200)).scalars().all()
    active = next((r for r in rows if r.status == "active"), None) or active_version(session)
    return jsonify({"models": [_summary(r) for r in rows], "active_id": active.id if active else None,
                    "corrections": usable_corrections(session, active.pipeline_version) if active else 0,
                    "promote_margin": current_app.config["PROMOTE_MARGIN"]})


def _summary(row: ModelVersion) -> dict:
    """A version without its flip lists (GET /api/models/<id> has everything)."""
    out = row.to_dict(full=False)
    metrics = row.metrics or {}
    out["gate"] = metrics.get("gate")
    out["corrections_held_out"] = {k: (metrics.get("corrections") or {}).get(k, {}).get("accuracy")
                                   for k in ("active", "candidate")} if metrics.get("corrections") else None
    out["flips"] = {k: len(v) for k, v in (metrics.get("flips") or {}).items()} or None
    return out


@bp.get("/<int:model_id>")
def get_version(model_id):
    return jsonify(load_version(get_session(), model_id).to_dict())


@bp.post("")
def create_version():
    from api.store import celery
    from api.submit import json_body

    body = json_body() if request.is_json else {}
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        raise ApiError(400, "bad_note", "note must be a string", field="note")
    row = queue_retrain(get_session(), celery(), note[:500] if note else None)
    return jsonify(row.to_dict()), 202, {"Location": f"/api/models/{row.id}"}


@bp.post("/<int:model_id>/promote")
def promote_version(model_id):
    from api.submit import json_body

    body = json_body() if request.is_json else {}
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise ApiError(400, "bad_force", "force must be true or false", field="force")
    return jsonify(promote(get_session(), model_id, force).to_dict())


@bp.post("/rollback")
def rollback_version():
    return jsonify(rollback(get_session()).to_dict())
