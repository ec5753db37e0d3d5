"""What the web UI and API users hit (issue 11): exports, bulk lists, filters, corrections, batches.

Real Redis and real databases (SQLite, and PostgreSQL in a fresh schema when reachable), the
Flask app in process as in test_api.py; no workers: job results are written to the database as a
worker would write them."""
import csv
import io
import json
from datetime import timedelta

import pytest

import servicekit as kit


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request, redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"api-ui-{request.param}")
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'api.db'}"
    else:
        pg = kit.postgres_schema_url()
        if pg is None:
            pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
        url, schema = pg
    env = kit.service_env(tmp, redis_url, url, tmp / "models", tmp / "features")
    with kit.environ(env):
        from api import create_app
        from db import session

        session.upgrade(url)
        app = create_app({"TESTING": True})
        yield {"client": app.test_client(), "env": env, "url": url, "app": app, "tmp": tmp}
        import redis
        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(env["REDIS_PREFIX"] + "*"))
        if keys:
            r.delete(*keys)
    if schema:
        kit.drop_postgres_schema(schema)


def add_jobs(api, specs, tag, batch_id=None):
    """Rows as a worker leaves them: specs are (status, label, confidence) tuples."""
    from db import session
    from db.models import Job, new_id, utcnow

    now = utcnow()
    rows = [Job(id=new_id(), batch_id=batch_id, source_kind="url",
                source=f"https://h.example/{tag}/{i}.mp4", status=status, progress=100 if status == "done" else 0,
                attempts=1, label=label, confidence=conf, thumbnails_count=0,
                probabilities=({"Animation": 0.1, "Flat_Content": 0.2, "Gaming": 0.3, "Natural_Content": 0.4}
                               if label else None),
                subcategory="platformer_2d" if label else None, subcategory_confidence=0.55 if label else None,
                stage_timings={"download_s": 1.5, "features_s": 2.25, "total_s": 4.0, "features_cached": True},
                created_at=now - timedelta(seconds=i)) for i, (status, label, conf) in enumerate(specs)]
    with session.session_scope(api["url"]) as s:
        s.add_all(rows)
    return [r.id for r in rows]


def test_json_export_streams_every_match_as_an_attachment(api):
    c = api["client"]
    tag = "jx" + kit.uuid.uuid4().hex[:8]
    ids = add_jobs(api, [("done", "Gaming", 0.5 + i / 1000) for i in range(120)] + [("failed", None, None)], tag)
    page = c.get(f"/api/jobs?q={tag}&status=done").get_json()
    assert page["total"] == 120 and len(page["jobs"]) == 50          # the page is a page ...
    r = c.get(f"/api/jobs?q={tag}&status=done&sort=confidence&order=asc&format=json&download=1")
    assert r.status_code == 200 and r.is_streamed                      # ... the export is all of it
    assert r.headers["Content-Disposition"] == "attachment; filename=vidclass-jobs.json"
    exported = json.loads(r.data)
    assert exported["total"] == 120 and [j["id"] for j in exported["jobs"]] == ids[:120]
    assert exported["jobs"][0] == c.get(f"/api/jobs/{ids[0]}").get_json()
    empty = json.loads(c.get("/api/jobs?q=nothing-matches-this&download=1").data)
    assert empty == {"jobs": [], "total": 0}


def test_csv_has_a_column_per_probability_and_stage(api):
    c = api["client"]
    tag = "cx" + kit.uuid.uuid4().hex[:8]
    done, failed = add_jobs(api, [("done", "Gaming", 0.75), ("failed", None, None)], tag)
    r = c.get(f"/api/jobs?q={tag}&format=csv")
    assert r.headers["Content-Disposition"] == "attachment; filename=vidclass-jobs.csv"
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(r.data.decode()))}
    row = rows[done]
    assert (row["p_Animation"], row["p_Flat_Content"], row["p_Gaming"], row["p_Natural_Content"]) == \
        ("0.1", "0.2", "0.3", "0.4")
    assert row["subcategory_confidence"] == "0.55" and row["subcategory"] == "platformer_2d"
    assert row["download_s"] == "1.5" and row["features_s"] == "2.25" and row["total_s"] == "4.0"
    assert row["classify_s"] == "" and "probabilities" not in row and "stage_timings" not in row
    assert not any(v.startswith(("{", "[")) for r_ in rows.values() for v in r_.values())
    assert rows[failed]["p_Gaming"] == "" and rows[failed]["label"] == ""


