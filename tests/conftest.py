"""Fixtures shared by several test modules."""
import pytest

import servicekit as kit


@pytest.fixture(scope="module")
def redis_url():
    """The machine's Redis on 127.0.0.1:6379 when it answers (keys under a private prefix),
    else an embedded redis-server for this module."""
    url, proc = kit.shared_redis()
    yield url
    if proc is not None:
        proc.terminate()
        proc.wait()
