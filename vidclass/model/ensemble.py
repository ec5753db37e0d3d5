"""An ensemble of checkpoints: the mean of the members' softmax probabilities.

Members come from `models_dir/manifest.json` ("members": checkpoint file names, written by
training) or, for the original project's folder, `best_ensemble_model_{1..4}.pt`. A missing
member is skipped with a warning (as the original did); no member at all is an error.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidclass import paths
from vidclass.features.backbone import file_sha256
from vidclass.features.pipeline import Pipeline, check_compatible
from vidclass.model.numpy_linear import NumpyMember, load_sidecar, write_sidecar
from vidclass.model.taxonomy import UNKNOWN

log = logging.getLogger(__name__)

ORIGINAL_MEMBERS = tuple(f"best_ensemble_model_{i}.pt" for i in range(1, 5))
MANIFEST = "manifest.json"


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class NoModelsError(FileNotFoundError):
    """No checkpoint of the ensemble could be found."""


def default_device() -> str:
    """"cuda" when torch sees a GPU; on a machine without an NVIDIA device, "cpu" without
    importing torch at all."""
    if not Path("/dev/nvidiactl").exists() and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_member(path: Path, device: str):
    """A member: its numpy sidecar on the CPU when it has a current one (no torch), else the
    checkpoint through torch (and, for a pooled linear model, its sidecar written for next time)."""
    if device == "cpu":
        member = load_sidecar(path, file_sha256(path))
        if member is not None:
            return member
    from vidclass.model.checkpoint import load_checkpoint

    # The models folder is the operator's own: trusted (old files pickle numpy scalars).
    member = load_checkpoint(path, trusted=True, device=device)
    write_sidecar(member)
    return member


def member_files(models_dir: Path) -> list[str]:
    """Checkpoint file names of the ensemble, from manifest.json or the original four."""
    manifest = models_dir / MANIFEST
    if manifest.is_file():
        try:
            members = json.loads(manifest.read_text())["members"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{manifest}: unreadable manifest (need a 'members' list): {exc}") from exc
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ValueError(f"{manifest}: 'members' must be a list of checkpoint file names")
        return members
    return list(ORIGINAL_MEMBERS)


def folder_digest(models_dir: Path) -> str:
    """What Ensemble.load(models_dir).version will be, from the files alone (no torch, no loading)."""
    from vidclass.features.backbone import file_sha256

    shas = [file_sha256(models_dir / name) for name in member_files(models_dir) if (models_dir / name).is_file()]
    return hashlib.sha256("".join(shas).encode()).hexdigest()[:12]


def pick_subcategory(names: list[str], probs: np.ndarray, label: str) -> tuple[str, float]:
    """The most likely subcategory of the predicted class.

    Training names subcategories "Category/subcategory" (the same folder name, e.g.
    stills_motion, occurs under several classes); the answer is restricted to the predicted class
    so it never contradicts the label, and its confidence is renormalised within that class.
    Unqualified names (no "/") are taken as they are."""
    qualified = [j for j, n in enumerate(names) if n.startswith(label + "/")]
    if not qualified:
        j = int(probs.argmax())
        return names[j].split("/", 1)[-1], float(probs[j])
    j = max(qualified, key=lambda k: probs[k])
    return names[j].split("/", 1)[1], float(probs[j] / max(probs[qualified].sum(), 1e-12))


@dataclass
class EnsemblePrediction:
    member_probs: np.ndarray            # [M, N, C] softmax per member
    probs: np.ndarray                   # [N, C] mean over members
    class_names: tuple[str, ...]
    subcategory_probs: np.ndarray | None        # [N, S] mean over members that have a subcategory head
    subcategory_names: list[str] | None
    pipeline: Pipeline
    model_version: str
    uncertain_below: float = 0.0                # top-class confidence under this: uncertain
    subcategory_min_confidence: float = 0.0     # subcategory confidence under this: "unknown"

    @property
    def labels(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def result_dict(self, i: int) -> dict:
        """The classification result of docs/ARCHITECTURE.md for row i (without target/timings)."""
        names = self.class_names
        top = int(self.probs[i].argmax())
        members = [{n: float(p) for n, p in zip(names, mp[i])} for mp in self.member_probs]
        agreement = float(np.mean(self.member_probs[:, i, :].argmax(axis=1) == top))
        sub, sub_conf = None, None
        if self.subcategory_probs is not None:
            sub, sub_conf = pick_subcategory(self.subcategory_names, self.subcategory_probs[i], names[top])
            if sub_conf < self.subcategory_min_confidence:
                sub = UNKNOWN
        return {
            "label": names[top],
            "confidence": float(self.probs[i, top]),
            "uncertain": bool(self.probs[i, top] < self.uncertain_below),
            "probabilities": {n: float(p) for n, p in zip(names, self.probs[i])},
            "members": members,
            "agreement": agreement,
            "subcategory": sub,
            "subcategory_confidence": sub_conf,
            "pipeline": self.pipeline.to_dict(),
            "model_version": self.model_version,
        }


def read_thresholds(models_dir: Path) -> dict:
    """The manifest's thresholds (written by training), VIDCLASS_UNCERTAIN_BELOW overriding."""
    manifest = models_dir / MANIFEST
    thresholds = {"uncertain_below": 0.0, "subcategory_min_confidence": 0.0}
    if manifest.is_file():
        try:
            thresholds.update(json.loads(manifest.read_text()).get("thresholds") or {})
        except ValueError:
            pass            # member_files reports an unreadable manifest
    if os.environ.get("VIDCLASS_UNCERTAIN_BELOW"):
        thresholds["uncertain_below"] = float(os.environ["VIDCLASS_UNCERTAIN_BELOW"])
    return thresholds


