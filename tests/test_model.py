"""SuperEnhancedTemporalModel and checkpoints in the original research project's format."""
import numpy as np
import pytest
import torch

from vidclass import CLASS_NAMES
from vidclass.model.bilstm import SuperEnhancedTemporalModel
from vidclass.model.checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint
from vidclass.model.pooled_linear import PooledLinearModel
from vidclass.features.pipeline import ORIGINAL_PIPELINE, Pipeline

torch.set_num_threads(1)

SMALL = {"input_dim": 24, "hidden_dim": 16, "num_lstm_layers": 2, "num_attention_heads": 4,
         "num_classes": 4, "dropout": 0.1, "bidirectional": True}


def _outputs(model, x, lengths):
    with torch.inference_mode():
        return model(x, lengths)


def _original_checkpoint(path, model, config_key, config):
    """What the original training script saved: numpy scalars and all (needs weights_only=False)."""
    torch.save({"model_state_dict": model.state_dict(), config_key: config,
                "epoch": np.int64(7), "optimizer_state_dict": {"state": {}, "param_groups": []},
                "metrics": {"accuracy": np.float64(0.921), "f1": np.float32(0.92)},
                "history": {"val_acc": [np.float64(0.5), np.float64(0.9)]}}, path)


def test_default_config_original_checkpoint_loads_strictly(tmp_path):
    torch.manual_seed(0)
    model = SuperEnhancedTemporalModel().eval()
    # Exactly the keys the original files carry (spot checks of seed-compat.md's layout).
    state = model.state_dict()
    assert state["lstm.weight_ih_l0_reverse"].shape == (4 * 768, 768)
    assert state["lstm.weight_ih_l3_reverse"].shape == (4 * 768, 1536)
    assert state["attention.in_proj_weight"].shape == (3 * 1536, 1536)
    assert state["classifier.12.weight"].shape == (4, 256)
    assert {k.split(".")[1] for k in state if k.startswith("classifier.")} == {"0", "1", "4", "5", "8", "9", "12"}
    assert not any(k.startswith("subcategory_head") for k in state)

    path = tmp_path / "best_ensemble_model_2.pt"
    _original_checkpoint(path, model, "model_config",
                         {"feature_dim": 1280, "hidden_dim": 768, "num_classes": 4})
    x = torch.randn(2, 73, 1280)
    lengths = torch.tensor([73, 30])
    expected = _outputs(model, x, lengths)

    first = load_checkpoint(path)
    second = load_checkpoint(path)
    assert not first.model.training
    assert first.config == {"arch": "temporal", "feature_dim": 1280, "hidden_dim": 768, "num_classes": 4, "num_lstm_layers": 4,
                            "num_attention_heads": 12, "dropout": 0.4, "bidirectional": True,
                            "num_subcategories": 0, "input_norm": False, "pooling": "mean",
                            "temperature": 1.0}
    assert first.pipeline == ORIGINAL_PIPELINE
    assert first.class_names == CLASS_NAMES
    assert first.subcategory_names is None
    assert first.metrics == {"accuracy": pytest.approx(0.921), "f1": pytest.approx(0.92)}
    assert isinstance(first.metrics["accuracy"], float)
    assert first.epoch == 7
    assert len(first.sha256) == 64 and first.sha256 == second.sha256
    assert torch.equal(_outputs(first.model, x, lengths), expected)
    assert torch.equal(_outputs(second.model, x, lengths), expected)


def test_small_config_under_config_key_with_input_dim_alias(tmp_path):
    torch.manual_seed(1)
    model = SuperEnhancedTemporalModel(SMALL).eval()
    path = tmp_path / "m.pt"
    _original_checkpoint(path, model, "config", SMALL)
    loaded = load_checkpoint(path)
    assert loaded.config["feature_dim"] == 24 and loaded.config["num_attention_heads"] == 4
    x, lengths = torch.randn(3, 9, 24), torch.tensor([9, 4, 1])
    assert torch.equal(_outputs(loaded.model, x, lengths), _outputs(model, x, lengths))
    assert torch.equal(_outputs(load_checkpoint(path).model, x, lengths), _outputs(model, x, lengths))


def test_untrusted_load_refuses_pickled_numpy(tmp_path):
    model = SuperEnhancedTemporalModel(SMALL)
    path = tmp_path / "m.pt"
    _original_checkpoint(path, model, "config", SMALL)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path, trusted=False)


def test_wrong_weights_are_a_clear_error(tmp_path):
    model = SuperEnhancedTemporalModel(SMALL)
    state = model.state_dict()
    del state["attention_norm.weight"]
    path = tmp_path / "m.pt"
    torch.save({"model_state_dict": state, "config": SMALL}, path)
    with pytest.raises(CheckpointError, match="attention_norm.weight"):
        load_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt")