@pytest.mark.parametrize("qs, ok", [
    ("label=gaming", True), ("label=GAMING,flat_content", True), ("label=Foo", False),
    ("label=Gaming,", True), ("min_confidence=0.9", True), ("min_confidence=90", False),
    ("min_confidence=-0.1", False), ("min_confidence=1", True), ("corrected=maybe", False),
])
def test_label_and_confidence_filters_are_checked(api, qs, ok):
    r = api["client"].get(f"/api/jobs?{qs}")
    if ok:
        assert r.status_code == 200
    else:
        assert r.status_code == 400 and r.get_json()["code"] == "bad_filter"
        assert r.get_json()["field"] == qs.split("=")[0]


def test_unknown_history_parameters_are_refused(api):
    """A misspelt filter (`lable=`) must not silently return every job."""
    c = api["client"]
    for qs in ("lable=Gaming", "format=csv&stauts=done", "download=1&x=1"):
        r = c.get(f"/api/jobs?{qs}")
        assert r.status_code == 400 and r.get_json()["code"] == "unknown_parameter", qs
    tag = "sx" + kit.uuid.uuid4().hex[:8]
    labelled, _ = add_jobs(api, [("done", "Gaming", 0.8), ("queued", None, None)], tag)
    assert {j["id"] for j in c.get(f"/api/jobs?q={tag}&subcategory=racing,platformer_2d").get_json()["jobs"]} == {labelled}
    assert c.get(f"/api/jobs?q={tag}&subcategory=racing").get_json()["jobs"] == []
    from db import session
    from db.models import Job
    with session.session_scope(api["url"]) as s:
        s.get(Job, labelled).segments = [{"start": 0, "end": 5, "label": "Gaming"},
                                         {"start": 5, "end": 9, "label": "Natural_Content"}]
    found = c.get(f"/api/jobs?q={tag}&segment_label=natural_content").get_json()["jobs"]
    assert [j["id"] for j in found] == [labelled]
    assert c.get(f"/api/jobs?q={tag}&segment_label=Animation").get_json()["jobs"] == []
    assert c.get("/api/jobs?segment_label=Foo").get_json()["code"] == "bad_filter"


def test_review_sort_lists_the_results_most_worth_a_correction_first(api):
    from db import session
    from db.models import Job, review_priority

    c = api["client"]
    tag = "rv" + kit.uuid.uuid4().hex[:8]
    sure, unsure, mixed, queued = add_jobs(api, [("done", "Gaming", 0.97), ("done", "Flat_Content", 0.45),
                                                 ("done", "mixed", None), ("queued", None, None)], tag)
    results = {sure: {"confidence": 0.97, "agreement": 1.0}, unsure: {"confidence": 0.45, "uncertain": True,
               "agreement": 0.5}, mixed: {"confidence": None, "mixed": True, "agreement": 0.75}}
    with session.session_scope(api["url"]) as s:
        for job_id, result in results.items():
            s.get(Job, job_id).review_score = review_priority(result)
    assert review_priority(results[unsure]) > review_priority(results[mixed]) > review_priority(results[sure])
    page = c.get(f"/api/jobs?q={tag}&sort=review&order=desc&per_page=2").get_json()
    assert [j["id"] for j in page["jobs"]] == [unsure, mixed]
    rest = c.get(f"/api/jobs?q={tag}&sort=review&order=desc&per_page=2&cursor={page['next_cursor']}").get_json()
    assert [j["id"] for j in rest["jobs"]] == [sure, queued]            # not yet scored: last


def test_label_filter_ignores_case(api):
    c = api["client"]
    tag = "lx" + kit.uuid.uuid4().hex[:8]
    gaming, flat, _ = add_jobs(api, [("done", "Gaming", 0.6), ("done", "Flat_Content", 0.95),
                                     ("done", "Animation", 0.7)], tag)
    assert {j["id"] for j in c.get(f"/api/jobs?q={tag}&label=gaming").get_json()["jobs"]} == {gaming}
    both = c.get(f"/api/jobs?q={tag}&label=GAMING,flat_content").get_json()["jobs"]
    assert {j["id"] for j in both} == {gaming, flat}
    assert {j["id"] for j in c.get(f"/api/jobs?q={tag}&min_confidence=0.9").get_json()["jobs"]} == {flat}


