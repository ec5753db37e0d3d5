"""A Redis restart that loses every queued message loses no job: the reconciler re-publishes
from the database. Uses a private redis-server (never the machine's shared 6379)."""
import signal

import pytest

import servicekit as kit
from test_worker import assets, wait_job  # noqa: F401  (module fixture reused)

pytestmark = pytest.mark.slow


def test_redis_restart_loses_no_job(assets, tmp_path):  # noqa: F811
    port = kit.free_port()
    redis_proc, redis_url = kit.start_redis(port)
    env = kit.service_env(tmp_path, redis_url, f"sqlite:///{tmp_path / 'db.sqlite'}",
                          assets["tmp"] / "models", assets["tmp"] / "features")
    server = kit.ClipServer(assets["tmp"] / "clips")
    workers = None
    try:
        with kit.environ(env):
            from api import create_app
            from db import session

            session.upgrade(env["DATABASE_URL"])
            client = create_app().test_client()
            workers = kit.Workers(env, log=tmp_path / "worker.log").start()
            urls = [server.url(kit.CLIPS[i % 4].name) + f"?r={i}" for i in range(30)]
            batch = client.post("/api/batches", json={"urls": urls}).get_json()
            assert batch["total"] == 30
            kit.wait_for(lambda: client.get(f"/api/batches/{batch['id']}").get_json()
                         ["status_counts"].get("done", 0) >= 1, 120, interval=0.2, what="a first job")
            # Redis dies mid-run without persistence: every queued message is gone.
            redis_proc.send_signal(signal.SIGKILL)
            redis_proc.wait()
            redis_proc, _ = kit.start_redis(port)

            def batch_done():
                b = client.get(f"/api/batches/{batch['id']}").get_json()
                return b if b["done"] else None
            final = kit.wait_for(batch_done, 240, interval=1, what="batch after the Redis restart")
            assert final["status_counts"] == {"done": 30}
    finally:
        if workers:
            workers.stop()
        server.close()
        redis_proc.terminate()
        redis_proc.wait()
