"""Device choice of classification workers: CUDA when present, never required."""
import pytest

from worker import accel


def test_auto_uses_cuda_only_when_present(monkeypatch):
    monkeypatch.delenv("CLASSIFY_DEVICE", raising=False)
    assert accel.choose_device(cuda_available=False) == "cpu"
    assert accel.choose_device(cuda_available=True) == "cuda"
    assert accel.choose_device("cuda:1", cuda_available=True) == "cuda:1"
    assert accel.choose_device("cpu", cuda_available=True) == "cpu"
    # Asked for CUDA on a CPU-only machine: a warning, and the CPU (nothing requires a GPU).
    assert accel.choose_device("cuda", cuda_available=False) == "cpu"
    with pytest.raises(ValueError):
        accel.choose_device("tpu", cuda_available=False)


def test_configure_on_this_machine_keeps_the_cpu_backbone(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CPU path is tested on CPU-only machines")
    monkeypatch.setenv("CLASSIFY_DEVICE", "auto")

    class FakeClassifier:
        device = None

        def use_backbone(self, _):
            raise AssertionError("no GPU backbone on a CPU-only machine")

    c = FakeClassifier()
    assert accel.configure(c) == "cpu" and c.device == "cpu"
