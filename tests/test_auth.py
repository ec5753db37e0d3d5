"""API keys, rate limits, the same-origin check and a URL-free health, against a real API process
(gunicorn) on a real database; keys made with the real `vidclass keys` CLI."""
import subprocess
import sys

import pytest

import servicekit as kit


@pytest.fixture(scope="module")
def api(redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    url = f"sqlite:///{tmp / 'auth.db'}"
    env = kit.service_env(tmp, redis_url, url, tmp / "models", tmp / "features", RATE_LIMIT_PER_MIN="5")
    with kit.environ(env):
        from db import session
        session.upgrade(url)
    server = kit.ApiServer(env, log=tmp / "api.log").start()
    yield {"base": server.base, "env": env, "port": server.port, "tmp": tmp}
    server.stop()


def _cli(env, *args):
    out = subprocess.run([sys.executable, "-m", "vidclass.cli", "keys", *args], env=env, cwd=kit.REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _submit(api, headers=None, n=0):
    return kit.call("POST", api["base"] + "/api/jobs", {"url": f"https://example.org/{n}.mp4"}, headers)


def test_keys_same_origin_rate_limits_and_revocation(api):
    base, port = api["base"], api["port"]
    # No key exists: open (as `vidclass up` on 127.0.0.1 says), but only to this origin's pages.
    status, _, health = kit.call("GET", base + "/api/health")
    assert health["auth"]["keys_required"] is False
    assert _submit(api)[0] == 202
    assert _submit(api, {"Origin": f"http://127.0.0.1:{port}"})[0] == 202
    for evil in ("https://evil.example", "null", f"http://127.0.0.1:{port}.evil.example"):
        status, _, body = _submit(api, {"Origin": evil})
        assert status == 403 and body["code"] == "cross_origin", evil
    status, _, body = kit.call("POST", base + "/api/batches", {"urls": ["https://e.org/1.mp4"]},
                               {"Sec-Fetch-Site": "cross-site"})
    assert status == 403 and body["code"] == "cross_origin"

    token = _cli(api["env"], "create", "--name", "ci").strip().splitlines()[0]
    assert token.startswith("vck_") and len(token) > 40
    listing = _cli(api["env"], "list")
    assert "ci" in listing and token not in listing and token[:10] in listing
    with kit.environ(api["env"]):
        from db import session
        from db.models import ApiKey
        with session.session_scope() as s:
            assert token not in {k.key_hash for k in s.query(ApiKey)}      # stored hashed only

    # A key exists: writes, exports and reads need one (health and the API docs stay open).
    status, headers, body = _submit(api)
    assert status == 401 and body["code"] == "api_key_required" and "Bearer" in headers["WWW-Authenticate"]
    for bad in ("Bearer vck_nope", "Basic dXNlcjpwYXNz", "Bearer"):
        status, _, body = _submit(api, {"Authorization": bad})
        assert status == 401 and body["code"] == "invalid_api_key", bad
    assert kit.call("GET", base + "/api/jobs?format=csv")[0] == 401
    first = kit.call("GET", base + "/api/jobs?per_page=500", headers={"Authorization": f"Bearer {token}"})[2]["jobs"][0]
    for path in ("/api/jobs", "/api/jobs?per_page=500", f"/api/jobs/{first['id']}", "/api/batches",
                 f"/api/jobs/{first['id']}/thumbnails/0.jpg", "/api/dashboard", "/api/videos"):
        status, _, body = kit.call("GET", base + path)
        assert status == 401 and body["code"] == "api_key_required", path
    for path in ("/api/health", "/api/openapi.json", "/api/docs"):
        assert kit.call("GET", base + path)[0] == 200, path
    auth = {"Authorization": f"Bearer {token}"}
    assert kit.call("GET", base + f"/api/jobs/{first['id']}", headers=auth)[0] == 200
    status, _, job = _submit(api, auth)
    assert status == 202
    assert kit.call("POST", base + f"/api/jobs/{job['id']}/cancel")[0] == 401
    assert kit.call("POST", base + f"/api/jobs/{job['id']}/cancel", headers=auth)[0] == 200
    status, _, csv_text = kit.call("GET", base + "/api/jobs?format=csv", headers=auth)
    assert status == 200 and job["id"].encode() in csv_text
    assert kit.call("GET", base + "/api/health")[2]["auth"]["keys_required"] is True

    # RATE_LIMIT_PER_MIN=5 a key: 11 requests inside two minute windows at most, so one window
    # sees more than 5 of them.
    limited = None
    for n in range(11):
        status, headers, body = _submit(api, auth, n)
        if status == 429:
            limited = (headers, body)
            break
        assert status == 202
    assert limited is not None, "no 429 after 11 requests with a limit of 5 a minute"
    headers, body = limited
    assert body["code"] == "rate_limited" and 1 <= int(headers["Retry-After"]) <= 60

    key_id = [line.split()[0] for line in _cli(api["env"], "list").splitlines() if line.endswith(" ci")][0]
    assert "revoked" in _cli(api["env"], "revoke", key_id[:8])
    # A revoked key is hidden from the list, which says so; revoking it again, or a key that does
    # not exist, says which it is.
    assert "1 revoked key not shown" in _cli(api["env"], "list") and " ci" in _cli(api["env"], "list", "--all")
    for ref, said in ((key_id[:8], "already revoked"), ("nonexist", "no key has an id or prefix")):
        out = subprocess.run([sys.executable, "-m", "vidclass.cli", "keys", "revoke", ref], env=api["env"],
                             cwd=kit.REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and said in out.stderr, out.stderr
    status, _, body = _submit(api, auth)
    assert status == 401 and body["code"] == "invalid_api_key"


def test_health_shows_versions_not_connection_urls(api):
    status, _, health = kit.call("GET", api["base"] + "/api/health")
    assert status == 200
    assert health["database"]["version"] and health["queue"]["version"] and health["version"]
    text = str(health)
    for secret in ("sqlite:", "redis://", api["env"]["DATABASE_URL"], str(api["tmp"])):
        assert secret not in text


def test_require_keys_setting_closes_the_api_without_any_key(redis_url, tmp_path):
    url = f"sqlite:///{tmp_path / 'req.db'}"
    env = kit.service_env(tmp_path, redis_url, url, tmp_path, tmp_path, VIDCLASS_REQUIRE_KEYS="1")
    with kit.environ(env):
        from api import create_app
        from db import session
        session.upgrade(url)
        client = create_app({"TESTING": True}).test_client()
        r = client.post("/api/jobs", json={"url": "https://example.org/x.mp4"})
        assert r.status_code == 401 and r.get_json()["code"] == "api_key_required"
        assert client.get("/api/health").get_json()["auth"]["keys_required"] is True


def test_a_rebound_host_name_is_refused_by_a_keyless_api(redis_url, tmp_path):
    """DNS rebinding: a page on evil.example (resolving to 127.0.0.1) must not use a keyless API."""
    url = f"sqlite:///{tmp_path / 'host.db'}"
    env = kit.service_env(tmp_path, redis_url, url, tmp_path, tmp_path)
    env.pop("VIDCLASS_REQUIRE_KEYS", None)
    with kit.environ(env):
        from api import create_app
        from db import session
        session.upgrade(url)
        client = create_app({"TESTING": True}).test_client()
        evil = {"Host": "evil.example:5077", "Origin": "http://evil.example:5077"}
        r = client.post("/api/jobs", json={"url": "https://example.org/x.mp4"}, headers=evil)
        assert r.status_code == 400 and r.get_json()["code"] == "bad_host"
        assert client.get("/api/jobs", headers={"Host": "evil.example:5077"}).status_code == 400
        for host in ("localhost:5077", "127.0.0.1:5077", "[::1]:5077"):
            assert client.get("/api/jobs", headers={"Host": host}).status_code == 200, host
        named = create_app({"TESTING": True, "ALLOWED_HOSTS": "vidclass.lan"}).test_client()
        assert named.get("/api/jobs", headers={"Host": "vidclass.lan:5077"}).status_code == 200
        assert named.get("/api/jobs", headers={"Host": "evil.example"}).status_code == 400
