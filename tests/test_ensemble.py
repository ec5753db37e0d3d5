"""Ensemble loading (manifest or the original four files) and prediction."""
import json
import logging

import numpy as np
import pytest
import torch

from vidclass import CLASS_NAMES
from vidclass.model.ensemble import Ensemble, NoModelsError
from vidclass.model.bilstm import SuperEnhancedTemporalModel
from vidclass.model.checkpoint import save_checkpoint
from vidclass.features.pipeline import ORIGINAL_PIPELINE, Pipeline, PipelineMismatch

torch.set_num_threads(1)

SMALL = {"feature_dim": 24, "hidden_dim": 16, "num_lstm_layers": 1, "num_attention_heads": 4,
         "num_classes": 4, "dropout": 0.0, "bidirectional": True}


def _original_member(path, seed):
    torch.manual_seed(seed)
    model = SuperEnhancedTemporalModel(SMALL).eval()
    torch.save({"model_state_dict": model.state_dict(), "model_config": SMALL,
                "metrics": {"accuracy": np.float64(0.9)}}, path)
    return model


def test_original_folder_skips_missing_member_with_warning(tmp_path, caplog):
    models = {i: _original_member(tmp_path / f"best_ensemble_model_{i}.pt", seed=i) for i in (1, 2, 4)}
    with caplog.at_level(logging.WARNING, logger="vidclass.model.ensemble"):
        ens = Ensemble.load(tmp_path, device="cpu")
    assert "best_ensemble_model_3.pt" in caplog.text
    assert len(ens.members) == 3
    assert ens.pipeline == ORIGINAL_PIPELINE
    assert len(ens.version) == 12

    x = np.random.default_rng(0).standard_normal((5, 7, 24)).astype(np.float32)
    lengths = np.array([7, 3, 1, 5, 7])
    pred = ens.predict(x, lengths, batch_size=2)
    assert pred.member_probs.shape == (3, 5, 4) and pred.probs.shape == (5, 4)
    with torch.inference_mode():
        expected = torch.stack([torch.softmax(models[i](torch.from_numpy(x), torch.from_numpy(lengths)), 1)
                                for i in (1, 2, 4)]).numpy()
    np.testing.assert_allclose(pred.member_probs, expected, atol=1e-6)
    np.testing.assert_allclose(pred.probs, expected.mean(0), atol=1e-6)

    result = pred.result_dict(1)
    top = int(expected.mean(0)[1].argmax())
    assert result["label"] == CLASS_NAMES[top]
    assert result["confidence"] == pytest.approx(float(expected.mean(0)[1, top]))
    assert list(result["probabilities"]) == list(CLASS_NAMES)
    assert len(result["members"]) == 3
    assert result["agreement"] == pytest.approx(np.mean(expected[:, 1].argmax(1) == top))
    assert result["subcategory"] is None and result["subcategory_confidence"] is None
    assert result["pipeline"] == ORIGINAL_PIPELINE.to_dict()
    assert result["model_version"] == ens.version
    json.dumps(result)   # JSON-able as-is


def test_zero_members_is_a_clear_error(tmp_path):
    with pytest.raises(NoModelsError, match="no model checkpoints found"):
        Ensemble.load(tmp_path, device="cpu")


def test_manifest_members_and_subcategory_average(tmp_path):
    pipeline = Pipeline(backbone_dim=24)
    subs = ["kart", "fps"]
    models = []
    for i in range(2):
        torch.manual_seed(10 + i)
        config = {**SMALL, "num_subcategories": 2}
        m = SuperEnhancedTemporalModel(config).eval()
        save_checkpoint(tmp_path / f"member_{i}.pt", m, config, pipeline, subcategory_names=subs)
        models.append(m)
    # A member without a subcategory head takes part in the class vote only.
    torch.manual_seed(20)
    plain = SuperEnhancedTemporalModel(SMALL).eval()
    save_checkpoint(tmp_path / "plain.pt", plain, SMALL, pipeline)
    # An original-named file the manifest does not list must be ignored.
    _original_member(tmp_path / "best_ensemble_model_1.pt", seed=5)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"members": ["member_0.pt", "member_1.pt", "plain.pt"], "class_names": list(CLASS_NAMES)}))

    ens = Ensemble.load(tmp_path, device="cpu")
    assert [m.path.name for m in ens.members] == ["member_0.pt", "member_1.pt", "plain.pt"]
    assert ens.pipeline == pipeline and ens.subcategory_names == subs
    x = torch.randn(3, 4, 24)
    pred = ens.predict(x, [4, 2, 4])
    with torch.inference_mode():
        sub = [torch.softmax(m.forward_all(x, torch.tensor([4, 2, 4]))[1], 1) for m in models]
    np.testing.assert_allclose(pred.subcategory_probs, ((sub[0] + sub[1]) / 2).numpy(), atol=1e-6)
    r = pred.result_dict(0)
    assert r["subcategory"] == subs[int(pred.subcategory_probs[0].argmax())]
    assert r["subcategory_confidence"] == pytest.approx(float(pred.subcategory_probs[0].max()))


def test_members_with_different_pipelines_are_refused(tmp_path):
    a = SuperEnhancedTemporalModel(SMALL)
    save_checkpoint(tmp_path / "a.pt", a, SMALL, Pipeline(backbone_dim=24))
    save_checkpoint(tmp_path / "b.pt", a, SMALL, Pipeline(backbone_dim=24, input_size=256))
    (tmp_path / "manifest.json").write_text(json.dumps({"members": ["a.pt", "b.pt"]}))
    with pytest.raises(PipelineMismatch, match="a.pt") as err:
        Ensemble.load(tmp_path, device="cpu")
    assert "b.pt" in str(err.value) and "256px" in str(err.value) and "224px" in str(err.value)


def test_feature_width_is_checked(tmp_path):
    _original_member(tmp_path / "best_ensemble_model_1.pt", seed=0)
    ens = Ensemble.load(tmp_path, device="cpu")
    with pytest.raises(ValueError, match=r"\[N, T, 24\]"):
        ens.predict(np.zeros((1, 5, 1280), np.float32), [5])
