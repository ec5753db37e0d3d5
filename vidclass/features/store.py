"""HDF5 features files in the original layout, plus our metadata.

Original layout (must keep loading unchanged): datasets `features` float32 [N, T, D] gzip,
zero-padded past each video's length, `labels` int64 [N], `num_frames` int32 [N]; attrs
`num_videos`, `max_frames`, `feature_dim`, `category_mapping` (JSON name -> index), `multi_scale`.

What we add when we write: `video_names` (utf-8), optional `subcategories`, `groups` and
`origins`, `families` (utf-8), and attr `pipeline` (JSON of the Pipeline that produced the features). Files without
`pipeline` are the original project's and are taken to be ORIGINAL_PIPELINE.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from vidclass.features.pipeline import ORIGINAL_PIPELINE, Pipeline, PipelineMismatch

_STR = h5py.string_dtype("utf-8")
_STRING_COLUMNS = ("video_names", "subcategories", "groups", "origins", "families")


def _decode(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class FeatureStore:
    """Read access to one features file. The file is opened on first use, and one row is read
    at a time (`f['features'][i]`), so a 412 x 73 x 1280 file costs one row of memory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._labels = self._lengths = None

    @property
    def file(self) -> h5py.File:
        if self._file is None:
            if not self.path.is_file():
                raise FileNotFoundError(f"features file not found: {self.path}")
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise ValueError(f"{self.path} is not a readable HDF5 features file: {exc}") from exc
            missing = [k for k in ("features", "labels", "num_frames") if k not in self._file]
            if missing:
                self.close()
                raise ValueError(f"{self.path} lacks dataset(s) {missing}: not a vidclass/original features file")
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return int(self.file["features"].shape[0])

    @property
    def max_frames(self) -> int:
        return int(self.file["features"].shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.file["features"].shape[2])

    @property
    def pipeline(self) -> Pipeline:
        raw = self.file.attrs.get("pipeline")
        return Pipeline.from_json(raw) if raw is not None else ORIGINAL_PIPELINE

    @property
    def category_mapping(self) -> dict[str, int]:
        raw = self.file.attrs.get("category_mapping")
        if raw is None:
            return {}
        mapping = json.loads(raw if isinstance(raw, str) else bytes(raw).decode())
        return {str(k): int(v) for k, v in mapping.items()}

    @property
    def class_names(self) -> list[str]:
        """Category names in label-index order (from category_mapping)."""
        return [name for name, _ in sorted(self.category_mapping.items(), key=lambda kv: kv[1])]

    def _strings(self, key: str) -> list[str] | None:
        return _decode(self.file[key][()]) if key in self.file else None

    @property
    def names(self) -> list[str] | None:
        return self._strings("video_names")

    def _optional_strings(self, key: str) -> list[str] | None:
        # The writer stores "" for "not given"; a column of only "" means the file has none.
        values = self._strings(key)
        return values if values and any(values) else None

    @property
    def subcategories(self) -> list[str] | None:
        return self._optional_strings("subcategories")

    @property
    def groups(self) -> list[str] | None:
        return self._optional_strings("groups")

    @property
    def origins(self) -> list[str] | None:
        """Each clip's origin (recorded, rendered, packaged, stills_motion), when the file has them."""
        return self._optional_strings("origins") if "origins" in self.file else None

    @property
    def families(self) -> list[str] | None:
        """Each clip's source family (MANIFEST.tsv `family`), when the file has them."""
        return self._optional_strings("families") if "families" in self.file else None

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = self.file["labels"][()].astype(np.int64)
        return self._labels

    @property
    def lengths(self) -> np.ndarray:
        if self._lengths is None:
            self._lengths = self.file["num_frames"][()].astype(np.int64)
        return self._lengths

    def row(self, i: int) -> tuple[np.ndarray, int, int]:
        """(features [T, D] as stored, i.e. zero-padded to max_frames; length; label) of row i."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for {n} videos in {self.path}")
        i = i % n
        feats = self.file["features"][i]
        return np.asarray(feats, dtype=np.float32), int(self.lengths[i]), int(self.labels[i])

    def read_all(self) -> dict:
        """Everything in memory (training/evaluation; the files are small), keyed by dataset name:
        features [N,T,D] float32, num_frames [N] int64, labels [N] int64, video_names /
        subcategories / groups (lists, or None when the file has none), category_mapping, pipeline."""
        return {
            "features": np.asarray(self.file["features"][()], dtype=np.float32),
            "num_frames": self.lengths.copy(),
            "labels": self.labels.copy(),
            "video_names": self.names,
            "subcategories": self.subcategories,
            "groups": self.groups,
            "origins": self.origins,
            "families": self.families,
            "category_mapping": self.category_mapping,
            "pipeline": self.pipeline,
        }


class FeatureStoreWriter:
    """Appends rows to a features file, one flushed row at a time, and resumes an existing file.

    `num_videos` is updated last in each add(), so on reopening, rows beyond it (a crash in the
    middle of an add) are dropped and extraction redoes that video.
    """

    def __init__(self, path: str | os.PathLike, pipeline: Pipeline, max_steps: int | None = None,
                 category_mapping: dict[str, int] | None = None):
        self.path = Path(path)
        self.pipeline = pipeline
        self.max_steps = int(max_steps or pipeline.max_steps)
        self.category_mapping = dict(category_mapping or {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._f = h5py.File(self.path, "a")
            self._resume()
        else:
            self._f = h5py.File(self.path, "w")
            self._create()
        self._names = _decode(self._f["video_names"][()])
        self._name_set = set(self._names)

    def _create(self) -> None:
        f, t, d = self._f, self.max_steps, self.pipeline.feature_dim
        f.create_dataset("features", shape=(0, t, d), maxshape=(None, t, d), dtype=np.float32,
                         chunks=(1, t, d), compression="gzip", compression_opts=4)
        f.create_dataset("labels", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        f.create_dataset("num_frames", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1024,))
        for key in _STRING_COLUMNS:
            f.create_dataset(key, shape=(0,), maxshape=(None,), dtype=_STR, chunks=(1024,))
        f.attrs["num_videos"] = 0
        f.attrs["max_frames"] = t
        f.attrs["feature_dim"] = d
        f.attrs["category_mapping"] = json.dumps(self.category_mapping)
        f.attrs["multi_scale"] = bool(self.pipeline.scales)
        f.attrs["pipeline"] = self.pipeline.to_json()
        f.flush()

    def _resume(self) -> None:
        f = self._f
        if "video_names" not in f or "pipeline" not in f.attrs or f["features"].maxshape[0] is not None:
            raise ValueError(f"{self.path} exists but was not written by FeatureStoreWriter; "
                             f"move it away or choose another output path")
        stored = Pipeline.from_json(f.attrs["pipeline"])
        if stored.feature_space() != self.pipeline.feature_space():
            raise PipelineMismatch(f"{self.path} holds features of {stored.describe()}, "
                                   f"not {self.pipeline.describe()}; use another output path")
        if int(f.attrs["max_frames"]) != self.max_steps:
            raise ValueError(f"{self.path} has {f.attrs['max_frames']} steps per row, not {self.max_steps}")
        stored_map = json.loads(f.attrs["category_mapping"])
        if self.category_mapping and stored_map != self.category_mapping:
            raise ValueError(f"{self.path} has category mapping {stored_map}, not {self.category_mapping}")
        self.category_mapping = stored_map
        committed = int(f.attrs["num_videos"])
        for key in ("origins", "families"):     # written before these were recorded: "" = not given
            if key not in f:
                f.create_dataset(key, shape=(committed,), maxshape=(None,), dtype=_STR, chunks=(1024,))
        for key in ("features", "labels", "num_frames") + _STRING_COLUMNS:
            if f[key].shape[0] != committed:
                f[key].resize(committed, axis=0)
        f.flush()

    def names(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name: str) -> bool:
        return name in self._name_set

    def __len__(self) -> int:
        return len(self._names)

    def add(self, name: str, features: np.ndarray, length: int, label: int,
            subcategory: str | None = None, group: str | None = None, origin: str | None = None,
            family: str | None = None) -> int:
        """Append one video (features [<=T, D], zero-padded here) and flush; returns its row index."""
        if name in self._name_set:
            raise ValueError(f"{name!r} is already in {self.path}")
        feats = np.asarray(features, dtype=np.float32)
        t, d = self.max_steps, self.pipeline.feature_dim
        if feats.ndim != 2 or feats.shape[1] != d or feats.shape[0] > t:
            raise ValueError(f"features for {name!r} must be [<= {t}, {d}], got {list(feats.shape)}")
        if not 0 < int(length) <= t:
            raise ValueError(f"length {length} of {name!r} outside 1..{t}")
        row = np.zeros((t, d), np.float32)
        row[:feats.shape[0]] = feats
        row[int(length):] = 0.0          # the original zero-pads past the length; keep that exact
        f, i = self._f, len(self._names)
        for key in ("features", "labels", "num_frames") + _STRING_COLUMNS:
            f[key].resize(i + 1, axis=0)
        f["features"][i] = row
        f["labels"][i] = int(label)
        f["num_frames"][i] = int(length)
        f["video_names"][i] = name
        f["subcategories"][i] = subcategory or ""
        f["groups"][i] = group or ""
        f["origins"][i] = origin or ""
        f["families"][i] = family or ""
        f.attrs["num_videos"] = i + 1
        f.flush()
        self._names.append(name)
        self._name_set.add(name)
        return i

    def fill_families(self, families: dict[str, str]) -> None:
        """Set the family of rows that have none, by video name (files made before families)."""
        column = self._f["families"]
        current = [v.decode() if isinstance(v, bytes) else v for v in column[()]]
        for i, name in enumerate(self._names):
            if not current[i] and families.get(name):
                column[i] = families[name]
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
