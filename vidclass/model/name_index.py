"""Test-set video names and the features row each one lives in.

The original project kept names apart from features: row i of test_features_multiscale.h5 is
the i-th name met walking data/processed/test/{Category}/{subcategory}/processed_data.pt with
categories sorted, subcategory folders sorted and `filenames` in stored order. Those .pt files
also hold every video's frames (`videos`), so we load them memory-mapped and never touch the
frames. Features files we write carry `video_names` themselves, which then take precedence.
"""
from __future__ import annotations

import difflib
import logging
import os
import pickle
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidclass import paths
from vidclass.features.store import FeatureStore

log = logging.getLogger(__name__)

PROCESSED_FILE = "processed_data.pt"
# The original project's name, then the one `vidclass extract` gives a pipeline without
# temporal multi-scale averaging (the shipped one): the first that exists is the test set.
TEST_FEATURES_FILES = ("test_features_multiscale.h5", "test_features.h5")


def test_features_path(features_dir=None) -> Path:
    folder = paths.features_dir(features_dir)
    for name in TEST_FEATURES_FILES:
        if (folder / name).exists():
            return folder / name
    return folder / TEST_FEATURES_FILES[0]       # FeatureStore reports it missing


@dataclass(frozen=True)
class IndexEntry:
    name: str
    category: str
    subcategory: str | None


class UnknownVideo(KeyError):
    """A name that is not in the test set; carries close matches for the error message."""

    def __init__(self, name: str, suggestions: list[str]):
        super().__init__(name)
        self.name = name
        self.suggestions = suggestions

    def __str__(self) -> str:
        hint = f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        return f"unknown test-set video {self.name!r}{hint}"


def _load_filenames(path: Path) -> list[str]:
    """`filenames` of one processed_data.pt without reading its `videos` tensor into memory.

    mmap=True maps tensor storages instead of reading them (zip-format files, torch >= 1.6
    saves): 0.002 s and +1 MB RSS for a 96 MB file, against 0.07 s and +93 MB read whole.
    Legacy-format files cannot be mapped and are read whole, once. The processed folder is the
    operator's own, so files holding numpy arrays (refused by weights_only) are read trusted.
    """
    import torch   # here: names from a features file need no torch (a worker answers them at once)

    data = None
    for weights_only in (True, False):
        try:
            try:
                data = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                data = torch.load(path, map_location="cpu", weights_only=weights_only)
            break
        except pickle.UnpicklingError:
            if not weights_only:
                raise ValueError(f"cannot read {path}: not a torch.save file")
            log.debug("%s holds non-tensor objects; loading it as a trusted file", path)
        except Exception as exc:
            raise ValueError(f"cannot read {path} (expected a dict with 'filenames'): {exc}") from exc
    if not isinstance(data, dict) or "filenames" not in data:
        raise ValueError(f"{path} has no 'filenames' list")
    names = data["filenames"]
    if isinstance(names, (np.ndarray, torch.Tensor)):
        names = names.tolist()
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def build_name_index(processed_dir: str | os.PathLike | None = None) -> list[IndexEntry]:
    """All test-set names in h5 row order (entry i describes row i)."""
    root = paths.processed_dir(processed_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"processed test-set folder not found: {root}")
    entries: list[IndexEntry] = []
    for cat_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for sub_dir in sorted(p for p in cat_dir.iterdir() if p.is_dir()):
            pt = sub_dir / PROCESSED_FILE
            if pt.is_file():
                entries.extend(IndexEntry(n, cat_dir.name, sub_dir.name) for n in _load_filenames(pt))
    return entries


