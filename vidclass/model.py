"""The classifiers (the original temporal model and our pooled linear one) and their checkpoint format.

SuperEnhancedTemporalModel's module names and shapes follow the original research project exactly (see the shared design
note seed-compat.md), so its `best_ensemble_model_N.pt` files load with strict=True. Our own
checkpoints use the same dict format and add `pipeline`, `class_names` and `subcategory_names`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vidclass import CLASS_NAMES
from vidclass.pipeline import ORIGINAL_PIPELINE, Pipeline

log = logging.getLogger(__name__)

DEFAULT_CONFIG = {
    # ours: "temporal" is the original BiLSTM + attention model (SuperEnhancedTemporalModel);
    # "pooled" is PooledLinearModel. Files without the key are original, hence temporal.
    "arch": "temporal",
    "feature_dim": 1280,
    "hidden_dim": 768,
    "num_classes": 4,
    "num_lstm_layers": 4,
    "num_attention_heads": 12,
    "dropout": 0.4,
    "bidirectional": True,
    "num_subcategories": 0,   # ours: > 0 adds `subcategory_head`; 0 keeps original checkpoints strict
    # ours: True adds `input_mean`/`input_std` buffers (set from the training data) that
    # standardise each feature, so small groups such as content statistics are not drowned by
    # the 1280 CNN features. False keeps original checkpoints strict.
    "input_norm": False,
    # ours, PooledLinearModel only: "mean" pools each feature's mean over time; "mean_std" adds its
    # standard deviation over time (how much a feature changes within the clip: motion, cuts),
    # then re-centres and scales the pooled vector with buffers set in training.
    "pooling": "mean",
    # ours: class logits are divided by this before the softmax (temperature scaling, fitted on
    # cross-validated predictions so confidences are calibrated). 1.0 = as trained.
    "temperature": 1.0,
}


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the model it describes."""


def normalize_config(config: dict | None) -> dict:
    """Model config with the original's aliases resolved and defaults filled; unknown keys dropped."""
    config = dict(config or {})
    if "feature_dim" not in config and "input_dim" in config:
        config["feature_dim"] = config["input_dim"]
    out = {}
    for key, default in DEFAULT_CONFIG.items():
        value = config.get(key, default)
        if value is None:
            value = default
        out[key] = type(default)(value)   # numpy ints/bools from old files -> plain python
    return out


