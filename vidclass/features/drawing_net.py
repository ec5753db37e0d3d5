"""nsfwjs's MobileNetV2 "drawing vs photo" network, ported to torch, loaded offline.

The npm package nsfwjs@4.3.0 (MIT, github.com/infinitered/nsfwjs) bundles a Keras MobileNetV2
(224x224, alpha 1.0) with a 256 -> 128 -> 5 head, classes Drawing, Hentai, Neutral, Porn, Sexy,
trained on a large set of drawings and photographs. Its 128-d `dense_2` activations and its
Drawing probability help tell camera footage from synthetic pictures.

`load_drawing_net().extract(frames uint8 [n, H, W, 3] RGB) -> float32 [n, 133]`:
columns 0..127 are `dense_2` after its ReLU (as the Keras model computes it; dropout is off at
inference), columns 128..132 the softmax probabilities in nsfwjs's class order (CLASSES).

Preprocessing is nsfwjs's own (`NSFWJS.infer` in dist/esm/core.js): the whole frame, RGB / 255,
then `tf.image.resizeBilinear(x, [224, 224], alignCorners=true)` (aspect ratio not kept) unless it
is already 224x224. torch's `interpolate(mode="bilinear", align_corners=True)` is the same formula.

Weights: the package's own files, unchanged (`dist/models/mobilenet_v2/model.min.js`, a browserify
bundle exporting the TF.js model.json object, and `group1-shard1of1.min.js`, exporting the weight
bytes as one base64 string), put in `<sys.prefix>/share/nsfwjs-4.3.0/mobilenet_v2/` by
`make venv` (tools/fetch_nsfwjs.sh, integrity-checked). `VIDCLASS_NSFWJS_DIR` points elsewhere;
a folder in the standard TF.js layout (model.json + shard files) works too. Nothing is downloaded
at run time. The network is built from the model's Keras topology (not hand-written), so padding
(explicit ZeroPadding2D before the stride-2 convolutions, TF's bottom/right 'same' padding),
strides and layer order are the model's own. It matches nsfwjs on TF.js within ~2e-6 absolute
(activations up to ~1.6; tests/test_drawing_net.py).

Runtimes, as for the Lite0 backbone: "torch" (reference), "onnx" (ONNX Runtime on a model exported
once to $VIDCLASS_CACHE_DIR, keyed by the weights' digest) and "auto" (onnx if it works). At batch
8 on one thread of this project's CPU: ~30 frames/s with torch, ~50 with ONNX Runtime.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np

from vidclass.features.backbone import BackboneError, export_once, source_digest

NSFWJS_VERSION = "4.3.0"
CLASSES = ("Drawing", "Hentai", "Neutral", "Porn", "Sexy")
EMBED_LAYER = "dense_2"
EMBED_DIM = 128
FEATURE_DIM = EMBED_DIM + len(CLASSES)          # 133
DRAWING = EMBED_DIM + CLASSES.index("Drawing")  # column of the Drawing probability
INPUT_SIZE = 224
DEFAULT_BATCH = 8
MODEL_FILE = "model.min.js"

log = logging.getLogger(__name__)


def default_dir() -> Path:
    return Path(sys.prefix) / "share" / f"nsfwjs-{NSFWJS_VERSION}" / "mobilenet_v2"


def nsfwjs_dir() -> Path:
    """The folder holding the model files: $VIDCLASS_NSFWJS_DIR, else the one `make venv` fills."""
    return Path(os.environ.get("VIDCLASS_NSFWJS_DIR") or default_dir())


def _model_file(folder: Path) -> Path:
    for name in (MODEL_FILE, "model.json"):
        if (folder / name).is_file():
            return folder / name
    where = "$VIDCLASS_NSFWJS_DIR" if os.environ.get("VIDCLASS_NSFWJS_DIR") else "the default folder"
    raise BackboneError(
        f"nsfwjs MobileNetV2 model files not found in {folder} ({where}; wanted {MODEL_FILE} or "
        f"model.json). Run `make venv`: it fetches npm's nsfwjs@{NSFWJS_VERSION} (needs npm, once) "
        f"and unpacks its dist/models/mobilenet_v2 into {default_dir()}. Elsewhere, run "
        f"`sh tools/fetch_nsfwjs.sh DIR {NSFWJS_VERSION} INTEGRITY` (INTEGRITY: see the Makefile) "
        f"and set VIDCLASS_NSFWJS_DIR=DIR/mobilenet_v2")


# --- reading the TF.js files ------------------------------------------------------------------

# The bundles are minified JavaScript, not JSON: unquoted keys, !0/!1 for true/false, numbers like
# .5 or -.5. One regex tokenises the object literal; each token is rewritten as JSON.
_TOKEN = re.compile(r'''\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
                        |(?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
                        |(?P<bool>![01])
                        |(?P<ident>[A-Za-z_$][\w$]*)
                        |(?P<punct>[{}\[\]:,]))''', re.X)


def parse_js_object(text: str, start: int) -> dict:
    """The JavaScript object literal that begins at text[start] ('{'), as Python objects."""
    out, depth, pos = [], 0, start
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"unexpected JavaScript at offset {pos}: {text[pos:pos + 40]!r}")
        pos = m.end()
        kind, tok = m.lastgroup, m.group(m.lastgroup)
        if kind == "str" and tok[0] == "'":
            tok = json.dumps(tok[1:-1].replace("\\'", "'"))
        elif kind == "num":
            neg, body = tok.startswith("-"), tok.lstrip("-")
            body = ("0" + body if body.startswith(".") else body).replace(".e", ".0e").replace(".E", ".0E")
            tok = ("-" if neg else "") + (body + "0" if body.endswith(".") else body)
        elif kind == "bool":
            tok = "true" if tok == "!0" else "false"
        elif kind == "ident" and tok not in ("true", "false", "null"):
            tok = json.dumps(tok)            # an object key
        elif kind == "punct":
            depth += tok in "{["
            depth -= tok in "}]"
        out.append(tok)
        if depth == 0:
            return json.loads("".join(out))


def _bundle_export(path: Path) -> str:
    """The text after `.exports=` of a browserify bundle's module (what the module exports); the
    UMD header's `module.exports=e()` is skipped by asking for an object or string literal."""
    text = path.read_text()
    m = re.search(r"\.exports\s*=\s*(?=[{\"])", text)
    if m is None:
        raise BackboneError(f"{path} is not an nsfwjs model bundle (no module.exports)")
    return text[m.end():]