@pytest.mark.parametrize("bidirectional", [True, False])
def test_zero_padding_does_not_change_the_output(bidirectional):
    torch.manual_seed(2)
    model = SuperEnhancedTemporalModel({**SMALL, "bidirectional": bidirectional}).eval()
    seq = torch.randn(1, 6, 24)
    padded = torch.cat([seq, torch.zeros(1, 10, 24)], dim=1)
    noisy_pad = torch.cat([seq, torch.randn(1, 10, 24)], dim=1)   # past the length nothing counts
    alone = _outputs(model, seq, torch.tensor([6]))
    assert torch.allclose(_outputs(model, padded, torch.tensor([6])), alone, atol=1e-6)
    assert torch.allclose(_outputs(model, noisy_pad, torch.tensor([6])), alone, atol=1e-6)
    # Batched with a longer row, the short row's result is the same too.
    batch = torch.cat([padded, torch.randn(1, 16, 24)])
    assert torch.allclose(_outputs(model, batch, torch.tensor([6, 16]))[:1], alone, atol=1e-6)
    # Without lengths every step counts, so padding would matter: lengths are really used.
    assert not torch.allclose(_outputs(model, padded, None), alone, atol=1e-4)


def test_save_checkpoint_round_trip_with_subcategories(tmp_path):
    torch.manual_seed(3)
    config = {**SMALL, "feature_dim": 24, "num_subcategories": 3}
    model = SuperEnhancedTemporalModel(config).eval()
    pipeline = Pipeline(weights_sha256="ab" * 32, extras=("content_stats_v1",), extras_dim=8,
                        backbone_dim=16)
    path = save_checkpoint(tmp_path / "out" / "member_1.pt", model, config, pipeline,
                           class_names=CLASS_NAMES, subcategory_names=["a", "b", "c"],
                           metrics={"accuracy": np.float64(0.5)}, epoch=4)
    raw = torch.load(path, weights_only=True)   # plain values only: loadable untrusted
    assert set(raw) >= {"model_state_dict", "model_config", "epoch", "metrics", "pipeline",
                        "class_names", "subcategory_names"}
    loaded = load_checkpoint(path, trusted=False)
    assert loaded.pipeline == pipeline
    assert loaded.subcategory_names == ["a", "b", "c"]
    assert loaded.config["num_subcategories"] == 3
    x = torch.randn(2, 5, 24)
    with torch.inference_mode():
        logits, sub = loaded.model.forward_all(x, torch.tensor([5, 2]))
        ref_logits, ref_sub = model.forward_all(x, torch.tensor([5, 2]))
    assert sub.shape == (2, 3)
    assert torch.equal(logits, ref_logits) and torch.equal(sub, ref_sub)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        SuperEnhancedTemporalModel({**SMALL, "num_attention_heads": 5})


def test_input_norm_buffers_travel_with_the_weights(tmp_path):
    import torch

    from vidclass.model.checkpoint import build_model, save_checkpoint

    config = {"feature_dim": 6, "hidden_dim": 8, "num_lstm_layers": 1, "num_attention_heads": 2,
              "input_norm": True}
    model = build_model(config)
    model.input_mean.copy_(torch.arange(6.0))
    model.input_std.copy_(torch.full((6,), 2.0))
    save_checkpoint(tmp_path / "m.pt", model, config, ORIGINAL_PIPELINE, list(CLASS_NAMES))
    loaded = load_checkpoint(tmp_path / "m.pt", trusted=False)
    assert loaded.config["input_norm"] is True
    assert torch.equal(loaded.model.input_mean, torch.arange(6.0))
    x = torch.randn(2, 5, 6)
    model.eval()
    with torch.inference_mode():
        assert torch.allclose(loaded.model(x), model(x))
        # Standardising is part of the model: shifting the input by the stored mean changes nothing
        # compared with a model that has no normalisation but sees pre-standardised input.
        plain = build_model({**config, "input_norm": False})
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in ("input_mean", "input_std")})
        plain.eval()
        assert torch.allclose(plain((x - torch.arange(6.0)) / 2.0), model(x), atol=1e-6)


def test_pooled_model_round_trip_and_padding(tmp_path):
    torch.manual_seed(0)
    config = {"arch": "pooled", "feature_dim": 6, "num_subcategories": 3, "input_norm": True, "dropout": 0.5}
    model = build_model(config).eval()
    assert isinstance(model, PooledLinearModel)
    model.input_mean.copy_(torch.linspace(-1, 1, 6))
    model.input_std.copy_(torch.linspace(0.5, 2, 6))
    x = torch.randn(2, 5, 6)
    lengths = torch.tensor([5, 2])
    padded = x.clone()
    padded[1, 2:] = 1e3                   # whatever sits in the padding must not matter
    logits = _outputs(model, x, lengths)
    assert torch.allclose(logits, _outputs(model, padded, lengths))
    # The model is linear in the mean of the standardised valid steps.
    mean1 = ((x[1, :2] - model.input_mean) / model.input_std).mean(0)
    assert torch.allclose(logits[1], model.classifier(mean1), atol=1e-5)

    path = tmp_path / "pooled.pt"
    save_checkpoint(path, model, model.config, Pipeline(backbone_dim=6), list(CLASS_NAMES),
                    subcategory_names=["Animation/a", "Gaming/b", "Gaming/c"])
    loaded = load_checkpoint(path, trusted=False)
    assert isinstance(loaded.model, PooledLinearModel)
    assert loaded.config["arch"] == "pooled" and loaded.config["num_subcategories"] == 3
    assert torch.allclose(_outputs(loaded.model, x, lengths), logits)
    # A bare state dict (no config) is recognised as pooled by its weights.
    torch.save(build_model({"arch": "pooled", "feature_dim": 6}).state_dict(), tmp_path / "bare.pt")
    assert load_checkpoint(tmp_path / "bare.pt").config["arch"] == "pooled"


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model arch 'transformer'"):
        build_model({"arch": "transformer"})