def test_pasted_and_uploaded_lists_share_one_parser_with_the_users_line_numbers(api):
    c = api["client"]
    text = ("# my list\n"
            "https://example.org/1.mp4\n"
            "\n"
            "   # indented comment\n"
            "not a url\n"
            "https://example.org/2.mp4\n"
            "https://example.org/1.mp4\n")
    pasted = c.post("/api/batches", json={"text": text})
    uploaded = c.post("/api/batches", data={"file": (io.BytesIO(text.encode()), "list.txt")},
                      content_type="multipart/form-data")
    for r in (pasted, uploaded):
        assert r.status_code == 202, r.get_json()
        batch = r.get_json()
        assert batch["total"] == 2
        assert [(e["line"], e["code"]) for e in batch["invalid_lines"]] == [(5, "bad_url"), (7, "duplicate_url")]
        assert batch["invalid_lines"][0]["message"].startswith("not a URL: 'not a url'")
        assert r.headers["Location"] == f"/api/batches/{batch['id']}"
    # CSV: comments before the header, the `url` column, numbers of the file's own lines.
    table = "# exported\nname,url\na,https://example.org/a.mp4\n# skip\nb,nope\n"
    r = c.post("/api/batches", data={"file": (io.BytesIO(table.encode()), "l.csv")},
               content_type="multipart/form-data").get_json()
    assert r["total"] == 1 and [(e["line"], e["value"]) for e in r["invalid_lines"]] == [(5, "nope")]
    only_comments = c.post("/api/batches", json={"text": "# nothing\n\n"})
    assert only_comments.status_code == 422 and only_comments.get_json()["code"] == "no_valid_urls"


def test_location_headers_on_202(api):
    c = api["client"]
    r = c.post("/api/jobs", json={"url": "https://example.org/loc.mp4"})
    assert r.status_code == 202 and r.headers["Location"] == f"/api/jobs/{r.get_json()['id']}"
    assert c.get(r.headers["Location"]).get_json()["id"] == r.get_json()["id"]
    job_id = r.get_json()["id"]
    c.post(f"/api/jobs/{job_id}/cancel")
    r = c.post(f"/api/jobs/{job_id}/retry")
    assert r.status_code == 202 and r.headers["Location"] == f"/api/jobs/{job_id}"


def test_correcting_a_label_and_filtering_on_corrections(api):
    c = api["client"]
    tag = "tx" + kit.uuid.uuid4().hex[:8]
    right, wrong, untouched = add_jobs(api, [("done", "Gaming", 0.8), ("done", "Animation", 0.6),
                                             ("done", "Gaming", 0.7)], tag)
    r = c.put(f"/api/jobs/{right}/label", json={"label": "gaming"})
    assert r.status_code == 200 and r.get_json()["true_label"] == "Gaming" and r.get_json()["labelled_at"]
    r = c.put(f"/api/jobs/{wrong}/label", json={"label": "Natural_Content"})
    assert r.get_json()["true_label"] == "Natural_Content" and r.get_json()["label"] == "Animation"
    ids = lambda qs: {j["id"] for j in c.get(f"/api/jobs?q={tag}&{qs}").get_json()["jobs"]}  # noqa: E731
    assert ids("corrected=1") == {right, wrong} and ids("corrected=0") == {untouched}
    assert ids("disagrees=1") == {wrong} and ids("disagrees=0") == {right}
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(c.get(f"/api/jobs?q={tag}&format=csv").data.decode()))}
    assert rows[wrong]["true_label"] == "Natural_Content" and rows[untouched]["true_label"] == ""
    r = c.put(f"/api/jobs/{wrong}/label", json={"label": None})
    assert r.get_json()["true_label"] is None and r.get_json()["labelled_at"] is None
    assert ids("corrected=1") == {right}
    for body, code in (({"label": "Cats"}, "bad_label"), ({"label": 3}, "bad_label"), ({}, "missing_label"),
                       ({"label": "Gaming,Animation"}, "bad_label")):
        r = c.put(f"/api/jobs/{right}/label", json=body)
        assert r.status_code == 400 and r.get_json()["code"] == code, (body, r.get_json())
    assert c.put("/api/jobs/nope/label", json={"label": "Gaming"}).status_code == 404


