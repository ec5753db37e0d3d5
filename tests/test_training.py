"""Training writes an ensemble in the original checkpoint format that loads and evaluates."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vidclass import CLASS_NAMES
from vidclass.features.backbone import LITE0_STAGES, default_pipeline
from vidclass.training.dataset import extract_dataset
from vidclass.model.ensemble import Ensemble
from vidclass.training.evaluate import evaluate, tta_views
from vidclass.model.checkpoint import load_checkpoint
from vidclass.training.train import TrainConfig, train_ensemble

from test_dataset import FIXTURE_LABELS, labelled_folder


@pytest.fixture(scope="module")
def fixture_features(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    root = labelled_folder(tmp / "data", FIXTURE_LABELS)
    out = tmp / "features"
    extract_dataset(root, out, default_pipeline(extras=("content_stats_v1",), backbone=LITE0_STAGES),
                    test_fraction=0, val_fraction=0, show_progress=False)
    # One clip per class: validation on the training clips checks the machinery, not generalisation.
    shutil.copy(out / "train_features_multiscale.h5", out / "val_features_multiscale.h5")
    return out


@pytest.mark.parametrize("arch", ["pooled", "temporal"])
def test_train_ensemble_writes_loadable_members_and_manifest(fixture_features, tmp_path, arch):
    # The previous release's SGD recipe (mean pooling), kept for the BiLSTM and old configs.
    cfg = TrainConfig(num_models=2, epochs=25, patience=25, hidden_dim=32, num_attention_heads=2,
                      batch_size=4, threads=1, arch=arch, pooling="mean")
    manifest = train_ensemble(fixture_features, tmp_path, cfg, show_progress=False)

    assert manifest["members"] == ["best_ensemble_model_1.pt", "best_ensemble_model_2.pt"]
    assert manifest["class_names"] == list(CLASS_NAMES)
    assert manifest["subcategories"] == sorted(f"{c}/{s}" for c, s in FIXTURE_LABELS.values())
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["training_data"]["sha256"] == manifest["training_data"]["sha256"]

    member = load_checkpoint(tmp_path / "best_ensemble_model_1.pt", trusted=False)
    assert member.config["hidden_dim"] == 32 and member.config["arch"] == arch
    assert member.pipeline.backbone == LITE0_STAGES
    assert member.pipeline.extras == ("content_stats_v1",)
    assert member.subcategory_names == manifest["subcategories"]

    ensemble = Ensemble.load(tmp_path)
    result = evaluate(ensemble, fixture_features / "train_features_multiscale.h5", tmp_path / "report")
    assert result["plain"]["num_samples"] == 4
    assert np.asarray(result["plain"]["confusion_matrix"]).sum() == 4
    assert len(result["tta"]["members"]) == 2
    # Four well-separated real clips are easy to fit: the recipe must learn them.
    assert result["plain"]["accuracy"] >= 0.75
    assert result["plain"]["subcategory_num_seen"] == 4
    assert (tmp_path / "report" / "confusion_matrix.png").stat().st_size > 1000


def test_tta_views_keep_only_valid_steps():
    x = np.zeros((1, 6, 2), dtype=np.float32)
    x[0, :5, 0] = np.arange(1, 6)
    views = list(tta_views(x, np.array([5])))
    assert [v[1].tolist() for v in views] == [[5], [3], [2], [5]]
    assert views[1][0][0, :3, 0].tolist() == [1, 3, 5]
    assert views[2][0][0, :2, 0].tolist() == [2, 4]
    assert views[3][0][0, :5, 0].tolist() == [5, 4, 3, 2, 1]
    assert not views[3][0][0, 5:].any()


def test_subcategory_is_picked_within_the_predicted_class():
    from vidclass.model.ensemble import pick_subcategory

    names = ["Animation/stills_motion", "Gaming/racing", "Gaming/stills_motion"]
    probs = np.array([0.5, 0.3, 0.2])
    assert pick_subcategory(names, probs, "Gaming") == ("racing", pytest.approx(0.6))
    assert pick_subcategory(names, probs, "Animation") == ("stills_motion", pytest.approx(1.0))
    # Unqualified names (older checkpoints) are taken as they are.
    assert pick_subcategory(["a", "b"], np.array([0.2, 0.8]), "Gaming") == ("b", pytest.approx(0.8))
