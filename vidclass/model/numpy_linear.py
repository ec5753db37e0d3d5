"""The pooled linear model (PooledLinearModel) in numpy: inference without torch.

The shipped members are linear heads over pooled features, so a worker or the CLI needs neither
torch nor its memory to run them. Each such checkpoint gets a sidecar `<name>.npz` beside it,
written once (by training, or the first time a torch process loads the checkpoint): the buffers
and head weights, the config, pipeline, class and subcategory names, and the sha256 of the `.pt`
it was made from. A sidecar whose recorded sha256 is not the checkpoint's is stale and is ignored
(and rewritten by the next torch load), so an edited checkpoint is never run from old weights.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidclass.features.pipeline import Pipeline

log = logging.getLogger(__name__)

# The arrays a sidecar may hold, by PooledLinearModel buffer/parameter name.
ARRAYS = ("input_mean", "input_std", "pooled_mean", "pooled_scale", "frame_mean", "frame_scale",
          "classifier.weight", "classifier.bias", "subcategory_head.weight", "subcategory_head.bias")


def sidecar_path(checkpoint: Path) -> Path:
    return Path(checkpoint).with_suffix(".npz")


@dataclass
class NumpyLinearModel:
    """A PooledLinearModel's forward in numpy (the same pooling, heads and temperature)."""
    config: dict
    arrays: dict[str, np.ndarray]

    @property
    def has_subcategories(self) -> bool:
        return "subcategory_head.weight" in self.arrays

    def forward_all(self, x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(class logits [B, C] divided by the temperature, subcategory logits or None) for
        features x [B, T, D] whose first lengths[b] steps are real."""
        a, cfg = self.arrays, self.config
        x = np.asarray(x, dtype=np.float32)
        steps = x.shape[1]
        lengths = np.clip(np.asarray(lengths, dtype=np.int64).reshape(-1), 1, steps)
        valid = (np.arange(steps)[None, :] < lengths[:, None]).astype(np.float32)[..., None]
        n = lengths[:, None].astype(np.float32)
        if cfg["input_norm"]:
            x = (x - a["input_mean"]) / a["input_std"]
        temperature = cfg.get("temperature", 1.0)
        if cfg["pooling"] == "frames":
            z = (x - a["frame_mean"]) * a["frame_scale"]

            def clip_log_probs(prefix):
                logits = z @ a[f"{prefix}.weight"].T + a[f"{prefix}.bias"]
                return (_log_softmax(logits) * valid).sum(axis=1) / n
            sub = clip_log_probs("subcategory_head") if self.has_subcategories else None
            return clip_log_probs("classifier") / temperature, sub
        mean = (x * valid).sum(axis=1) / n
        pooled = mean
        if cfg["pooling"] == "mean_std":
            var = (((x - mean[:, None, :]) ** 2) * valid).sum(axis=1) / n
            pooled = (np.concatenate([mean, np.sqrt(np.maximum(var, 0))], axis=1) - a["pooled_mean"]) \
                * a["pooled_scale"]
        sub = pooled @ a["subcategory_head.weight"].T + a["subcategory_head.bias"] if self.has_subcategories else None
        return (pooled @ a["classifier.weight"].T + a["classifier.bias"]) / temperature, sub


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@dataclass
class NumpyMember:
    """What Ensemble needs of a member, as checkpoint.LoadedModel gives it, without torch."""
    model: NumpyLinearModel
    config: dict
    pipeline: Pipeline
    class_names: tuple[str, ...]
    subcategory_names: list[str] | None
    metrics: dict = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""
    epoch: int | None = None


def write_sidecar(loaded) -> Path | None:
    """The numpy sidecar of a loaded PooledLinearModel checkpoint (checkpoint.LoadedModel), written
    atomically beside it; None for other models or a read-only folder."""
    if loaded.path is None or loaded.config.get("arch") != "pooled":
        return None
    state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in loaded.model.state_dict().items()
             if k in ARRAYS}
    meta = {"config": loaded.config, "pipeline": loaded.pipeline.to_dict(),
            "class_names": list(loaded.class_names), "subcategory_names": loaded.subcategory_names,
            "checkpoint_sha256": loaded.sha256, "epoch": loaded.epoch}
    path = sidecar_path(loaded.path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **state)
        os.replace(tmp, path)
    except OSError as exc:
        log.info("no numpy sidecar for %s (%s): it will load with torch", loaded.path, exc)
        return None
    return path


def load_sidecar(checkpoint: Path, checkpoint_sha256: str) -> NumpyMember | None:
    """The checkpoint's numpy member, or None when there is no sidecar or it is stale."""
    path = sidecar_path(checkpoint)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            arrays = {k: np.asarray(data[k], dtype=np.float32) for k in data.files if k != "__meta__"}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable numpy sidecar %s: %s", path, exc)
        return None
    if meta.get("checkpoint_sha256") != checkpoint_sha256:
        return None                    # made from another version of the checkpoint
    return NumpyMember(model=NumpyLinearModel(meta["config"], arrays), config=meta["config"],
                       pipeline=Pipeline.from_dict(meta["pipeline"]), class_names=tuple(meta["class_names"]),
                       subcategory_names=meta["subcategory_names"], path=Path(checkpoint),
                       sha256=checkpoint_sha256, epoch=meta.get("epoch"))
