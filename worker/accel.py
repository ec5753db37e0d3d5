"""Where a classification worker runs the model: CUDA when present, else the CPU (nothing needs a GPU).

CLASSIFY_DEVICE=auto picks CUDA when torch sees a GPU. The backbone then runs on ONNX Runtime's
CUDA provider when the onnxruntime-gpu wheel is installed, else on torch CUDA, in batches of
GPU_BATCH_SIZE frames; the ensemble runs on the same device. On a CPU-only machine (or with
CLASSIFY_DEVICE=cpu) nothing changes: the default CPU backbone and batches.

Imported only inside classification worker processes (torch only when a GPU is there).
"""
from __future__ import annotations

import logging

import numpy as np

from db import settings

log = logging.getLogger(__name__)


def choose_device(requested: str | None = None, cuda_available=None) -> str:
    """"cpu" or "cuda[:N]" for CLASSIFY_DEVICE (auto: CUDA if torch sees a GPU)."""
    requested = (requested or settings.get("CLASSIFY_DEVICE") or "auto").strip().lower()
    if requested == "cpu":
        return "cpu"
    if cuda_available is None:         # without an NVIDIA device, known without importing torch
        from vidclass.model.ensemble import default_device

        cuda_available = default_device() == "cuda"
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not cuda_available:
            log.warning("CLASSIFY_DEVICE=%s but torch sees no CUDA device; using the CPU", requested)
            return "cpu"
        return requested
    raise ValueError(f"CLASSIFY_DEVICE must be auto, cpu, cuda or cuda:N, got {requested!r}")


def ort_cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def gpu_backbone(pipeline, device: str, batch_size: int | None = None):
    """A backbone on the GPU for this pipeline: ONNX Runtime CUDA if installed, else torch CUDA."""

    batch_size = batch_size or settings.get("GPU_BATCH_SIZE")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if ort_cuda_available():
        try:
            return _OrtCuda(pipeline, batch_size, index)
        except Exception as exc:   # noqa: BLE001 - a broken CUDA provider: fall back to torch
            log.warning("ONNX Runtime CUDA provider failed (%s); using torch CUDA", exc)
    return _TorchCuda(pipeline, batch_size, device)


def _base():
    from vidclass.features.backbone import Backbone

    return Backbone


class _TorchCuda(_base()):
    runtime = "torch-cuda"

    def __init__(self, pipeline, batch_size: int, device: str):
        super().__init__(pipeline, batch_size)
        import torch

        from vidclass.features.backbone import _build_module

        self.device = torch.device(device)
        self.module = _build_module(pipeline).to(self.device).eval()

    def _run(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(x).to(self.device, non_blocking=True))
            return out.float().cpu().numpy()


class _OrtCuda(_base()):
    runtime = "onnx-cuda"

    def __init__(self, pipeline, batch_size: int, device_id: int):
        super().__init__(pipeline, batch_size)
        import onnxruntime as ort

        from vidclass.features.backbone import export_onnx

        path = export_onnx(pipeline)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(path), opts,
            providers=[("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"])
        if "CUDAExecutionProvider" not in self.session.get_providers():
            raise RuntimeError("the session did not get the CUDA provider")

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["features"], {"frames": x})[0]


def configure(classifier) -> str:
    """Put a freshly made Classifier on the chosen device; returns the device used."""
    device = choose_device()
    classifier.device = device
    if device != "cpu":
        pipeline = classifier.ensemble.pipeline       # loads the ensemble on `device`
        classifier.use_backbone(gpu_backbone(pipeline, device))
        log.info("classification on %s (backbone %s, batch %d)", device,
                 classifier.extractor.backbone.runtime, settings.get("GPU_BATCH_SIZE"))
    return device