def write_processed_index(processed_dir: str | os.PathLike, entries, thumbnails: dict | None = None,
                          ) -> list[IndexEntry]:
    """Write {Category}/{subcategory}/processed_data.pt files for (name, category, subcategory) entries.

    `videos` holds one uint8 [H, W, 3] thumbnail per video when `thumbnails` (name -> array) has
    them all for a folder, else an empty uint8 tensor, so the files stay small. Returns the entries
    in the order build_name_index will read them back: write the h5 rows in that order.
    """
    import torch

    root = Path(processed_dir)
    folders: dict[tuple[str, str], list[str]] = defaultdict(list)
    for entry in entries:
        name, category, sub = (entry.name, entry.category, entry.subcategory) \
            if isinstance(entry, IndexEntry) else tuple(entry)
        folders[(category, sub or "unspecified")].append(name)
    ordered: list[IndexEntry] = []
    for (category, sub) in sorted(folders):
        names = folders[(category, sub)]
        if thumbnails and all(n in thumbnails for n in names):
            videos = torch.from_numpy(np.stack([np.asarray(thumbnails[n], np.uint8) for n in names]))
        else:
            videos = torch.zeros(0, dtype=torch.uint8)
        folder = root / category / sub
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"filenames": list(names), "videos": videos}, folder / PROCESSED_FILE)
        ordered.extend(IndexEntry(n, category, sub) for n in names)
    return ordered


class TestSet:
    """Test-set name -> features row, for `vidclass videos`, GET /api/videos and classify-by-name."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, features_dir: str | os.PathLike | None = None,
                 processed_dir: str | os.PathLike | None = None,
                 features_file: str | os.PathLike | None = None):
        self.features_path = Path(features_file) if features_file else test_features_path(features_dir)
        self.processed_dir = paths.processed_dir(processed_dir)
        self.store = FeatureStore(self.features_path)
        self._entries: list[IndexEntry] | None = None
        self._rows: dict[str, int] | None = None

    @property
    def entries(self) -> list[IndexEntry]:
        if self._entries is None:
            self._entries = self._build_entries()
            self._rows = {}
            for i, e in enumerate(self._entries):
                self._rows.setdefault(e.name, i)
        return self._entries

    def _build_entries(self) -> list[IndexEntry]:
        store = self.store
        names = store.names
        class_names = store.class_names
        if names is not None:     # our files name their own rows
            subs = store.subcategories or [None] * len(names)
            return [IndexEntry(n, class_names[lab] if 0 <= lab < len(class_names) else str(lab), s or None)
                    for n, lab, s in zip(names, store.labels.tolist(), subs)]
        entries = build_name_index(self.processed_dir)
        if len(entries) != len(store):
            raise ValueError(f"name index {self.processed_dir} lists {len(entries)} videos but "
                             f"{self.features_path} has {len(store)} rows; they must come from the same test set")
        mapping = store.category_mapping
        wrong = sum(1 for e, lab in zip(entries, store.labels.tolist()) if mapping.get(e.category, lab) != lab)
        if wrong:
            log.warning("%d of %d test-set names sit in a category folder that disagrees with their "
                        "row's label in %s", wrong, len(entries), self.features_path)
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    def by_category(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for e in self.entries:
            out[e.category].append(e.name)
        return dict(sorted(out.items()))

    names_by_category = by_category

    def resolve(self, name: str) -> int:
        """Row index of a test-set name; UnknownVideo (a KeyError) with suggestions otherwise."""
        self.entries
        if name in self._rows:
            return self._rows[name]
        # Allow the name without its file extension when that is unambiguous.
        stems = [n for n in self._rows if os.path.splitext(n)[0] == name]
        if len(stems) == 1:
            return self._rows[stems[0]]
        raise UnknownVideo(name, difflib.get_close_matches(name, list(self._rows), n=3, cutoff=0.6))

    def entry(self, name: str) -> IndexEntry:
        return self.entries[self.resolve(name)]

    def row(self, name: str) -> tuple[np.ndarray, int, int]:
        """(features [T, D] zero-padded, length, label) of a test-set video."""
        return self.store.row(self.resolve(name))

    def close(self) -> None:
        self.store.close()