class ClipClassifier(nn.Module):
    """What every model shares: `_pooled(x, lengths)` -> one vector per clip, read by `classifier`
    and the optional `subcategory_head` (None when the config has no subcategories)."""

    subcategory_head: nn.Module | None

    @property
    def has_subcategories(self) -> bool:
        return self.subcategory_head is not None

    def forward_all(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """(class logits [B, C] divided by the config's temperature, subcategory logits [B, S] or None)."""
        pooled = self._pooled(x, lengths)
        sub = self.subcategory_head(pooled) if self.subcategory_head is not None else None
        return self.classifier(pooled) / self.config.get("temperature", 1.0), sub

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits [B, num_classes] for features x [B, T, D] whose first lengths[b] steps are real."""
        return self.forward_all(x, lengths)[0]


class SuperEnhancedTemporalModel(ClipClassifier):
    """Projection -> (packed) LSTM -> self-attention -> masked attention pooling -> MLP classifier."""

    def __init__(self, config: dict | None = None, **overrides):
        super().__init__()
        cfg = normalize_config({**(config or {}), **overrides, "arch": "temporal"})
        self.config = cfg
        d, h = cfg["feature_dim"], cfg["hidden_dim"]
        p = cfg["dropout"]
        out_dim = h * (2 if cfg["bidirectional"] else 1)
        if out_dim % cfg["num_attention_heads"]:
            raise ValueError(f"LSTM output width {out_dim} is not divisible by "
                             f"num_attention_heads={cfg['num_attention_heads']}")
        self.output_dim = out_dim

        if cfg["input_norm"]:
            self.register_buffer("input_mean", torch.zeros(d))
            self.register_buffer("input_std", torch.ones(d))
        self.input_projection = nn.Sequential(nn.Linear(d, h), nn.LayerNorm(h), nn.ReLU(), nn.Dropout(p))
        self.lstm = nn.LSTM(h, h, num_layers=cfg["num_lstm_layers"], batch_first=True,
                            bidirectional=cfg["bidirectional"],
                            dropout=p if cfg["num_lstm_layers"] > 1 else 0.0)
        self.attention = nn.MultiheadAttention(out_dim, cfg["num_attention_heads"], dropout=p,
                                               batch_first=True)
        self.attention_norm = nn.LayerNorm(out_dim)
        self.attention_pooling = nn.Sequential(
            nn.Linear(out_dim, h), nn.LayerNorm(h), nn.Tanh(), nn.Dropout(p), nn.Linear(h, 1))
        self.classifier = nn.Sequential(
            nn.Linear(out_dim, 768), nn.LayerNorm(768), nn.ReLU(), nn.Dropout(p),
            nn.Linear(768, 512), nn.LayerNorm(512), nn.ReLU(), nn.Dropout(p),
            nn.Linear(512, 256), nn.LayerNorm(256), nn.ReLU(), nn.Dropout(p),
            nn.Linear(256, cfg["num_classes"]))
        if cfg["num_subcategories"] > 0:
            self.subcategory_head = nn.Linear(out_dim, cfg["num_subcategories"])
        else:
            self.subcategory_head = None

    def _pooled(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        batch, steps, _ = x.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long)
        # A zero length would break packing; a row always has at least one (possibly zero) step.
        lengths = torch.as_tensor(lengths).to("cpu", torch.long).clamp(1, steps)
        pad_mask = torch.arange(steps)[None, :] >= lengths[:, None]          # True = padding
        pad_mask = pad_mask.to(x.device)

        if self.config["input_norm"]:
            x = (x - self.input_mean) / self.input_std
        x = self.input_projection(x)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)

        attn, _ = self.attention(out, out, out, key_padding_mask=pad_mask, need_weights=False)
        out = self.attention_norm(out + attn)

        scores = self.attention_pooling(out).squeeze(-1)                       # [B, T]
        scores = scores.masked_fill(pad_mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.bmm(weights.unsqueeze(1), out).squeeze(1)                 # [B, out_dim]

class PooledLinearModel(ClipClassifier):
    """Pool over time -> dropout -> linear class (and subcategory) heads.

    A linear model of the clip's average frame ("mean" pooling) or of each feature's mean and
    standard deviation over time ("mean_std"). On the corpus's few dozen sources per class it
    generalises to unseen sources better than the BiLSTM, which has the capacity to learn each
    training source's look (BENCHMARKS.md, "Feature study"). Same inputs, outputs and checkpoint
    format as SuperEnhancedTemporalModel; hidden_dim, layers and heads are unused.

    With "mean_std", `pooled_mean` and `pooled_scale` [2 * feature_dim] standardise the pooled
    vector and weight each feature block (backbone, content statistics, ...) to an equal share of
    the variance, so a 25-value block is not drowned by a 1536-value one (vidclass.linear sets them).
    """

    def __init__(self, config: dict | None = None, **overrides):
        super().__init__()
        cfg = normalize_config({**(config or {}), **overrides, "arch": "pooled"})
        if cfg["pooling"] not in ("mean", "mean_std"):
            raise ValueError(f"unknown pooling {cfg['pooling']!r}; known: 'mean', 'mean_std'")
        self.config = cfg
        d = cfg["feature_dim"]
        if cfg["input_norm"]:
            self.register_buffer("input_mean", torch.zeros(d))
            self.register_buffer("input_std", torch.ones(d))
        pooled_dim = 2 * d if cfg["pooling"] == "mean_std" else d
        if cfg["pooling"] == "mean_std":
            self.register_buffer("pooled_mean", torch.zeros(pooled_dim))
            self.register_buffer("pooled_scale", torch.ones(pooled_dim))
        self.dropout = nn.Dropout(cfg["dropout"])
        self.classifier = nn.Linear(pooled_dim, cfg["num_classes"])
        self.subcategory_head = (nn.Linear(pooled_dim, cfg["num_subcategories"])
                                 if cfg["num_subcategories"] > 0 else None)

    def pool(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled (and, for mean_std, standardised) clip vector, before dropout."""
        batch, steps, _ = x.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long)
        lengths = torch.as_tensor(lengths).to(x.device, torch.long).clamp(1, steps)
        valid = (torch.arange(steps, device=x.device)[None, :] < lengths[:, None]).to(x.dtype).unsqueeze(-1)
        if self.config["input_norm"]:
            x = (x - self.input_mean) / self.input_std
        n = lengths.unsqueeze(-1).to(x.dtype)
        mean = (x * valid).sum(1) / n
        if self.config["pooling"] == "mean":
            return mean
        var = (((x - mean.unsqueeze(1)) ** 2) * valid).sum(1) / n
        pooled = torch.cat([mean, var.clamp(min=0).sqrt()], dim=1)
        return (pooled - self.pooled_mean) * self.pooled_scale

    def _pooled(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return self.dropout(self.pool(x, lengths))


ARCHITECTURES = {"temporal": SuperEnhancedTemporalModel, "pooled": PooledLinearModel}


def build_model(config: dict | None = None) -> nn.Module:
    """The model a config describes (its "arch", default the original temporal model)."""
    cfg = normalize_config(config)
    if cfg["arch"] not in ARCHITECTURES:
        raise ValueError(f"unknown model arch {cfg['arch']!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[cfg["arch"]](cfg)


@dataclass
class LoadedModel:
    model: nn.Module
    config: dict
    pipeline: Pipeline
    class_names: tuple[str, ...]
    subcategory_names: list[str] | None
    metrics: dict = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""
    epoch: int | None = None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_plain(value, keep_tensors: bool = False):
    """numpy values (and tensors unless keep_tensors) -> python values.

    Metrics become JSON-able, and a checkpoint of plain values and tensors loads with weights_only=True.
    """
    if isinstance(value, dict):
        return {k: to_plain(v, keep_tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v, keep_tensors) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, torch.Tensor) and not keep_tensors:
        return value.tolist()
    return value


def _infer_from_state(state: dict) -> dict:
    """Config values readable from weight shapes, for checkpoints whose config lacks them."""
    inferred = {}
    if "classifier.weight" in state:          # PooledLinearModel: one linear layer
        w = state["classifier.weight"]
        mean_std = "pooled_scale" in state
        inferred.update(arch="pooled", num_classes=int(w.shape[0]), pooling="mean_std" if mean_std else "mean",
                        feature_dim=int(w.shape[1]) // (2 if mean_std else 1))
    elif "lstm.weight_ih_l0" in state:
        inferred["arch"] = "temporal"
    w = state.get("input_projection.0.weight")
    if w is not None:
        inferred["hidden_dim"], inferred["feature_dim"] = int(w.shape[0]), int(w.shape[1])
    w = state.get("classifier.12.weight")
    if w is not None:
        inferred["num_classes"] = int(w.shape[0])
    layers = [k for k in state if k.startswith("lstm.weight_ih_l") and not k.endswith("_reverse")]
    if layers:
        inferred["num_lstm_layers"] = len(layers)
        inferred["bidirectional"] = "lstm.weight_ih_l0_reverse" in state
    w = state.get("subcategory_head.weight")
    inferred["num_subcategories"] = int(w.shape[0]) if w is not None else 0
    inferred["input_norm"] = "input_mean" in state
    return inferred


def _read_pipeline(raw) -> Pipeline:
    if raw is None:
        return ORIGINAL_PIPELINE
    if isinstance(raw, Pipeline):
        return raw
    if isinstance(raw, (str, bytes)):
        return Pipeline.from_json(raw)
    return Pipeline.from_dict(dict(raw))


def load_checkpoint(path: str | os.PathLike, trusted: bool = True,
                    device: str | torch.device = "cpu") -> LoadedModel:
    """Load an original or vidclass checkpoint strictly, in eval mode.

    trusted=True (the operator's own models folder) allows pickled python objects such as the
    numpy scalars in the original `metrics`; anything uploaded must use trusted=False.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, ...)
        hint = "" if trusted else " (loaded with weights_only=True: untrusted files may hold only tensors and plain values)"
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}{hint}") from exc
    if isinstance(ckpt, dict) and "model_state_dict" not in ckpt and ckpt and all(
            isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = {"model_state_dict": ckpt}       # a bare state_dict
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a model checkpoint (no 'model_state_dict')")
    state = ckpt["model_state_dict"]

    raw_config = ckpt.get("model_config") or ckpt.get("config") or {}
    raw_config = dict(raw_config) if isinstance(raw_config, dict) else {}
    if "feature_dim" not in raw_config and "input_dim" in raw_config:
        raw_config["feature_dim"] = raw_config["input_dim"]
    # The weights are the truth for shapes; the config only supplies what shapes cannot tell.
    config = normalize_config({**raw_config, **_infer_from_state(state)})

    try:
        model = build_model(config)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path} does not fit {config['arch']} model {config}: {exc}") from exc
    model.to(device).eval()

    class_names = tuple(ckpt.get("class_names") or CLASS_NAMES)
    if len(class_names) != config["num_classes"]:
        raise CheckpointError(f"{path}: {len(class_names)} class names for {config['num_classes']} outputs")
    sub_names = ckpt.get("subcategory_names")
    sub_names = [str(s) for s in sub_names] if sub_names else None
    if config["num_subcategories"] and (sub_names is None or len(sub_names) != config["num_subcategories"]):
        raise CheckpointError(f"{path}: subcategory head has {config['num_subcategories']} outputs "
                              f"but the checkpoint names {len(sub_names or [])} subcategories")
    try:
        pipeline = _read_pipeline(ckpt.get("pipeline"))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable pipeline record: {exc}") from exc

    epoch = ckpt.get("epoch")
    return LoadedModel(model=model, config=config, pipeline=pipeline, class_names=class_names,
                       subcategory_names=sub_names, metrics=to_plain(ckpt.get("metrics") or {}),
                       path=path, sha256=file_sha256(path),
                       epoch=int(epoch) if epoch is not None else None)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: dict, pipeline: Pipeline,
                    class_names=CLASS_NAMES, subcategory_names=None, metrics=None, epoch=None,
                    **extra) -> Path:
    """Write the original dict format plus our pipeline/class/subcategory records.

    Everything except the weights is stored as plain python values so the file also loads with
    weights_only=True. Written to a temporary file and renamed, so a crash never leaves half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": normalize_config(config),
        "epoch": epoch,
        "metrics": to_plain(metrics or {}),
        "pipeline": pipeline.to_dict(),
        "class_names": list(class_names),
        "subcategory_names": list(subcategory_names) if subcategory_names else None,
    }
    payload.update({k: to_plain(v, keep_tensors=True) for k, v in extra.items()})
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