def read_model_json(folder: Path) -> dict:
    path = _model_file(folder)
    if path.name == "model.json":
        return json.loads(path.read_text())
    rest = _bundle_export(path)
    return parse_js_object(rest, 0)


def _shard_bytes(folder: Path, name: str) -> bytes:
    if (folder / name).is_file():                     # standard TF.js layout: raw shard files
        return (folder / name).read_bytes()
    bundle = folder / f"{name}.min.js"                # nsfwjs: base64 in a JS bundle
    if not bundle.is_file():
        raise BackboneError(f"nsfwjs weight shard {name} missing in {folder}; run `make venv`")
    m = re.match(r'"([A-Za-z0-9+/=]*)"', _bundle_export(bundle))
    if m is None:
        raise BackboneError(f"{bundle} does not export a base64 string")
    return base64.b64decode(m.group(1))


def read_weights(folder: Path, model_json: dict) -> dict[str, np.ndarray]:
    """name -> float32 array in Keras layout, dequantised as TF.js does (q * scale + min)."""
    weights = {}
    for group in model_json["weightsManifest"]:
        data = b"".join(_shard_bytes(folder, p) for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"], dtype=np.int64))
            q = spec.get("quantization")
            if q is None:
                if spec["dtype"] != "float32":
                    raise BackboneError(f"unsupported weight dtype {spec['dtype']} ({spec['name']})")
                values = np.frombuffer(data, np.float32, count, offset)
                offset += 4 * count
            elif q["dtype"] in ("uint8", "uint16") and "scale" in q:
                qtype = np.dtype(q["dtype"])
                raw = np.frombuffer(data, qtype, count, offset)
                offset += qtype.itemsize * count
                # TF.js computes this in float64 (JS numbers) and stores float32: do the same.
                values = (raw.astype(np.float64) * q["scale"] + q["min"]).astype(np.float32)
            else:
                raise BackboneError(f"unsupported weight quantisation {q} ({spec['name']})")
            weights[spec["name"]] = values.reshape(spec["shape"])
        if offset != len(data):
            raise BackboneError(f"weight shards hold {len(data)} bytes, the manifest {offset}")
    return weights


def weights_sha256(folder: Path | None = None) -> str:
    """sha256 over the model and weight files (names and bytes): identifies the weights."""
    folder = Path(folder or nsfwjs_dir())
    model = _model_file(folder)
    digest = hashlib.sha256()
    for path in [model] + sorted(p for p in folder.iterdir()
                                 if p.name.startswith("group") and p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# --- the torch network, built from the Keras topology ------------------------------------------

def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF 'same' padding: the extra pixel of an odd total goes after (bottom/right)."""
    eff = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def _build_keras_graph(model_json: dict, weights: dict[str, np.ndarray]):
    import torch
    import torch.nn.functional as F
    from torch import nn

    def param(name):
        return nn.Parameter(torch.from_numpy(np.ascontiguousarray(weights.pop(name))),
                            requires_grad=False)

    def activation(name):
        if name in ("linear", None):
            return lambda x: x
        if name == "relu":
            return F.relu
        if name == "softmax":
            return lambda x: F.softmax(x, dim=-1)
        raise BackboneError(f"unsupported Keras activation {name!r}")

    class Conv(nn.Module):
        """Conv2D / DepthwiseConv2D, channels first, with TF's 'same'/'valid' padding."""

        def __init__(self, cfg, kernel, bias, depthwise):
            super().__init__()
            kh, kw, cin, cout = kernel.shape
            if depthwise:     # Keras [kh, kw, in, mult] -> torch [in * mult, 1, kh, kw]
                self.weight = nn.Parameter(kernel.permute(2, 3, 0, 1).reshape(cin * cout, 1, kh, kw),
                                           requires_grad=False)
                self.groups = cin
            else:             # Keras [kh, kw, in, out] -> torch [out, in, kh, kw]
                self.weight = nn.Parameter(kernel.permute(3, 2, 0, 1).contiguous(), requires_grad=False)
                self.groups = 1
            self.bias = bias
            self.stride = tuple(cfg["strides"])
            self.dilation = tuple(cfg["dilation_rate"])
            self.same = cfg["padding"] == "same"
            self.act = activation(cfg.get("activation"))

        def forward(self, x):
            if self.same:
                (kh, kw), (sh, sw), (dh, dw) = self.weight.shape[2:], self.stride, self.dilation
                top, bottom = _same_pad(x.shape[2], kh, sh, dh)
                left, right = _same_pad(x.shape[3], kw, sw, dw)
                if top or bottom or left or right:
                    x = F.pad(x, (left, right, top, bottom))
            x = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
            return self.act(x)

    def make(layer):
        cls, cfg, name = layer["class_name"], layer["config"], layer["name"]
        if cls in ("Conv2D", "DepthwiseConv2D"):
            if cfg.get("data_format", "channels_last") != "channels_last":
                raise BackboneError(f"{name}: only channels_last Keras models are supported")
            key = "depthwise_kernel" if cls == "DepthwiseConv2D" else "kernel"
            bias = param(f"{name}/bias") if cfg.get("use_bias") else None
            return Conv(cfg, param(f"{name}/{key}"), bias, cls == "DepthwiseConv2D")
        if cls == "BatchNormalization":
            if cfg.get("axis", -1) not in (-1, 3):
                raise BackboneError(f"{name}: batch normalisation over axis {cfg['axis']}")
            n = weights[f"{name}/moving_mean"].shape[0]
            bn = nn.BatchNorm2d(n, eps=cfg["epsilon"]).eval()
            bn.running_mean.copy_(torch.from_numpy(weights.pop(f"{name}/moving_mean")))
            bn.running_var.copy_(torch.from_numpy(weights.pop(f"{name}/moving_variance")))
            # center/scale False would mean no beta/gamma: keep the identity defaults then.
            if cfg.get("scale", True):
                bn.weight = param(f"{name}/gamma")
            if cfg.get("center", True):
                bn.bias = param(f"{name}/beta")
            return bn
        if cls == "ReLU":
            if cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
                raise BackboneError(f"{name}: leaky/thresholded ReLU not supported")
            top = cfg.get("max_value")
            return (lambda x: x.clamp(0, top)) if top is not None else F.relu
        if cls == "ZeroPadding2D":
            (t, b), (l, r) = cfg["padding"]
            return lambda x: F.pad(x, (l, r, t, b))
        if cls == "AveragePooling2D":
            if cfg["padding"] != "valid":
                raise BackboneError(f"{name}: only 'valid' average pooling is supported")
            return lambda x: F.avg_pool2d(x, tuple(cfg["pool_size"]), tuple(cfg["strides"]))
        if cls == "GlobalAveragePooling2D":
            return lambda x: x.mean(dim=(2, 3))
        if cls == "Flatten":   # Keras flattens channels_last: H, W, C order
            return lambda x: x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)
        if cls == "Dense":
            lin = nn.Linear(*weights[f"{name}/kernel"].shape)
            lin.weight = nn.Parameter(param(f"{name}/kernel").T.contiguous(), requires_grad=False)
            lin.bias = param(f"{name}/bias") if cfg.get("use_bias", True) else None
            act = activation(cfg.get("activation"))

            class Dense(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.lin = lin

                def forward(self, x):
                    return act(self.lin(x))
            return Dense()
        if cls == "Dropout":
            return lambda x: x
        if cls == "Add":
            return None        # handled in forward: sums its inputs
        raise BackboneError(f"unsupported Keras layer {cls} ({name})")

    class Lambda(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    config = model_json["modelTopology"]["model_config"]["config"]
    if model_json["modelTopology"]["model_config"]["class_name"] not in ("Model", "Functional"):
        raise BackboneError("expected a Keras functional model (TF.js layers format)")

    class KerasGraph(nn.Module):
        """The Keras functional graph; forward(x NCHW) -> the requested layers' outputs."""

        def __init__(self, outputs):
            super().__init__()
            self.layers = nn.ModuleDict()
            self.plan = []            # (name, input names), in the topology's (topological) order
            for layer in config["layers"]:
                name = layer["name"]
                if layer["class_name"] == "InputLayer":
                    self.input_name = name
                    continue
                nodes = layer["inbound_nodes"]
                if len(nodes) != 1:
                    raise BackboneError(f"{name}: shared layers are not supported")
                module = make(layer)
                if module is not None:
                    self.layers[name] = module if isinstance(module, nn.Module) else Lambda(module)
                self.plan.append((name, [inbound[0] for inbound in nodes[0]]))
            self.outputs = list(outputs)
            # Only the layers the outputs need; what nothing later reads is dropped early.
            needed, keep = set(self.outputs), []
            for name, inputs in reversed(self.plan):
                if name in needed:
                    keep.append((name, inputs))
                    needed.update(inputs)
            self.plan = keep[::-1]
            if weights:
                raise BackboneError(f"weights not used by any layer: {sorted(weights)[:5]}")

        def forward(self, x):
            values = {self.input_name: x}
            for name, inputs in self.plan:
                if name in self.layers:
                    values[name] = self.layers[name](values[inputs[0]])
                else:                                   # Add
                    total = values[inputs[0]]
                    for other in inputs[1:]:
                        total = total + values[other]
                    values[name] = total
            return [values[name] for name in self.outputs]

    return KerasGraph


def build_module(folder: Path | None = None):
    """A torch module: uint8 frames [n, H, W, 3] -> float32 [n, 133] (preprocessing included)."""
    import torch
    import torch.nn.functional as F

    folder = Path(folder or nsfwjs_dir())
    model_json = read_model_json(folder)
    graph_cls = _build_keras_graph(model_json, read_weights(folder, model_json))
    out_layer = model_json["modelTopology"]["model_config"]["config"]["output_layers"][0][0]

    class DrawingModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.graph = graph_cls([EMBED_LAYER, out_layer])

        def forward(self, frames):
            x = frames.permute(0, 3, 1, 2).float() / 255.0       # nsfwjs divides, then resizes
            # nsfwjs skips the resize of a 224x224 image; with align_corners that resize is the
            # identity anyway, and an unconditional one exports to ONNX without a traced branch.
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=True)
            embed, probs = self.graph(x)
            return torch.cat([embed, probs], dim=1)

    module = DrawingModule().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module




def onnx_path(folder: Path | None = None) -> Path:
    from vidclass.features.backbone import cache_dir

    # Keyed by the weights and by the code that builds the module, so an edit to either is
    # exported anew and a stale export is never reused.
    return cache_dir() / (f"nsfwjs-mobilenet_v2-{weights_sha256(folder)[:16]}-"
                          f"{source_digest(Path(__file__))[:12]}.onnx")


def export_onnx(folder: Path | None = None, module=None) -> Path:
    """Export the torch module to ONNX once, in $VIDCLASS_CACHE_DIR, keyed by the weights' digest
    and the module's source (atomic rename: safe across processes). Input uint8 [n, H, W, 3], any n, H, W."""
    def dummy():
        import torch
        return torch.zeros(2, 240, 320, 3, dtype=torch.uint8)

    return export_once(onnx_path(folder), lambda: module if module is not None else build_module(folder),
                       dummy,
                       {"frames": {0: "n", 1: "h", 2: "w"}, "features": {0: "n"}}, "nsfwjs MobileNetV2")


class DrawingNet:
    """`.extract(frames uint8 [n, H, W, 3] RGB) -> float32 [n, 133]`: dense_2 (128) + CLASSES probs.

    runtime "torch" (the reference), "onnx" (ONNX Runtime on the exported module, ~1.7x faster on
    this CPU, same outputs within 1e-5) or "auto" (onnx when it works, else torch). One thread by
    default: workers run several extractors side by side on few cores."""

    dim = FEATURE_DIM
    classes = CLASSES

    def __init__(self, folder: Path | None = None, batch_size: int = DEFAULT_BATCH,
                 runtime: str = "auto", threads: int = 1):
        if runtime not in ("auto", "torch", "onnx"):
            raise ValueError(f"runtime must be auto, torch or onnx, got {runtime!r}")
        self.folder = Path(folder or nsfwjs_dir())
        _model_file(self.folder)      # the actionable error before anything else
        self.batch_size = batch_size
        self.threads = threads
        self.runtime = runtime
        if runtime in ("auto", "onnx"):
            try:
                self._start_onnx()
                return
            except BackboneError:
                raise
            except Exception as exc:   # noqa: BLE001 - fall back to the reference runtime
                if runtime == "onnx":
                    raise
                log.warning("ONNX Runtime drawing net unavailable (%s); using torch", exc)
        self._start_torch()

    def _start_torch(self, module=None):
        import torch

        torch.set_num_threads(self.threads)
        self.module = module if module is not None else build_module(self.folder)
        self.runtime = "torch"

    def _start_onnx(self):
        import onnxruntime as ort

        self.path = export_onnx(self.folder)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No arena: it keeps the peak of every run allocated (~120 MB of a CLI call's 480 MB
        # peak RSS), for under 0.1 s a clip (BENCHMARKS.md, lean inference).
        opts.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.runtime = "onnx"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.runtime == "onnx":
            return self.session.run(["features"], {"frames": batch})[0]
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).numpy()

    def extract(self, frames: np.ndarray, progress=None) -> np.ndarray:
        """Features of every frame, in batches of batch_size; progress(done_fraction) after each."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames [n, H, W, 3], got {frames.dtype} {frames.shape}")
        out = np.empty((len(frames), self.dim), dtype=np.float32)
        for start in range(0, len(frames), self.batch_size):
            batch = np.ascontiguousarray(frames[start:start + self.batch_size])
            out[start:start + len(batch)] = self._run(batch)
            if progress is not None:
                progress(min(1.0, (start + len(batch)) / len(frames)))
        return out

    def drawing_probability(self, frames: np.ndarray) -> np.ndarray:
        """nsfwjs's Drawing probability of each frame, float32 [n]."""
        return self.extract(frames)[:, DRAWING]


_nets: dict = {}
_nets_lock = threading.Lock()


def load_drawing_net(runtime: str = "auto", batch_size: int = DEFAULT_BATCH) -> DrawingNet:
    """The DrawingNet for nsfwjs_dir(), built once per process and runtime (BackboneError with
    what to do when the model files are absent)."""
    key = (str(nsfwjs_dir()), runtime, batch_size)
    with _nets_lock:
        if key not in _nets:
            _nets[key] = DrawingNet(Path(key[0]), batch_size, runtime)
        return _nets[key]