def test_corrections_and_exports_need_a_key_when_keys_are_on(api):
    from api import auth
    from db import session
    from db.models import ApiKey

    c = api["client"]
    (job,) = add_jobs(api, [("done", "Gaming", 0.8)], "kx" + kit.uuid.uuid4().hex[:8])
    with session.session_scope(api["url"]) as s:
        key, token = auth.create_key(s, "ui-test")
        key_id = key.id
    try:
        r = c.put(f"/api/jobs/{job}/label", json={"label": "Animation"})
        assert r.status_code == 401 and r.get_json()["code"] == "api_key_required"
        assert c.get("/api/jobs?download=1").status_code == 401
        assert c.get("/api/jobs").status_code == 401                  # reads too, once keys are on
        auth_header = {"Authorization": f"Bearer {token}"}
        assert c.get("/api/jobs", headers=auth_header).status_code == 200
        r = c.put(f"/api/jobs/{job}/label", json={"label": "Animation"}, headers=auth_header)
        assert r.status_code == 200 and r.get_json()["true_label"] == "Animation"
        assert c.get("/api/jobs?download=1&per_page=1", headers=auth_header).status_code == 200
    finally:
        with session.session_scope(api["url"]) as s:
            s.delete(s.get(ApiKey, key_id))


def test_batches_are_listed_with_progress_and_can_be_cancelled_and_retried(api):
    import redis

    c, env = api["client"], api["env"]
    urls = [f"https://example.org/b{i}.mp4" for i in range(4)]
    batch = c.post("/api/batches", json={"urls": urls, "name": "four"}).get_json()
    from db import session
    from db.models import Job
    with session.session_scope(api["url"]) as s:
        jobs = s.query(Job).filter(Job.batch_id == batch["id"]).order_by(Job.source).all()
        jobs[0].status, jobs[0].label, jobs[0].progress = "done", "Gaming", 100
        jobs[1].status, jobs[1].error_code = "failed", "not_found"
        jobs[2].status, jobs[2].progress = "downloading", 30
        ids = [j.id for j in jobs]
    listed = c.get("/api/batches?per_page=5").get_json()
    assert listed["total"] >= 1
    mine = next(b for b in listed["batches"] if b["id"] == batch["id"])
    assert mine["status_counts"] == {"done": 1, "failed": 1, "downloading": 1, "queued": 1}
    assert mine["label_counts"] == {"Gaming": 1} and mine["finished"] == 2 and not mine["done"]
    assert mine["progress"] == round((200 + 30) / 4, 2) and mine["name"] == "four"
    assert listed["batches"][0]["created_at"] >= listed["batches"][-1]["created_at"]
    assert c.get(f"/api/batches/{batch['id']}").get_json()["status_counts"] == mine["status_counts"]

    r = c.post(f"/api/batches/{batch['id']}/cancel")
    assert r.status_code == 200 and r.get_json()["cancelled"] == 2
    state = r.get_json()
    assert state["status_counts"] == {"done": 1, "failed": 1, "cancelled": 2} and state["done"]
    statuses = {j["id"]: j["status"] for j in c.get(f"/api/jobs?batch={batch['id']}").get_json()["jobs"]}
    assert [statuses[i] for i in ids] == ["done", "failed", "cancelled", "cancelled"]

    queue_key = env["REDIS_PREFIX"] + "download"          # a retried URL job is downloaded again
    before = redis.Redis.from_url(env["REDIS_URL"]).lrange(queue_key, 0, -1)
    r = c.post(f"/api/batches/{batch['id']}/retry")
    assert r.status_code == 202 and r.get_json()["retried"] == 1
    assert r.get_json()["status_counts"] == {"done": 1, "queued": 1, "cancelled": 2}
    after = redis.Redis.from_url(env["REDIS_URL"]).lrange(queue_key, 0, -1)
    assert sum(ids[1] in m.decode() for m in after) == sum(ids[1] in m.decode() for m in before) + 1
    assert c.get(f"/api/jobs/{ids[1]}").get_json()["error"] is None
    assert c.post("/api/batches/nope/cancel").status_code == 404
    assert c.get("/api/batches?per_page=0").status_code == 400


