"""The API contract: schemathesis (PyPI) fuzzes the running service against its own OpenAPI document.

A real `vidclass api` process (gunicorn), real Celery workers as `vidclass up` starts them, real
Redis, SQLite and PostgreSQL. Schemathesis generates requests from /api/openapi.json: examples,
boundary values and negative data for every operation, then stateful sequences that follow the
document's links (a job's id from POST /api/jobs into GET, cancel, retry, label and DELETE; a
batch's likewise). Every check must pass: no server error, every status and body as documented,
invalid data refused with a 4xx, valid data accepted, a deleted job gone.
"""
from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

import servicekit as kit

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Fuzzing and stateful sequences repeat until this budget is spent (per database).
BUDGET_S = 60


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contract-assets")
    (tmp / "models").mkdir()
    (tmp / "features").mkdir()
    pipeline = kit.write_random_models(tmp / "models")
    names = kit.write_test_set(tmp / "features", pipeline, kit.CLIPS[:1])
    kit.copy_clips(tmp / "clips")
    return {"tmp": tmp, "names": names}


@contextmanager
def running_api(assets, tmp: Path, database_url: str, redis_url: str):
    # A short SYNC_WAIT_S: a generated POST /api/classify without `wait` answers 202 soon.
    env = kit.service_env(tmp, redis_url, database_url, assets["tmp"] / "models", assets["tmp"] / "features",
                          SYNC_WAIT_S="2", RATE_LIMIT_PER_MIN="100000")
    with kit.environ(env):
        from db import session

        session.upgrade(database_url)
    server = kit.ClipServer(assets["tmp"] / "clips")
    workers = kit.Workers.like_up(env, concurrency=1, log=tmp / "worker.log").start()
    api = kit.ApiServer(env, log=tmp / "api.log").start()
    try:
        yield api, server
    finally:
        api.stop()
        workers.stop()
        server.close()


def run_schemathesis(api, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"{api.base}/api/openapi.json",
         "--checks", "all", "--max-time", str(BUDGET_S), "--request-timeout", "20",
         "--seed", "1", "--generation-database", "none", "--workers", "1", "--report-dir", str(tmp / "schemathesis"),
         "--suppress-health-check", "all", "--no-color"],
        cwd=tmp, capture_output=True, text=True, timeout=BUDGET_S * 8)


def _check(result: subprocess.CompletedProcess) -> None:
    tail = result.stdout[-12000:] + result.stderr[-3000:]
    assert result.returncode == 0, tail


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vidclass.db'}"
        return
    made = kit.postgres_schema_url()
    if made is None:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    url, schema = made
    yield url
    kit.drop_postgres_schema(schema)


def test_service_meets_its_openapi_contract(assets, redis_url, database_url, tmp_path):
    with running_api(assets, tmp_path, database_url, redis_url) as (api, _):
        _check(run_schemathesis(api, tmp_path))
