"""The linear recipes (frames, pooled, baseline): source-weighted logistic regressions,
cross-validated by source family with locked families and a gate, calibrated, and written as
loadable checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidclass import CLASS_NAMES
from vidclass.features.backbone import shipped_pipeline
from vidclass.training.crossval import (calibration, ensemble_probs, fit_temperature, folds, locked_families,
                                        uncertain_threshold)
from vidclass.training.dataset import extract_dataset
from vidclass.model.ensemble import Ensemble
from vidclass.training.linear_fit import fit_frame_member, fit_logistic, fit_member, pool_clips, source_weights
from vidclass.model.checkpoint import load_checkpoint, save_checkpoint
from vidclass.model.taxonomy import taxonomy_subcategory
from vidclass.training.train import TrainConfig, train_ensemble

from test_dataset import FIXTURE_LABELS, labelled_folder


def test_every_source_and_class_weighs_the_same():
    labels = [0, 0, 0, 0, 1, 1]
    families = ["a", "a", "a", "b", "c", "d"]
    w = source_weights(labels, families)
    assert w[:3].sum() == pytest.approx(w[3])            # source a (3 clips) = source b (1 clip)
    assert w[:4].sum() == pytest.approx(w[4:].sum())       # class 0 = class 1
    assert w.mean() == pytest.approx(1.0)


def test_dual_and_primal_fits_find_the_same_solution():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    x = rng.normal(size=(40, 12)) + y[:, None] * 0.5
    w = rng.uniform(0.5, 1.5, 40)
    W_primal, b_primal = fit_logistic(x, y, w, 3, l2=0.1)                 # 40 clips > 12 features
    wide = np.concatenate([x, np.zeros((40, 60))], 1)                      # 40 clips < 72 features
    W_dual, b_dual = fit_logistic(wide, y, w, 3, l2=0.1)
    assert np.abs(W_dual[:, 12:]).max() < 1e-6
    np.testing.assert_allclose(W_dual[:, :12], W_primal, atol=1e-3)
    np.testing.assert_allclose(b_dual, b_primal, atol=1e-3)


def test_member_round_trips_through_a_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 7, 5)).astype(np.float32)
    y = np.arange(30) % 4
    x[:, :, 0] += y[:, None]
    lengths = np.full(30, 7)
    lengths[::3] = 4
    pooled = pool_clips(x, lengths)
    model = fit_member(pooled, y, [str(i % 6) for i in range(30)], [("a", 3), ("b", 2)], 4, 1e-3,
                       temperature=2.0)
    save_checkpoint(tmp_path / "m.pt", model, model.config, shipped_pipeline())
    loaded = load_checkpoint(tmp_path / "m.pt", trusted=False)
    assert loaded.config["pooling"] == "mean_std" and loaded.config["temperature"] == 2.0
    with torch.no_grad():
        a = model(torch.as_tensor(x), torch.as_tensor(lengths))
        b = loaded.model(torch.as_tensor(x), torch.as_tensor(lengths))
    torch.testing.assert_close(a, b)
    assert (a.argmax(1).numpy() == y).mean() > 0.9
    # padding past a clip's length changes nothing
    x2 = x.copy()
    x2[0, 4:] = 99
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(torch.as_tensor(x2), torch.as_tensor(lengths))[0], b[0])


def test_temperature_is_recovered_and_calibration_measured():
    rng = np.random.default_rng(2)
    true_logits = rng.normal(scale=2.0, size=(4000, 4))
    probs = ensemble_probs(true_logits[None])
    labels = np.array([rng.choice(4, p=p) for p in probs])
    # A model three times too confident: the fitted temperature undoes it.
    assert fit_temperature(3 * true_logits[None], labels) == pytest.approx(3.0, rel=0.15)
    assert calibration(probs, labels)["ece"] < 0.03
    assert calibration(ensemble_probs(3 * true_logits[None]), labels)["ece"] > 0.1


def test_folds_hold_out_whole_sources():
    fams = ["a", "a", "b", "c", "d", "s"]
    evaluable = [True, True, True, True, True, False]
    assert folds(fams, evaluable) == [["a"], ["b"], ["c"], ["d"]]      # stills-only "s" is never scored
    grouped = folds(fams, evaluable, k=2)
    assert sorted(sum(grouped, [])) == ["a", "b", "c", "d"] and len(grouped) == 2


def test_taxonomy_merges_thin_folders_and_drops_provenance_folders():
    assert taxonomy_subcategory("Flat_Content", "code_editor") == "Flat_Content/code_terminal"
    assert taxonomy_subcategory("Gaming", "packaged_gameplay") is None
    assert taxonomy_subcategory("Natural_Content", "stills_motion") is None
    assert taxonomy_subcategory("Gaming", "my_own_folder") == "Gaming/my_own_folder"


def test_shipped_recipe_end_to_end_on_real_clips(tmp_path):
    """Real fixture clips through the shipped pipeline (Lite0, content statistics, drawing net),
    cross-validation, calibration and the report; the ensemble loads and classifies."""
    root = labelled_folder(tmp_path / "data", FIXTURE_LABELS)
    features = tmp_path / "features"
    extract_dataset(root, features, shipped_pipeline(), test_fraction=0, val_fraction=0,
                    show_progress=False)
    cfg = TrainConfig(num_models=2, curve_repeats=1, threads=1)
    manifest = train_ensemble(features, tmp_path / "models", cfg, show_progress=False,
                              reports_dir=tmp_path / "reports")
    report = json.loads((tmp_path / "reports" / "crossval.json").read_text())
    # One source per class: each held-out clip's class is absent from its fold's training set,
    # so cross-validation must get every one wrong; that it reports so checks the bookkeeping.
    assert report["num_clips"] == 4 and report["num_sources"] == 4 and report["accuracy"] == 0.0
    assert report["learning_curve"] and 0.2 - 1e-9 <= report["temperature"] <= 10 + 1e-9
    for name in ("reliability.png", "learning_curve.png", "confusion_matrix.png"):
        assert (tmp_path / "reports" / name).stat().st_size > 1000
    ensemble = Ensemble.load(tmp_path / "models")
    assert ensemble.pipeline == shipped_pipeline()
    assert ensemble.members[0].config["temperature"] == pytest.approx(report["temperature"])
    assert manifest["thresholds"]["uncertain_below"] == report["uncertain"]["threshold"]
    # The gate: the shipped recipe beside the baseline and the previous recipe, on the same folds.
    assert set(report["gate"]["candidates"]) == {"frames", "baseline", "pooled"}
    assert report["recipe"] == "pooled" and ensemble.members[0].config["pooling"] == "mean_std"
    assert report["gate"]["candidates"]["baseline"]["family_folds"]["num_clips"] == 4
    # Fitted on all four clips, it must tell them apart.
    from vidclass.features.store import FeatureStore
    data = FeatureStore(features / "train_features.h5").read_all()
    pred = ensemble.predict(data["features"], data["num_frames"])
    assert (pred.labels == data["labels"]).all()
    result = pred.result_dict(0)
    assert result["label"] in CLASS_NAMES and isinstance(result["uncertain"], bool)


def test_frame_member_averages_its_frames_log_probabilities(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(24, 6, 5)).astype(np.float32)
    y = np.arange(24) % 4
    x[:, :, 1] += 2 * y[:, None]
    lengths = np.full(24, 6)
    lengths[::2] = 3
    families = [str(i % 8) for i in range(24)]
    model = fit_frame_member(x, lengths, y, families, [("a", 3), ("b", 2)], 4, 1e-3,
                             subcategories=list(np.arange(24) % 2), num_subcategories=2, temperature=1.5)
    assert model.config["pooling"] == "frames" and model.subcategory_head is not None
    with torch.no_grad():
        logits, sub = model.forward_all(torch.as_tensor(x), torch.as_tensor(lengths))
        z = (torch.as_tensor(x[0, :3]) - model.frame_mean) * model.frame_scale
        by_hand = torch.log_softmax(model.classifier(z), -1).mean(0) / 1.5
    torch.testing.assert_close(logits[0], by_hand)
    assert (logits.argmax(1).numpy() == y).mean() > 0.9 and sub.shape == (24, 2)
    save_checkpoint(tmp_path / "f.pt", model, model.config, shipped_pipeline(), subcategory_names=["s0", "s1"])
    loaded = load_checkpoint(tmp_path / "f.pt", trusted=False)
    x2 = x.copy()
    x2[0, 3:] = 99                      # padding past the length changes nothing
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(torch.as_tensor(x2), torch.as_tensor(lengths)), logits)


def test_locked_families_are_a_fixed_share_of_each_class():
    families = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(5)] + ["s"]
    labels = [0] * 10 + [1] * 5 + [1]
    evaluable = [True] * 15 + [False]
    locked = locked_families(families, labels, evaluable, share=0.2)
    assert len({f for f in locked if f.startswith("a")}) == 2 and len({f for f in locked if f.startswith("b")}) == 1
    assert "s" not in locked                            # stills-only families are never scored
    assert locked == locked_families(list(reversed(families)), list(reversed(labels)), list(reversed(evaluable)))
    assert locked != locked_families(families, labels, evaluable, salt="another draw")


def test_uncertain_threshold_is_the_lowest_that_meets_the_target():
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1, 1])              # the two least confident are wrong
    assert uncertain_threshold(probs, labels, 0.9) == pytest.approx(0.71)
    assert uncertain_threshold(probs, labels, 0.5) == pytest.approx(0.30)


def test_clip_vector_is_the_models_mean_std_pooling():
    """The pooled vector every finished job keeps (numpy) equals the model's own pooling (torch)."""
    from vidclass.features.extract import clip_vector

    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 9, 6)).astype(np.float32)
    lengths = np.array([9, 5, 1])
    x[1, 5:] = 0.0
    pooled = pool_clips(x, lengths)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(clip_vector(x[i], n), pooled[i], atol=1e-5)