def test_dashboard_reports_queues_running_jobs_throughput_and_stage_medians(api):
    import redis

    from db import session
    from db.models import Job, new_id, utcnow

    c, env = api["client"], api["env"]
    r = redis.Redis.from_url(env["REDIS_URL"])
    before = c.get("/api/dashboard").get_json()
    batch = c.post("/api/batches", json={"urls": [f"https://example.org/d{i}.mp4" for i in range(3)]}).get_json()
    now = utcnow()
    running_id = new_id()
    rows = [Job(id=running_id, batch_id=None, source_kind="url", source="https://example.org/run.mp4",
                status="downloading", progress=20, attempts=1, thumbnails_count=0, worker="host:123",
                created_at=now, started_at=now - timedelta(seconds=5))]
    for i, (minutes_ago, total) in enumerate([(1, 2.0), (1, 4.0), (30, 6.0), (90, 100.0)]):
        rows.append(Job(id=new_id(), source_kind="url", source=f"https://example.org/f{i}.mp4", status="done",
                        progress=100, attempts=1, thumbnails_count=0, label="Gaming", confidence=0.5,
                        created_at=now - timedelta(minutes=minutes_ago, seconds=30),
                        finished_at=now - timedelta(minutes=minutes_ago, seconds=-1),
                        stage_timings={"download_s": total / 2, "total_s": total}))
    with session.session_scope(api["url"]) as s:
        s.add_all(rows)
    d = c.get("/api/dashboard").get_json()
    prefix = env["REDIS_PREFIX"]
    # A batch's URL jobs wait in the download queue; every queue a worker may serve is listed.
    assert d["queues"]["download"] == r.llen(prefix + "download") == before["queues"]["download"] + 3
    assert set(d["queues"]) == {"download", "classify", "fast", "train", "jobs"} and d["queue_ok"]
    assert [j["id"] for j in d["running"] if j["id"] == running_id] == [running_id]
    assert next(j for j in d["running"] if j["id"] == running_id)["worker"] == "host:123"
    # The last hour: three jobs (two a minute ago, one half an hour ago); the 90-minute-old one is out.
    per_minute = d["throughput"]["per_minute"]
    assert len(per_minute) == 60 and d["throughput"]["last_hour"] - before["throughput"]["last_hour"] == 3
    assert per_minute[58] + per_minute[59] - before["throughput"]["per_minute"][58] \
        - before["throughput"]["per_minute"][59] >= 2
    assert d["stage_medians_s"]["total_s"] > 0 and "download_s" in d["stage_medians_s"]
    mine = next(b for b in d["batches"] if b["id"] == batch["id"])
    assert mine["remaining"] == 3
    assert mine["eta_s"] == round(3 * d["stage_medians_s"]["total_s"] / d["eta_parallel_jobs"], 1)


