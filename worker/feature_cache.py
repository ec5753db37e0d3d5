"""Recent features per worker process, keyed by the video's bytes and the pipeline: a re-submitted
or duplicated video (common in batches) skips sampling and the CNN."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path


class _LRU:
    """A small per-process cache of recent features (and thumbnail frames)."""

    def __init__(self, size: int):
        from collections import OrderedDict

        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


# VIDCLASS_FEATURE_CACHE: entries kept (0 turns it off: benchmarks that must run every clip).
FEATURE_CACHE = _LRU(int(os.environ.get("VIDCLASS_FEATURE_CACHE", "64")))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
