"""Test-set names -> features rows, for original-layout and vidclass-written files."""

import numpy as np
import pytest
import torch

from vidclass.features.store import FeatureStoreWriter
from vidclass.model.name_index import (IndexEntry, TestSet, UnknownVideo, build_name_index,
                                 write_processed_index)
from vidclass.features.pipeline import Pipeline

from original_layout import MAPPING, write_original_features


# Folder contents as the original left them; created below in a scrambled order on purpose.
FOLDERS = {
    ("Gaming", "racing"): ["lap_02.mp4", "lap_01.mp4"],
    ("Animation", "cartoon"): ["toon_b.mp4", "toon_a.mp4", "toon_c.mp4"],
    ("Natural_Content", "beach"): ["waves.mp4"],
    ("Gaming", "fps"): ["shooter.mp4"],
    ("Animation", "anime"): ["mecha.mp4"],
    ("Flat_Content", "slides"): ["lecture.mp4", "deck.mp4"],
}
# The original's row order: categories sorted, subcategories sorted, filenames as stored.
EXPECTED_ORDER = ["mecha.mp4", "toon_b.mp4", "toon_a.mp4", "toon_c.mp4", "lecture.mp4",
                  "deck.mp4", "shooter.mp4", "lap_02.mp4", "lap_01.mp4", "waves.mp4"]


def write_original_test_set(root):
    processed = root / "data" / "processed" / "test"
    for (category, sub), names in FOLDERS.items():
        folder = processed / category / sub
        folder.mkdir(parents=True)
        videos = torch.randint(0, 255, (len(names), 4, 8, 8, 3), dtype=torch.uint8)
        data = {"filenames": names, "videos": videos, "labels": [MAPPING[category]] * len(names)}
        if category == "Gaming":    # numpy inside: weights_only refuses it, a trusted load does not
            data["labels"] = np.array(data["labels"])
        # Old torch versions wrote the legacy (non-zip) format, which cannot be memory-mapped.
        torch.save(data, folder / "processed_data.pt", _use_new_zipfile_serialization=(sub != "beach"))
    entries = build_name_index(processed)
    n, t, d = len(entries), 4, 3
    feats = np.zeros((n, t, d), np.float32)
    lengths = np.array([1 + i % t for i in range(n)], np.int32)
    for i in range(n):
        feats[i, :lengths[i]] = i + 1            # row i is recognisable by its value
    features_dir = root / "features_enhanced"
    features_dir.mkdir()
    write_original_features(features_dir / "test_features_multiscale.h5", feats, lengths,
                            [MAPPING[e.category] for e in entries])
    return features_dir, processed


def test_index_follows_the_original_walk_order(tmp_path):
    _, processed = write_original_test_set(tmp_path)
    entries = build_name_index(processed)
    assert [e.name for e in entries] == EXPECTED_ORDER
    assert entries[0] == IndexEntry("mecha.mp4", "Animation", "anime")
    assert entries[-1] == IndexEntry("waves.mp4", "Natural_Content", "beach")


def test_each_name_resolves_to_its_row(tmp_path):
    features_dir, processed = write_original_test_set(tmp_path)
    test_set = TestSet(features_dir, processed)
    assert len(test_set) == len(EXPECTED_ORDER)
    for i, name in enumerate(EXPECTED_ORDER):
        assert test_set.resolve(name) == i
        feats, length, label = test_set.row(name)
        assert length == 1 + i % 4
        assert (feats[:length] == i + 1).all() and not feats[length:].any()
        assert label == MAPPING[test_set.entry(name).category]
    assert test_set.resolve("waves") == len(EXPECTED_ORDER) - 1      # extension may be left out
    assert test_set.by_category() == {
        "Animation": ["mecha.mp4", "toon_b.mp4", "toon_a.mp4", "toon_c.mp4"],
        "Flat_Content": ["lecture.mp4", "deck.mp4"],
        "Gaming": ["shooter.mp4", "lap_02.mp4", "lap_01.mp4"],
        "Natural_Content": ["waves.mp4"]}
    test_set.close()


def test_unknown_name_suggests_close_matches(tmp_path):
    test_set = TestSet(*write_original_test_set(tmp_path))
    with pytest.raises(UnknownVideo) as err:
        test_set.resolve("toon_d.mp4")
    assert isinstance(err.value, KeyError)
    assert "toon_a.mp4" in err.value.suggestions
    assert "unknown test-set video 'toon_d.mp4'; did you mean" in str(err.value)
    with pytest.raises(UnknownVideo, match="unknown test-set video 'zzz'$"):
        test_set.resolve("zzz")


def test_index_and_features_of_different_sizes_are_refused(tmp_path):
    features_dir, processed = write_original_test_set(tmp_path)
    extra = processed / "Gaming" / "zz_extra"
    extra.mkdir()
    torch.save({"filenames": ["extra.mp4"], "videos": torch.zeros(0, dtype=torch.uint8)},
               extra / "processed_data.pt")
    with pytest.raises(ValueError, match="lists 11 videos but .* has 10 rows"):
        TestSet(features_dir, processed).resolve("waves.mp4")


def test_written_index_round_trips_and_h5_names_take_precedence(tmp_path):
    entries = [("b.mp4", "Gaming", "fps"), ("a.mp4", "Animation", "anime"), ("c.mp4", "Gaming", "fps"),
               ("d.mp4", "Animation", None)]
    thumbs = {name: np.full((2, 2, 3), i, np.uint8) for i, (name, _, _) in enumerate(entries)}
    ordered = write_processed_index(tmp_path / "processed", entries, thumbnails=thumbs)
    assert [e.name for e in ordered] == ["a.mp4", "d.mp4", "b.mp4", "c.mp4"]
    assert build_name_index(tmp_path / "processed") == ordered
    stored = torch.load(tmp_path / "processed" / "Gaming" / "fps" / "processed_data.pt", weights_only=True)
    assert stored["filenames"] == ["b.mp4", "c.mp4"] and stored["videos"].shape == (2, 2, 2, 3)

    # Our features files name their rows: the processed index is then not needed at all.
    pipeline = Pipeline(backbone_dim=3, num_frames=2, scales=())
    features_dir = tmp_path / "features"
    with FeatureStoreWriter(features_dir / "test_features_multiscale.h5", pipeline,
                            category_mapping=MAPPING) as writer:
        for i, e in enumerate(reversed(ordered)):
            writer.add(e.name, np.full((2, 3), i, np.float32), 2, MAPPING[e.category], subcategory=e.subcategory)
    test_set = TestSet(features_dir, tmp_path / "missing")
    assert test_set.resolve("a.mp4") == 3 and test_set.row("a.mp4")[0][0, 0] == 3
    assert test_set.entry("b.mp4") == IndexEntry("b.mp4", "Gaming", "fps")
    assert test_set.by_category()["Animation"] == ["d.mp4", "a.mp4"]