def test_model_versions_refuse_bad_requests_with_clear_errors(api):
    """Corrections, retrains, promotions and rollbacks that cannot be done: each a stable code and
    nothing changed (issue 21); key scopes."""
    from api import auth
    from db import session
    from db.models import Job, ModelVersion, utcnow

    c = api["client"]
    tag = "mv" + kit.uuid.uuid4().hex[:8]
    failed, plain, learnable = add_jobs(api, [("failed", None, None), ("done", "Gaming", 0.6), ("done", "Gaming", 0.7)], tag)
    r = c.put(f"/api/jobs/{failed}/label", json={"label": "Gaming"})
    assert r.status_code == 409 and r.get_json()["code"] == "job_not_done"
    r = c.put(f"/api/jobs/{plain}/label", json={"label": "Animation"})     # kept, but says it cannot teach
    assert r.status_code == 200 and r.get_json()["learnable"] is False and "features" in r.get_json()["learnable_reason"]

    r = c.post("/api/models")
    assert r.status_code == 409 and r.get_json()["code"] == "no_active_model"
    with session.session_scope(api["url"]) as s:
        shipped = ModelVersion(status="active", digest="d1", pipeline_version="p1", progress=100)
        s.add(shipped)
        s.flush()
        v1 = shipped.id
    r = c.post("/api/models")
    assert r.status_code == 409 and r.get_json()["code"] == "no_corrections"
    with session.session_scope(api["url"]) as s:
        job = s.get(Job, learnable)
        job.clip_features, job.features_pipeline = b"\0" * 8, "p1"
    r = c.put(f"/api/jobs/{learnable}/label", json={"label": "Animation"})
    assert r.get_json()["learnable"] is True and r.get_json()["learnable_reason"] is None
    r = c.post("/api/models", json={"note": "first"})
    assert r.status_code == 202 and r.get_json()["status"] == "training" and r.get_json()["parent_id"] == v1
    training_id = r.get_json()["id"]
    assert r.headers["Location"] == f"/api/models/{training_id}"
    r = c.post("/api/models")                                                  # one retrain at a time
    assert r.status_code == 409 and r.get_json()["code"] == "retrain_running"

    assert c.post("/api/models/999/promote").get_json()["code"] == "model_not_found"
    assert c.post(f"/api/models/{training_id}/promote").get_json()["code"] == "not_a_candidate"
    assert c.post("/api/models/rollback").get_json()["code"] == "nothing_to_roll_back"
    with session.session_scope(api["url"]) as s:
        worse = ModelVersion(status="candidate", digest="d3", parent_id=v1, pipeline_version="p1", progress=100,
                             finished_at=utcnow(), metrics={"gate": {"margin": 0.01, "active_accuracy": 0.8,
                                                                     "candidate_accuracy": 0.7, "passes": False}})
        retired = ModelVersion(status="retired", digest="d4", parent_id=v1, pipeline_version="p1")
        s.add_all([worse, retired])
        s.flush()
        worse_id, retired_id = worse.id, retired.id
    assert c.post(f"/api/models/{retired_id}/promote").get_json()["code"] == "not_a_candidate"
    r = c.post(f"/api/models/{worse_id}/promote")
    assert r.status_code == 409 and r.get_json()["code"] == "worse_than_active"
    assert c.get("/api/models").get_json()["active_id"] == v1                 # nothing changed
    r = c.post(f"/api/models/{worse_id}/promote", json={"force": True})
    assert r.status_code == 200 and r.get_json()["status"] == "active" and r.get_json()["replaced_id"] == v1
    listing = c.get("/api/models").get_json()
    assert listing["active_id"] == worse_id and {m["id"]: m["status"] for m in listing["models"]}[v1] == "retired"
    assert c.post("/api/models/rollback").get_json()["id"] == v1
    assert c.get("/api/models").get_json()["active_id"] == v1
    assert c.get(f"/api/models/{worse_id}").get_json()["status"] == "retired"

    # Key scopes: read keys read, write keys also write, only admin keys touch models.
    with session.session_scope(api["url"]) as s:
        keys = {scope: auth.create_key(s, f"scope-{scope}", scope) for scope in ("read", "write", "admin")}
        ids = [k.id for k, _ in keys.values()]
    bearer = {scope: {"Authorization": f"Bearer {token}"} for scope, (_, token) in keys.items()}
    try:
        assert c.get("/api/jobs", headers=bearer["read"]).status_code == 200
        assert c.get("/api/jobs?format=csv", headers=bearer["read"]).status_code == 200
        r = c.put(f"/api/jobs/{plain}/label", json={"label": "Gaming"}, headers=bearer["read"])
        assert r.status_code == 403 and r.get_json()["code"] == "insufficient_scope"
        assert c.put(f"/api/jobs/{plain}/label", json={"label": "Gaming"}, headers=bearer["write"]).status_code == 200
        r = c.post("/api/models/rollback", headers=bearer["write"])
        assert r.status_code == 403 and r.get_json()["code"] == "insufficient_scope"
        assert c.post("/api/models/rollback", headers=bearer["admin"]).get_json()["code"] == "nothing_to_roll_back"
    finally:
        with session.session_scope(api["url"]) as s:
            for key_id in ids:
                s.get(auth.ApiKey, key_id).revoked_at = utcnow()
