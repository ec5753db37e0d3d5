"""Which model version the workers classify with, and switching to a promoted one without a restart.

Version 1 is the configured models folder (VIDCLASS_MODELS_DIR, the shipped model; its row's path
is ""): a worker records it when it first loads it. Later versions come from retraining
(worker/retrain.py) and live in MODEL_STORE_DIR/v<id>/. Before each task a worker reads the active version (one small
SELECT); when it is not the ensemble the process holds, it loads the active one, once per process.
A prefork pool process runs one task at a time, so a job already running finishes on the model
it started with, and records that model's digest (jobs.model_version).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db import session as db_session
from db import settings
from db.models import ModelVersion, utcnow

log = logging.getLogger(__name__)

_switch_lock = threading.Lock()


def pipeline_version(pipeline: dict) -> str:
    """The digest of a feature pipeline that jobs record (pipeline_version, features_pipeline)."""
    return hashlib.sha256(json.dumps(pipeline, sort_keys=True).encode()).hexdigest()[:12]


def store_dir() -> Path:
    return Path(settings.get("MODEL_STORE_DIR"))


def folder_of(version: ModelVersion) -> Path | None:
    """A version's models folder; None for the configured one (version 1, path "")."""
    return Path(version.path) if version.path else None


def record_shipped(ensemble) -> None:
    """Version 1 is the configured model: recorded (active when nothing else is) by the first
    worker that loads it; its digest follows the folder if an operator replaces the files."""
    digest, pipeline = ensemble.version, pipeline_version(ensemble.pipeline.to_dict())
    try:
        with db_session.session_scope() as s:
            first = s.execute(select(ModelVersion).where(ModelVersion.path == "")).scalar_one_or_none()
            if first is None:       # the table's first row: version 1 (path "" is unique)
                active = s.execute(select(ModelVersion).where(ModelVersion.status == "active")).scalar_one_or_none()
                s.add(ModelVersion(digest=digest, status="retired" if active else "active", path="",
                                   pipeline_version=pipeline, progress=100, finished_at=utcnow(),
                                   promoted_at=None if active else utcnow(),
                                   training={"source": "the configured models folder (shipped)"}))
            elif first.digest != digest:
                first.digest, first.pipeline_version = digest, pipeline
    except IntegrityError:      # another worker process recorded it at the same moment
        pass


def active_version() -> ModelVersion | None:
    with db_session.session_scope() as s:
        row = s.execute(select(ModelVersion).where(ModelVersion.status == "active")).scalar_one_or_none()
        if row is not None:
            s.expunge(row)
        return row


def use_active(classifier) -> bool:
    """Switch `classifier` to the active version when it holds another (called before each task);
    True when it switched."""
    try:
        active = active_version()
    except Exception as exc:         # the database briefly away: keep the model we have
        log.warning("could not read the active model version: %s", exc)
        return False
    if active is None or active.digest is None or classifier.ensemble.version == active.digest:
        return False
    from vidclass.model.ensemble import Ensemble

    with _switch_lock:
        if classifier.ensemble.version == active.digest:
            return False
        t = time.perf_counter()
        folder = folder_of(active)
        ensemble = Ensemble.load(folder, device=classifier.device) if folder else \
            Ensemble.load(classifier.models_dir, device=classifier.device)
        if ensemble.version != active.digest:
            log.error("model version %s: its files have digest %s, not %s; keeping %s", active.id,
                      ensemble.version, active.digest, classifier.ensemble.version)
            return False
        classifier.set_ensemble(ensemble)
        log.info("switched to model version %s (%s) in %.2f s", active.id, active.digest, time.perf_counter() - t)
        return True
