"""Inference without torch: the shipped linear members run from their numpy sidecars, the nets
from cached ONNX exports; same results as the torch path."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidclass.features.backbone import shipped_pipeline
from vidclass.model.checkpoint import load_checkpoint, save_checkpoint
from vidclass.model.ensemble import Ensemble, load_member
from vidclass.model.numpy_linear import NumpyMember, load_sidecar, sidecar_path, write_sidecar
from vidclass.model.pooled_linear import PooledLinearModel

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO / "tests" / "fixtures" / "gaming_supertux_4.mp4"


def random_model(pooling: str, seed: int) -> PooledLinearModel:
    torch.manual_seed(seed)
    model = PooledLinearModel({"feature_dim": 6, "pooling": pooling, "num_classes": 4, "num_subcategories": 3,
                               "dropout": 0.0, "temperature": 1.7, "input_norm": pooling == "mean"})
    with torch.no_grad():
        for buffer in model.buffers():
            buffer.copy_(torch.rand_like(buffer) + 0.5)
    return model.eval()


@pytest.mark.parametrize("pooling", ["mean_std", "frames", "mean"])
def test_numpy_member_equals_the_torch_model(pooling, tmp_path):
    model = random_model(pooling, 3)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, model.config, shipped_pipeline().with_(backbone_dim=6, extras=(), extras_dim=0),
                    subcategory_names=["a", "b", "c"])
    loaded = load_checkpoint(path, trusted=True)
    write_sidecar(loaded)
    member = load_sidecar(path, loaded.sha256)
    assert isinstance(member, NumpyMember) and member.pipeline == loaded.pipeline
    x = np.random.default_rng(1).normal(size=(5, 7, 6)).astype(np.float32)
    lengths = np.array([7, 3, 1, 5, 7])
    x[1, 3:] = 0
    with torch.no_grad():
        ref_logits, ref_sub = loaded.model.forward_all(torch.as_tensor(x), torch.as_tensor(lengths))
    logits, sub = member.model.forward_all(x, lengths)
    np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sub, ref_sub.numpy(), rtol=1e-5, atol=1e-5)


def test_a_stale_sidecar_is_never_used(tmp_path):
    path = tmp_path / "m.pt"
    first = random_model("mean_std", 1)
    pipeline = shipped_pipeline().with_(backbone_dim=6, extras=(), extras_dim=0)
    save_checkpoint(path, first, first.config, pipeline, subcategory_names=["a", "b", "c"])
    write_sidecar(load_checkpoint(path, trusted=True))
    second = random_model("mean_std", 2)              # the checkpoint changes, its sidecar not
    save_checkpoint(path, second, second.config, pipeline, subcategory_names=["a", "b", "c"])
    assert load_sidecar(path, load_checkpoint(path).sha256) is None
    member = load_member(path, "cpu")                  # through torch, and the sidecar rewritten
    assert not isinstance(member, NumpyMember)
    assert isinstance(load_member(path, "cpu"), NumpyMember)
    x = np.ones((1, 4, 6), np.float32)
    with torch.no_grad():
        expected = second.forward_all(torch.as_tensor(x), torch.as_tensor([4]))[0].numpy()
    np.testing.assert_allclose(load_member(path, "cpu").model.forward_all(x, [4])[0], expected, rtol=1e-5)


CLASSIFY = """
import json, sys
from vidclass.model.classify import Classifier
r = Classifier().classify_file(sys.argv[1])
print(json.dumps({"torch": "torch" in sys.modules, "probabilities": r["probabilities"],
                  "model_version": r["model_version"]}))
"""


def test_classifying_with_the_shipped_model_leaves_torch_out(tmp_path):
    """A fresh install: the first run exports the nets and writes the numpy sidecars (torch); every
    later process classifies without importing torch, with the same probabilities."""
    models = tmp_path / "models"
    models.mkdir()
    for f in (REPO / "models_enhanced").iterdir():
        if f.suffix in (".pt", ".json"):
            shutil.copy(f, models / f.name)
    env = dict(os.environ, VIDCLASS_MODELS_DIR=str(models), VIDCLASS_CACHE_DIR=str(tmp_path / "cache"),
               OMP_WAIT_POLICY="PASSIVE")

    def run():
        out = subprocess.run([sys.executable, "-c", CLASSIFY, str(CLIP)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])
    first = run()
    assert first["torch"] is True                      # exported the nets, wrote the sidecars
    assert sorted(p.name for p in models.glob("*.npz")) == [f"best_ensemble_model_{i}.npz" for i in range(1, 5)]
    second = run()
    assert second["torch"] is False
    assert second["model_version"] == first["model_version"]
    for name, p in first["probabilities"].items():
        assert second["probabilities"][name] == pytest.approx(p, abs=1e-5)
    # The committed sidecars are current: the shipped model loads torch-free as it is.
    for pt in sorted((REPO / "models_enhanced").glob("*.pt")):
        assert sidecar_path(pt).is_file() and isinstance(load_member(pt, "cpu"), NumpyMember), pt
    assert all(isinstance(m, NumpyMember) for m in Ensemble.load(REPO / "models_enhanced", device="cpu").members)
