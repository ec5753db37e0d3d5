"""Classifier facade: test-set names (original layout), pipeline checks, real video files."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vidclass import CLASS_NAMES
from vidclass.model.classify import Classifier
from vidclass.features.store import FeatureStoreWriter
from vidclass.model.bilstm import SuperEnhancedTemporalModel
from vidclass.model.checkpoint import save_checkpoint
from vidclass.model.name_index import UnknownVideo, write_processed_index
from vidclass.features.pipeline import Pipeline, PipelineMismatch

from original_layout import MAPPING, write_original_features

torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures"
# Original feature width (1280) so the original pipeline applies; small everywhere else.
CONFIG = {"feature_dim": 1280, "hidden_dim": 16, "num_lstm_layers": 1, "num_attention_heads": 4,
          "num_classes": 4, "dropout": 0.0, "bidirectional": True}
ENTRIES = [("walk.mp4", "Natural_Content", "street"), ("kart.mp4", "Gaming", "racing"),
           ("toon.mp4", "Animation", "cartoon"), ("slides.mp4", "Flat_Content", "slides"),
           ("fps.mp4", "Gaming", "shooter")]


@pytest.fixture
def original_assets(tmp_path):
    """The original project's three folders: two checkpoints, an h5 without names, a name index."""
    models = []
    models_dir = tmp_path / "models_enhanced"
    models_dir.mkdir()
    for i in (1, 2):
        torch.manual_seed(i)
        model = SuperEnhancedTemporalModel(CONFIG).eval()
        torch.save({"model_state_dict": model.state_dict(), "model_config": CONFIG,
                    "metrics": {"accuracy": np.float64(0.9)}}, models_dir / f"best_ensemble_model_{i}.pt")
        models.append(model)
    ordered = write_processed_index(tmp_path / "processed", ENTRIES)
    rng = np.random.default_rng(0)
    n, t = len(ordered), 6
    feats = np.zeros((n, t, 1280), np.float32)
    lengths = np.array([6, 3, 5, 2, 4], np.int32)
    for i in range(n):
        feats[i, :lengths[i]] = rng.standard_normal((lengths[i], 1280))
    features_dir = tmp_path / "features_enhanced"
    features_dir.mkdir()
    write_original_features(features_dir / "test_features_multiscale.h5", feats, lengths,
                            [MAPPING[e.category] for e in ordered])
    return {"models_dir": models_dir, "features_dir": features_dir, "processed_dir": tmp_path / "processed",
            "models": models, "ordered": ordered, "features": feats, "lengths": lengths}


def _expected_probs(models, x, length):
    with torch.inference_mode():
        probs = [torch.softmax(m(torch.from_numpy(x[None]), torch.tensor([length])), 1)[0] for m in models]
    return torch.stack(probs).numpy()


def test_classify_name_uses_the_named_row(original_assets):
    a = original_assets
    clf = Classifier(a["models_dir"], a["features_dir"], a["processed_dir"], device="cpu")
    for i, entry in enumerate(a["ordered"]):
        result = clf.classify_target(entry.name)
        members = _expected_probs(a["models"], a["features"][i], a["lengths"][i])
        mean = members.mean(0)
        assert result["target"] == entry.name
        assert result["true_label"] == entry.category
        assert result["label"] == CLASS_NAMES[int(mean.argmax())]
        np.testing.assert_allclose([result["probabilities"][c] for c in CLASS_NAMES], mean, atol=1e-6)
        np.testing.assert_allclose([[m[c] for c in CLASS_NAMES] for m in result["members"]], members, atol=1e-6)
        assert result["subcategory"] is None
        assert result["pipeline"]["backbone"] == "efficientnet-v2-s"
        assert set(result["timings"]) == {"read_s", "classify_s"} and result["elapsed_s"] >= 0
        json.dumps(result)
    with pytest.raises(UnknownVideo, match="did you mean 'kart.mp4'"):
        clf.classify_target("karts.mp4")


def test_test_accuracy_matches_per_row_predictions(original_assets):
    a = original_assets
    clf = Classifier(a["models_dir"], a["features_dir"], a["processed_dir"], device="cpu")
    report = clf.test_accuracy()
    predicted = [clf.classify_name(e.name)["label"] for e in a["ordered"]]
    truth = [e.category for e in a["ordered"]]
    assert report["num_samples"] == 5
    assert report["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(predicted, truth)]))
    assert [m["member"] for m in report["members"]] == [1, 2]
    assert report["model_version"] == clf.ensemble.version


def test_features_from_another_pipeline_are_refused(original_assets, tmp_path):
    a = original_assets
    lite = Pipeline(weights_sha256="c" * 64)          # vidclass default: Lite0, 224px
    features_dir = tmp_path / "lite_features"
    with FeatureStoreWriter(features_dir / "test_features_multiscale.h5", lite, category_mapping=MAPPING) as w:
        w.add("kart.mp4", np.ones((5, 1280), np.float32), 5, 2)
    clf = Classifier(a["models_dir"], features_dir, a["processed_dir"], device="cpu")
    with pytest.raises(PipelineMismatch) as err:
        clf.classify_name("kart.mp4")
    message = str(err.value)
    assert "efficientnet-lite0" in message and "efficientnet-v2-s" in message
    assert "test_features_multiscale.h5" in message and str(a["models_dir"]) in message


def test_classify_real_video_file(tmp_path):
    pytest.importorskip("vidclass.features.extract")
    from vidclass.features.backbone import default_pipeline
    from vidclass.features.extract import FeatureExtractor
    from vidclass.media.frames import VideoError

    pipeline = default_pipeline(num_frames=8)         # few frames keep the CPU test short
    torch.manual_seed(7)
    model = SuperEnhancedTemporalModel(CONFIG).eval()
    save_checkpoint(tmp_path / "models" / "m.pt", model, CONFIG, pipeline)
    (tmp_path / "models" / "manifest.json").write_text(json.dumps({"members": ["m.pt"]}))
    clf = Classifier(tmp_path / "models", device="cpu")
    clip = FIXTURES / "gaming_supertux_4.mp4"
    stages = []
    result = clf.classify_target(str(clip), progress=lambda stage, frac: stages.append(stage))

    video = FeatureExtractor(pipeline).extract_file(clip)
    expected = _expected_probs([model], video.features, video.length)[0]
    np.testing.assert_allclose([result["probabilities"][c] for c in CLASS_NAMES], expected, atol=1e-4)
    assert result["target"] == str(clip)
    assert {"sample_s", "features_s", "classify_s"} <= set(result["timings"])
    assert result["pipeline"] == pipeline.to_dict() and result["model_version"] == clf.ensemble.version
    assert stages[0] == "sampling" and stages[-1] == "classify"
    exact = clf.extractor_for(exact=True)
    assert exact.pipeline.sampling == "exact" and exact.backbone is clf.extractor.backbone

    not_a_video = tmp_path / "broken.mp4"
    shutil.copy(FIXTURES / "LICENSES.md", not_a_video)
    with pytest.raises(VideoError):
        clf.classify_file(not_a_video)


def test_missing_file_path_is_reported_as_a_missing_file(tmp_path):
    from vidclass.model.classify import Classifier

    with pytest.raises(FileNotFoundError, match="no such video file"):
        Classifier().classify_target(str(tmp_path / "gone.mp4"))
