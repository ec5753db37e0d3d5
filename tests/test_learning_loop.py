"""The learning loop end to end (issue 21): corrections through the API become a retrained model,
which is evaluated, promoted (workers switch without a restart) and rolled back.

Real parts: Redis, Celery worker processes as `vidclass up` starts them (the retrain runs on the
`train` queue), SQLite, real clips of ../shared/corpus uploaded through the API. The family is
the one cross-validation by family scored worst (reports/crossval.json, written by `make model`:
each family predicted by a model trained without it), among those with at least 8 clips. Version
1 here is that situation made real: the shipped recipe fitted on the corpus without the family.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

import servicekit as kit
from vidclass import CLASS_NAMES

pytestmark = pytest.mark.slow

CORPUS = kit.REPO.parent / "shared" / "corpus"
MIN_CLIPS = 8


def worst_family() -> tuple[str, str, list[Path]]:
    """(class, family, clips) of the family cross-validation scored worst, ties by name."""
    per_source = json.loads((kit.REPO / "reports" / "crossval.json").read_text())["per_source"]
    with open(CORPUS / "MANIFEST.tsv") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["origin"] != "stills_motion"]
    clips: dict[str, list[Path]] = {}
    for r in rows:
        clips.setdefault(f"{r['category']}/{r['family']}", []).append(CORPUS / r["path"])
    name = min((k for k in per_source if len(clips.get(k, ())) >= MIN_CLIPS), key=lambda k: (per_source[k], k))
    cls, family = name.split("/", 1)
    return cls, family, sorted(clips[name])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip("../shared/corpus is not beside the checkout")
    from vidclass.training.retrain import CORPUS_POOLED, fit_members, load_corpus_pooled, save_model

    tmp = tmp_path_factory.mktemp("loop")
    cls, family, clips = worst_family()
    corpus = load_corpus_pooled(kit.REPO / "features_enhanced" / CORPUS_POOLED)
    without = corpus.data.take([i for i, f in enumerate(corpus.data.families) if f != family])
    # Version 1 and the corpus the retrain starts from: the family was never seen.
    models = fit_members(without, corpus.blocks, seed=42, num_subcategories=len(corpus.subcategory_names))
    corpus.data = without
    save_model(models, tmp / "models", corpus, {"uncertain_below": 0.72, "subcategory_min_confidence": 0.5},
               {"corpus_clips": len(without)})
    (tmp / "features").mkdir()
    import numpy as np

    with np.load(kit.REPO / "features_enhanced" / CORPUS_POOLED) as z:
        keep = z["families"] != family
        np.savez(tmp / "features" / CORPUS_POOLED, **{k: (z[k][keep] if z[k].ndim and len(z[k]) == len(keep) else z[k])
                                                        for k in z.files})
    return {"tmp": tmp, "class": cls, "family": family, "clips": clips}


@pytest.fixture(scope="module")
def service(setup, redis_url):
    tmp = setup["tmp"]
    url = f"sqlite:///{tmp / 'vidclass.db'}"
    env = kit.service_env(tmp, redis_url, url, tmp / "models", tmp / "features",
                          MODEL_STORE_DIR=str(tmp / "versions"))
    with kit.environ(env):
        from api import create_app
        from db import session

        session.upgrade(url)
        app = create_app({"TESTING": True})
        workers = kit.Workers.like_up(env, concurrency=1, log=tmp / "worker.log").start()
        try:
            yield {"client": app.test_client(), "url": url, "env": env}
        finally:
            workers.stop()


def upload(c, clip: Path) -> str:
    with open(clip, "rb") as f:
        r = c.post("/api/jobs", data={"file": (f, clip.name)}, content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    return r.get_json()["id"]


def wait_done(c, job_ids, timeout=300) -> list[dict]:
    def finished():
        jobs = [c.get(f"/api/jobs/{j}").get_json() for j in job_ids]
        return jobs if all(j["status"] in ("done", "failed", "cancelled") for j in jobs) else None
    jobs = kit.wait_for(finished, timeout, what="jobs to finish")
    assert all(j["status"] == "done" for j in jobs), [j.get("error") for j in jobs]
    return jobs


def classify(c, clips) -> list[dict]:
    return wait_done(c, [upload(c, clip) for clip in clips])


def test_corrections_retrain_promote_and_roll_back(setup, service):
    c, cls = service["client"], setup["class"]
    clips = setup["clips"]
    teach, check = clips[0::2], clips[1::2]

    before = classify(c, clips)
    v1 = c.get("/api/models").get_json()
    assert v1["active_id"] is not None and len(v1["models"]) == 1    # the worker recorded version 1
    v1_digest = v1["models"][0]["digest"]
    assert {j["model_version"] for j in before} == {v1_digest}
    right_before = [j["label"] == cls for j in before[1::2]]

    # Correct the taught half through the API (each corrected job keeps its clip vector).
    for job in before[0::2]:
        r = c.put(f"/api/jobs/{job['id']}/label", json={"label": cls})
        assert r.status_code == 200 and r.get_json()["learnable"], r.get_json()

    r = c.post("/api/models", json={"note": f"learn {setup['family']}"})
    assert r.status_code == 202, r.get_json()
    model_id = r.get_json()["id"]
    seen_progress = set()

    def trained():
        m = c.get(f"/api/models/{model_id}").get_json()
        seen_progress.add(m["progress"])
        return m if m["status"] != "training" else None
    candidate = kit.wait_for(trained, 600, interval=0.5, what="the retrain")
    assert candidate["status"] == "candidate", candidate["error"]
    assert candidate["training"]["corrections"] == len(teach) and candidate["training"]["correction_groups"] == 1
    metrics = candidate["metrics"]
    for side in ("active", "candidate"):
        assert 0 < metrics["corpus"][side]["accuracy"] <= 1 and set(metrics["corpus"][side]["recall"]) == set(CLASS_NAMES)
        assert metrics["corpus"][side]["ece"] is not None
    assert metrics["corrections"]["groups"] == 1 and "note" in metrics["corrections"]
    assert len(seen_progress) > 1        # progress showed while it trained

    # A job in flight during the promotion (a clip not seen yet: no cached features) finishes on
    # the model it started with, and records it.
    inflight = upload(c, kit.CLIPS[0])

    def extracting():
        job = c.get(f"/api/jobs/{inflight}").get_json()
        assert job["status"] != "done", "the job ended before the promotion could happen during it"
        return job["status"] in ("extracting", "classifying") and job["progress"] > 0
    kit.wait_for(extracting, 120, interval=0.02, what="the job to be extracting")
    if not metrics["gate"]["passes"]:     # worse on the corpus folds by more than the margin: refused
        r = c.post(f"/api/models/{model_id}/promote")
        assert r.status_code == 409 and r.get_json()["code"] == "worse_than_active"
    r = c.post(f"/api/models/{model_id}/promote", json={"force": not metrics["gate"]["passes"]})
    assert r.status_code == 200 and r.get_json()["status"] == "active", r.get_json()
    (finished,) = wait_done(c, [inflight])
    assert finished["model_version"] == v1_digest

    # The worker picked the promoted model up without a restart: the other clips of the family.
    after = classify(c, check)
    assert {j["model_version"] for j in after} == {candidate["digest"]}
    right_after = [j["label"] == cls for j in after]
    print(f"{setup['family']}: {sum(right_before)} of {len(check)} held-back clips right before, "
          f"{sum(right_after)} after; gate {metrics['gate']}")
    assert sum(right_after) > sum(right_before), (right_before, right_after)
    listing = c.get("/api/jobs?model_version=" + candidate["digest"]).get_json()
    assert {j["id"] for j in after} <= {j["id"] for j in listing["jobs"]}

    # Rollback: version 1 again, and its answers come back.
    r = c.post("/api/models/rollback")
    assert r.status_code == 200 and r.get_json()["digest"] == v1_digest
    again = classify(c, check)
    assert {j["model_version"] for j in again} == {v1_digest}
    assert [j["label"] for j in again] == [j["label"] for j in before[1::2]]
    for a, b in zip(again, before[1::2]):
        assert abs(a["confidence"] - b["confidence"]) < 1e-4
