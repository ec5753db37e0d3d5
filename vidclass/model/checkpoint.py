"""The checkpoint format: build a model from its config, load and save the original's files and ours.

Original `best_ensemble_model_N.pt` files load with strict=True. Our own checkpoints use the same
dict format and add `pipeline`, `class_names` and `subcategory_names`; the config travels with
the weights and names the architecture (`arch`).
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vidclass import CLASS_NAMES
from vidclass.features.backbone import file_sha256
from vidclass.features.pipeline import ORIGINAL_PIPELINE, Pipeline
from vidclass.model.bilstm import SuperEnhancedTemporalModel
from vidclass.model.clip_classifier import normalize_config
from vidclass.model.pooled_linear import PooledLinearModel

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the model it describes."""


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
        pooling = "frames" if "frame_scale" in state else "mean_std" if mean_std else "mean"
        inferred.update(arch="pooled", num_classes=int(w.shape[0]), pooling=pooling,
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