class Ensemble:
    def __init__(self, members: list, device: str = "cpu", models_dir: Path | None = None,
                 uncertain_below: float = 0.0, subcategory_min_confidence: float = 0.0):
        if not members:
            raise NoModelsError("an ensemble needs at least one model")
        first = members[0]
        for m in members[1:]:
            check_compatible(m.pipeline, first.pipeline, a_name=f"model {m.path}",
                             b_name=f"model {first.path}")
            if tuple(m.class_names) != tuple(first.class_names):
                raise ValueError(f"class names differ: {m.path} has {list(m.class_names)}, "
                                 f"{first.path} has {list(first.class_names)}")
        with_sub = [m for m in members if m.subcategory_names]
        for m in with_sub[1:]:
            if m.subcategory_names != with_sub[0].subcategory_names:
                raise ValueError(f"subcategory names differ between {m.path} and {with_sub[0].path}")
        dims = {m.config["feature_dim"] for m in members}
        if len(dims) != 1:
            raise ValueError(f"members expect different feature widths: {sorted(dims)}")
        self.members = members
        self.device = device
        self.models_dir = models_dir
        self.pipeline: Pipeline = first.pipeline
        self.class_names: tuple[str, ...] = tuple(first.class_names)
        self.subcategory_names: list[str] | None = with_sub[0].subcategory_names if with_sub else None
        self.feature_dim: int = dims.pop()
        self.uncertain_below = uncertain_below
        self.subcategory_min_confidence = subcategory_min_confidence
        # Short and stable: changes whenever any member file changes.
        self.version = hashlib.sha256("".join(m.sha256 for m in members).encode()).hexdigest()[:12]

    @classmethod
    def load(cls, models_dir: str | os.PathLike | None = None, device: str | None = None) -> "Ensemble":
        models_dir = paths.models_dir(models_dir)
        device = device or default_device()
        names = member_files(models_dir)
        members = []
        for name in names:
            path = models_dir / name
            if not path.is_file():
                log.warning("ensemble member %s is missing; continuing without it", path)
                continue
            members.append(load_member(path, device))
        if not members:
            raise NoModelsError(f"no model checkpoints found in {models_dir} (looked for "
                                f"{', '.join(names)}); train one with `vidclass train` or point "
                                f"--models-dir / VIDCLASS_MODELS_DIR at a folder of checkpoints")
        log.info("loaded %d ensemble member(s) from %s on %s", len(members), models_dir, device)
        return cls(members, device=device, models_dir=models_dir, **read_thresholds(models_dir))

    def predict(self, features, lengths=None, batch_size: int = 16) -> EnsemblePrediction:
        """Probabilities for features [N, T, D] (zero-padded past lengths[n]) or a single [T, D]."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[2] != self.feature_dim:
            raise ValueError(f"features must be [N, T, {self.feature_dim}], got {list(x.shape)}")
        n, steps = x.shape[0], x.shape[1]
        lens = np.full(n, steps, dtype=np.int64) if lengths is None else \
            np.asarray(lengths, dtype=np.int64).reshape(-1)
        if lens.shape[0] != n:
            raise ValueError(f"{lens.shape[0]} lengths for {n} feature rows")

        member_probs, sub_sum, sub_count = [], None, 0
        for m in self.members:
            probs, subs = [], []
            for start in range(0, n, batch_size):
                logits, sub = self._member_outputs(m, x[start:start + batch_size], lens[start:start + batch_size])
                probs.append(_softmax(logits))
                if sub is not None:
                    subs.append(_softmax(sub))
            member_probs.append(np.concatenate(probs) if probs else np.zeros((0, len(self.class_names)), np.float32))
            if subs:
                s = np.concatenate(subs)
                sub_sum = s if sub_sum is None else sub_sum + s
                sub_count += 1
        mp = np.stack(member_probs)
        return EnsemblePrediction(
            member_probs=mp, probs=mp.mean(axis=0), class_names=self.class_names,
            subcategory_probs=sub_sum / sub_count if sub_count else None,
            subcategory_names=self.subcategory_names, pipeline=self.pipeline,
            model_version=self.version, uncertain_below=self.uncertain_below,
            subcategory_min_confidence=self.subcategory_min_confidence)

    def _member_outputs(self, member, x: np.ndarray, lengths: np.ndarray):
        """(class logits, subcategory logits or None) of one member, float32 numpy."""
        if isinstance(member, NumpyMember):
            return member.model.forward_all(x, lengths)
        import torch

        with torch.inference_mode():
            logits, sub = member.model.forward_all(torch.as_tensor(x).to(self.device), torch.as_tensor(lengths))
            return (logits.float().cpu().numpy(), None if sub is None else sub.float().cpu().numpy())

    def describe(self) -> dict:
        return {
            "models_dir": str(self.models_dir) if self.models_dir else None,
            "members": [{"file": m.path.name if m.path else None, "sha256": m.sha256,
                         "arch": m.config["arch"], "epoch": m.epoch, "metrics": m.metrics}
                        for m in self.members],
            "class_names": list(self.class_names),
            "subcategory_names": self.subcategory_names,
            "pipeline": self.pipeline.to_dict(),
            "model_version": self.version,
            "device": self.device,
            "thresholds": {"uncertain_below": self.uncertain_below,
                           "subcategory_min_confidence": self.subcategory_min_confidence},
        }
