"""The retrain task: a candidate model version from the corpus's clip vectors and users' corrections.

The API (or `vidclass retrain`) inserts a `training` row in the models table and publishes its id
to the `train` queue. Here the corrections are gathered from the database (done jobs with a true
label and stored clip features made by the active model's feature pipeline), and
`python -m vidclass.training.retrain` fits and evaluates in a child process, so that no
classification process imports torch or keeps its memory. The row shows progress and ends
`candidate` (with its evaluation beside the active model's) or `failed` (with why).
Idempotent: a redelivered message for a row that is no longer `training` does nothing.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from sqlalchemy import select, update

from db import session as db_session
from db import settings
from db.models import Job, ModelVersion, utcnow
from vidclass import CLASS_NAMES
from worker import celery_app as names
from worker.celery_app import app
from worker.model_versions import pipeline_version, store_dir

log = logging.getLogger(__name__)


def correction_group(job: Job) -> str:
    """The source group a correction counts in: a URL's site, or the day of single uploads. One
    site's or one day's corrections weigh together like one corpus family."""
    if job.source_kind == "url":
        return "site:" + (urlsplit(job.source).hostname or "unknown")
    return f"uploads:{job.created_at:%Y-%m-%d}"


def learnable_corrections(features_pipeline: str | None):
    """SELECT of the corrected jobs a model with this feature pipeline can learn from. Test-set
    names are left out: their clips are in the corpus already, with their own labels."""
    return (select(Job).where(Job.true_label.is_not(None), Job.status == "done", Job.clip_features.is_not(None),
                              Job.features_pipeline == features_pipeline, Job.source_kind != "test-set")
            .order_by(Job.labelled_at, Job.id))


def corpus_vectors_path() -> Path:
    from vidclass import paths
    from vidclass.training.retrain import CORPUS_POOLED

    return paths.features_dir() / CORPUS_POOLED


def _set(model_id: int, **values) -> None:
    with db_session.session_scope() as s:
        s.execute(update(ModelVersion).where(ModelVersion.id == model_id).values(**values))


@app.task(name=names.RETRAIN_MODEL, ignore_result=True)
def retrain_model(model_id: int) -> None:
    with db_session.session_scope() as s:
        row = s.get(ModelVersion, model_id)
        if row is None or row.status != "training":
            return
        parent = s.get(ModelVersion, row.parent_id) if row.parent_id else None
    try:
        _retrain(model_id, parent)
    except Exception as exc:
        log.exception("retrain of model version %s failed", model_id)
        _set(model_id, status="failed", error_message=str(exc)[:2000] or type(exc).__name__, finished_at=utcnow())


def _retrain(model_id: int, parent: ModelVersion | None) -> None:
    from vidclass.model.ensemble import folder_digest
    from vidclass.training.retrain import load_corpus_pooled

    if parent is None:
        raise RuntimeError("no active model version to start from (a worker records version 1 when it loads)")
    corpus_path = corpus_vectors_path()
    if not corpus_path.is_file():
        raise RuntimeError(f"the corpus's clip vectors are missing ({corpus_path.name} in the features folder): "
                           f"run `vidclass pool-corpus` (or `make model`)")
    corpus = load_corpus_pooled(corpus_path)
    if pipeline_version(corpus.pipeline) != parent.pipeline_version:
        raise RuntimeError(f"the corpus's clip vectors were made by feature pipeline {pipeline_version(corpus.pipeline)}, "
                           f"the active model reads {parent.pipeline_version}: re-run `vidclass pool-corpus`")
    in_parent = set((parent.training or {}).get("correction_job_ids") or [])
    with db_session.session_scope() as s:
        jobs = s.execute(learnable_corrections(parent.pipeline_version)).scalars().all()
        rows = [(j.id, np.frombuffer(j.clip_features, dtype=np.float16), j.true_label, correction_group(j))
                for j in jobs]
    if not rows:
        raise RuntimeError("no corrections to learn from: correct some results first (PUT /api/jobs/<id>/label)")

    out_dir = store_dir() / f"v{model_id}"
    with tempfile.TemporaryDirectory(prefix="vidclass-retrain-") as tmp:
        corrections = Path(tmp) / "corrections.npz"
        np.savez(corrections, x=np.stack([r[1] for r in rows]), labels=np.array([CLASS_NAMES.index(r[2]) for r in rows]),
                 groups=np.array([r[3] for r in rows]), job_ids=np.array([r[0] for r in rows]),
                 in_active=np.array([r[0] in in_parent for r in rows]))
        result_path = Path(tmp) / "result.json"
        _run_fit(model_id, corpus_path, corrections, out_dir, result_path)
        result = json.loads(result_path.read_text())
    evaluation = result["evaluation"]
    margin = float(settings.get("PROMOTE_MARGIN"))
    active_acc, candidate_acc = (evaluation["corpus"][k]["accuracy"] for k in ("active", "candidate"))
    gate = {"margin": margin, "active_accuracy": active_acc, "candidate_accuracy": candidate_acc,
            "passes": candidate_acc >= active_acc - margin}
    training = {**result["training"], "correction_job_ids": [r[0] for r in rows],
                "source": f"retrained from version {parent.id} with users' corrections"}
    _set(model_id, status="candidate", digest=folder_digest(out_dir), path=str(out_dir), progress=100,
         pipeline_version=parent.pipeline_version, training=training,
         metrics={**evaluation, "gate": gate, "thresholds": result["thresholds"]}, finished_at=utcnow(),
         heartbeat_at=utcnow())
    log.info("model version %s: candidate (corpus folds %.3f vs active %.3f)", model_id, candidate_acc, active_acc)


def _run_fit(model_id: int, corpus: Path, corrections: Path, out_dir: Path, result: Path) -> None:
    """`python -m vidclass.training.retrain` in a child process, its progress lines into the row."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "vidclass.training.retrain", "--corpus", str(corpus), "--corrections",
           str(corrections), "--out", str(out_dir), "--result", str(result)]
    with tempfile.TemporaryFile("w+") as errors:      # a file, not a pipe: it never fills and blocks
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        for line in proc.stdout:
            if line.startswith("progress "):
                _set(model_id, progress=min(99, int(5 + 94 * float(line.split()[1]))), heartbeat_at=utcnow())
        if proc.wait() != 0:
            errors.seek(0)
            last = [ln for ln in errors.read().strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise RuntimeError(f"fitting failed: {last[0][:500]}")
