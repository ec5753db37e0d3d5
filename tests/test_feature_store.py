"""Features files: the original HDF5 layout (read) and ours (write, resume)."""
import subprocess
import sys
import tracemalloc

import h5py
import numpy as np
import pytest

from vidclass.features.store import FeatureStore, FeatureStoreWriter
from vidclass.features.pipeline import ORIGINAL_PIPELINE, Pipeline, PipelineMismatch

from original_layout import MAPPING, write_original_features



def write_original_h5(path, n=6, t=5, d=8, seed=0):
    """The original project's layout, written the way its extraction script did."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, n).astype(np.int32)
    feats = np.zeros((n, t, d), np.float32)
    for i, length in enumerate(lengths):
        feats[i, :length] = rng.standard_normal((length, d)) + i * 10
    labels = (np.arange(n) % 4).astype(np.int64)
    write_original_features(path, feats, lengths, labels)
    return feats, lengths, labels


def test_original_layout_reads_row_by_row(tmp_path):
    path = tmp_path / "test_features_multiscale.h5"
    feats, lengths, labels = write_original_h5(path)
    with FeatureStore(path) as store:
        assert store.pipeline == ORIGINAL_PIPELINE
        assert store.names is None and store.subcategories is None and store.groups is None
        assert store.category_mapping == MAPPING
        assert store.class_names == list(MAPPING)
        assert (len(store), store.max_frames, store.feature_dim) == (6, 5, 8)
        for i in range(6):
            row, length, label = store.row(i)
            assert row.dtype == np.float32 and row.shape == (5, 8)
            np.testing.assert_array_equal(row, feats[i])
            assert (length, label) == (lengths[i], labels[i])
        with pytest.raises(IndexError, match="out of range"):
            store.row(6)
        everything = store.read_all()
        np.testing.assert_array_equal(everything["features"], feats)
        np.testing.assert_array_equal(everything["num_frames"], lengths)
        np.testing.assert_array_equal(everything["labels"], labels)
        assert everything["video_names"] is None and everything["pipeline"] == ORIGINAL_PIPELINE


def test_row_reads_only_its_slice(tmp_path):
    path = tmp_path / "big.h5"
    n, t, d = 100, 73, 1280                        # ~37 MB of float32 in all
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("features", shape=(n, t, d), dtype=np.float32, compression="gzip",
                              chunks=(1, t, d))
        for i in range(n):
            ds[i] = float(i)
        f.create_dataset("labels", data=np.zeros(n, np.int64))
        f.create_dataset("num_frames", data=np.full(n, t, np.int32))
    store = FeatureStore(path)
    store.row(0)                                   # open the file and read the small columns first
    tracemalloc.start()
    row, _, _ = store.row(57)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert row[0, 0] == 57.0
    assert peak < 3 * t * d * 4, f"reading one row allocated {peak} bytes"
    store.close()


def test_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="features file not found"):
        len(FeatureStore(tmp_path / "nope.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(ValueError, match="lacks dataset"):
        len(FeatureStore(tmp_path / "other.h5"))


def test_writer_appends_flushes_and_resumes(tmp_path):
    pipeline = Pipeline(backbone_dim=6, num_frames=4, scales=(1.0, 1.5))
    assert pipeline.max_steps == 6
    path = tmp_path / "train_features.h5"
    rng = np.random.default_rng(1)
    rows = {f"video_{i}.mp4": rng.standard_normal((3 + i % 3, 6)).astype(np.float32) for i in range(5)}

    writer = FeatureStoreWriter(path, pipeline, pipeline.max_steps, MAPPING)
    for i, (name, feats) in enumerate(list(rows.items())[:3]):
        assert writer.add(name, feats, len(feats), i % 4, subcategory=f"sub{i}", group=f"g{i}") == i
    # Another process sees all three rows while the writer still holds the file: each add is flushed.
    probe = ("import h5py, sys; f = h5py.File(sys.argv[1], 'r', locking=False); "
             "print(f['features'].shape[0], int(f.attrs['num_videos']), f['features'][2, 0, 0])")
    seen = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True,
                          check=True).stdout.split()
    assert seen[:2] == ["3", "3"] and float(seen[2]) == pytest.approx(float(rows["video_2.mp4"][0, 0]))
    with pytest.raises(ValueError, match="already in"):
        writer.add("video_0.mp4", rows["video_0.mp4"], 3, 0)
    writer.close()

    writer = FeatureStoreWriter(path, pipeline, pipeline.max_steps, MAPPING)
    assert writer.names() == list(rows)[:3]
    for i, (name, feats) in enumerate(list(rows.items())[3:], start=3):
        writer.add(name, feats, len(feats), i % 4)
    writer.close()

    with FeatureStore(path) as store:
        assert store.pipeline == pipeline
        assert store.names == list(rows)
        assert store.subcategories == ["sub0", "sub1", "sub2", "", ""]
        assert store.read_all()["groups"] == ["g0", "g1", "g2", "", ""]
        assert store.category_mapping == MAPPING
        with h5py.File(path, "r") as f:   # the original layout's dtypes and attrs
            assert f["features"].dtype == np.float32 and f["features"].compression == "gzip"
            assert f["labels"].dtype == np.int64 and f["num_frames"].dtype == np.int32
            assert int(f.attrs["max_frames"]) == 6 and int(f.attrs["feature_dim"]) == 6
            assert bool(f.attrs["multi_scale"]) is True and int(f.attrs["num_videos"]) == 5
        for i, (name, feats) in enumerate(rows.items()):
            row, length, label = store.row(i)
            assert length == len(feats) and label == i % 4
            np.testing.assert_array_equal(row[:length], feats)
            assert not row[length:].any()


def test_writer_drops_an_unfinished_row_on_resume(tmp_path):
    pipeline = Pipeline(backbone_dim=4, num_frames=3, scales=())
    path = tmp_path / "f.h5"
    with FeatureStoreWriter(path, pipeline, category_mapping=MAPPING) as writer:
        writer.add("a", np.ones((3, 4)), 3, 1)
    with h5py.File(path, "a") as f:       # a crash after resizing, before num_videos was updated
        f["features"].resize(2, axis=0)
        f["video_names"].resize(2, axis=0)
        f["video_names"][1] = "b"
    with FeatureStoreWriter(path, pipeline) as writer:
        assert writer.names() == ["a"]
        writer.add("b", np.full((2, 4), 2.0), 2, 0)
    with FeatureStore(path) as store:
        assert store.names == ["a", "b"] and len(store) == 2
        assert store.row(1)[1] == 2


def test_writer_refuses_another_pipeline_or_an_original_file(tmp_path):
    path = tmp_path / "f.h5"
    FeatureStoreWriter(path, Pipeline(backbone_dim=4)).close()
    with pytest.raises(PipelineMismatch, match="another output path"):
        FeatureStoreWriter(path, Pipeline(backbone_dim=4, input_size=300))
    write_original_h5(tmp_path / "orig.h5")
    with pytest.raises(ValueError, match="not written by FeatureStoreWriter"):
        FeatureStoreWriter(tmp_path / "orig.h5", Pipeline(backbone_dim=8))
    with FeatureStoreWriter(tmp_path / "g.h5", Pipeline(backbone_dim=4, num_frames=3, scales=())) as w:
        with pytest.raises(ValueError, match=r"must be \[<= 3, 4\]"):
            w.add("x", np.zeros((4, 4)), 3, 0)


def test_families_are_recorded_and_filled_into_older_files(tmp_path):
    pipeline = Pipeline(weights_sha256="ab" * 32)
    path = tmp_path / "f.h5"
    with FeatureStoreWriter(path, pipeline, category_mapping=MAPPING) as w:
        w.add("a.mp4", np.ones((3, 1280), np.float32), 3, 0, group="debian_gem-doc", family="gem")
        w.add("b.mp4", np.ones((3, 1280), np.float32), 3, 1, group="xman")
    with FeatureStore(path) as store:
        assert store.families == ["gem", ""]
    with h5py.File(path, "a") as f:          # as written before families were recorded
        del f["families"]
    with FeatureStore(path) as store:
        assert store.families is None
    with FeatureStoreWriter(path, pipeline, category_mapping=MAPPING) as w:
        w.fill_families({"a.mp4": "gem", "b.mp4": "xman"})
    with FeatureStore(path) as store:
        assert store.families == ["gem", "xman"]
