"""Service commands as a user runs them: `vidclass api` on a fresh database, a busy port, and
`vidclass export-labels` (real processes, real SQLite databases and files)."""
import csv
import os
import shutil
import socket
import subprocess
import sys

import servicekit as kit


def _run(args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "vidclass.cli", *args], cwd=kit.REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_api_on_a_never_migrated_database_migrates_it_first(redis_url, tmp_path):
    db = tmp_path / "fresh.db"
    env = kit.service_env(tmp_path, redis_url, f"sqlite:///{db}", tmp_path / "m", tmp_path / "f")
    server = kit.ApiServer(env, log=tmp_path / "api.log").start()
    try:
        status, _, body = kit.call("GET", server.base + "/api/jobs")
        assert status == 200 and body["total"] == 0, body
        status, _, health = kit.call("GET", server.base + "/api/health")
        assert health["database"]["revision"] == "0007_model_versions"
    finally:
        server.stop()
    assert "migrated from empty to 0007_model_versions" in (tmp_path / "api.log").read_text()


def test_api_reachable_from_other_hosts_requires_keys(redis_url, tmp_path):
    """`vidclass api --host 0.0.0.0` follows `vidclass up`'s rule: no key, no writes."""
    env = kit.service_env(tmp_path, redis_url, f"sqlite:///{tmp_path / 'open.db'}", tmp_path / "m", tmp_path / "f")
    env.pop("VIDCLASS_REQUIRE_KEYS", None)
    server = kit.ApiServer(env, log=tmp_path / "api.log", host="0.0.0.0").start()
    try:
        status, _, body = kit.call("POST", server.base + "/api/jobs", {"url": "https://example.org/x.mp4"})
        assert status == 401 and body["code"] == "api_key_required", body
    finally:
        server.stop()
    assert "API keys: required" in (tmp_path / "api.log").read_text()


def test_a_busy_port_is_refused_before_anything_starts(tmp_path):
    env = kit.service_env(tmp_path, "", f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "m", tmp_path / "f")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = _run(["up", "--port", str(port)], env, timeout=60)
        assert up.returncode == 2, up.stdout + up.stderr
        assert "vidclass is up" not in up.stdout and "embedded Redis" not in up.stdout
        assert f"port {port} on 127.0.0.1 is already in use" in up.stderr
        assert f"make run PORT={port + 1}" in up.stderr and "VIDCLASS_PORT" in up.stderr
        # VIDCLASS_PORT is the default port of both commands.
        api = _run(["api"], {**env, "VIDCLASS_PORT": str(port)}, timeout=60)
        assert api.returncode == 2 and f"port {port} on 127.0.0.1 is already in use" in api.stderr
    assert not (tmp_path / "p.db").exists()          # refused before migrating anything


def test_export_labels_writes_corrected_uploads_as_a_labelled_set(tmp_path):
    from db import session
    from db.models import Job, new_id, utcnow
    from vidclass.training.dataset import list_clips

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    env = kit.service_env(tmp_path, "", url, tmp_path / "m", tmp_path / "f")
    session.upgrade(url)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    clip = kit.CLIPS[0]
    kept = uploads / clip.name
    shutil.copyfile(clip, kept)
    now = utcnow()

    def job(kind, source, true_label, file_path=None, label="Gaming", status="done"):
        return Job(id=new_id(), source_kind=kind, source=source, file_path=file_path, status=status,
                   progress=100, attempts=1, label=label, confidence=0.6, thumbnails_count=0,
                   true_label=true_label, labelled_at=now if true_label else None, created_at=now)

    rows = [job("upload", clip.name, "Animation", str(kept)),                 # written
            job("upload", "gone.mp4", "Flat_Content", str(uploads / "gone.mp4")),   # file deleted
            job("url", "https://example.org/v.mp4", "Natural_Content"),        # not re-downloaded
            job("test-set", "gaming_supertux_4.mp4", "Gaming"),                # already labelled
            job("upload", "photo.mp4", "Gaming", str(kept), status="failed"),   # failed: no label to learn
            job("upload", clip.name, None, str(kept))]                         # not corrected
    with session.session_scope(url) as s:
        s.add_all(rows)
    out = tmp_path / "labelled"
    r = _run(["export-labels", str(out)], env)
    assert r.returncode == 0, r.stderr
    assert "1 corrected video written" in r.stdout and "4 skipped" in r.stdout
    for skipped in rows[1:5]:
        assert f"skipped job {skipped.id}" in r.stderr
    assert "not downloaded again" in r.stderr and "deleted when the job finished" in r.stderr
    assert "the job is failed" in r.stderr

    written = out / "Animation" / "user_labelled" / f"{rows[0].id[:8]}_{clip.name}"
    assert written.read_bytes() == clip.read_bytes()
    with open(out / "MANIFEST.tsv", newline="") as fh:
        manifest = list(csv.DictReader(fh, delimiter="\t"))
    assert list(manifest[0]) == ["path", "category", "subcategory", "source", "group", "origin", "license"]
    assert [(m["path"], m["category"], m["subcategory"]) for m in manifest] == [
        (f"Animation/user_labelled/{written.name}", "Animation", "user_labelled")]
    # What `vidclass extract` reads: the manifest's clips, with their labels and groups.
    clips = list_clips(out)
    assert [(c.path, c.category, c.subcategory, c.group) for c in clips] == [
        (written.resolve(), "Animation", "user_labelled", f"user_upload_{rows[0].id[:8]}")]


def test_classify_json_is_one_document_and_jsonl_a_stream(tmp_path):
    import json
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDCLASS_")}
    env.update(OMP_NUM_THREADS="1", VIDCLASS_TORCH_THREADS="1", PYTHONPATH=str(kit.REPO))
    clip = str(kit.FIXTURES / "gaming_supertux_4.mp4")
    missing = str(tmp_path / "gone.mp4")
    r = _run(["classify", clip, missing, "--json"], env, timeout=300)
    assert r.returncode == 1, r.stderr                 # one target failed
    results = json.loads(r.stdout)                     # the whole output is one JSON document
    assert isinstance(results, list) and [x["target"] for x in results] == [clip, missing]
    assert results[0]["label"] and results[1]["error"] == "FileNotFoundError"
    r = _run(["classify", missing, missing + "2", "--jsonl"], env, timeout=300)
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["target"] for x in lines] == [missing, missing + "2"] and all("error" in x for x in lines)
    assert _run(["classify", missing, "--json", "--jsonl"], env).returncode == 2    # one or the other
    helptext = _run(["classify", "--help"], env).stdout
    assert "test-set video name" in helptext and "JSON Lines" in helptext and "an array" in helptext


def test_cli_says_when_it_fetches_a_private_address_and_hides_library_errors(tmp_path):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    r = _run(["classify", "http://127.0.0.1:1/x.mp4"], env)
    assert r.returncode == 1
    assert "note: 127.0.0.1 is a loopback address; the local CLI fetches it" in r.stderr
    assert "error: http://127.0.0.1:1/x.mp4: The server at 127.0.0.1:1 refused the connection." in r.stderr
    assert "MaxRetryError" not in r.stderr and "NewConnectionError" not in r.stderr
