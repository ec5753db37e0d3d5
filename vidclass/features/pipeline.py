"""The feature pipeline description that travels with every features file and checkpoint.

The original project extracted URL features with ImageNet EfficientNet-B0 while its checkpoints
were trained on EfficientNet-V2 features of the same width: same shape, different feature space.
We record what produced a feature vector and refuse to combine mismatched ones.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

# Fields that change the feature space. `sampling` (keyframe/exact) only moves sample positions
# by a fraction of a GOP, so it is recorded but does not make pipelines incompatible.
_FEATURE_SPACE_FIELDS = ("backbone", "weights_sha256", "backbone_revision", "input_size", "mean",
                         "std", "num_frames", "scales", "extras")

ORIGINAL_SCALES = (1.0, 0.85, 1.15)

# Width of each per-frame feature group a pipeline can add after the backbone's columns.
CONTENT_STATS = "content_stats_v1"
DRAWING_NET = "nsfwjs-4.3.0_mobilenet_v2"    # vidclass.features.drawing_net: dense_2 (128) + 5 probabilities
EXTRA_DIMS = {CONTENT_STATS: 25, DRAWING_NET: 133}
# Backbones whose columns are several blocks of different kinds (vidclass.training.linear_fit scales each
# block to an equal share of the variance); any other backbone is one block.
BACKBONE_BLOCKS = {"efficientnet-lite0-stages+pooled": (("lite0_stages", 1536), ("lite0_pooled", 1280))}


# Why an old backbone revision's features cannot be used, by revision.
_REVISION_NOTES = {0: " (before revision 1, Lite0 ran with Swish in place of its ReLU6, so its "
                      "features are not those of the pretrained network)"}


class PipelineMismatch(ValueError):
    """Features and model (or two feature files) come from different pipelines."""


@dataclass(frozen=True)
class Pipeline:
    backbone: str = "efficientnet-lite0"
    weights_sha256: str = ""          # checksum of the backbone weights file ("" = unknown)
    # What the backbone module computes with those weights (vidclass.features.backbone.LITE0_REVISION);
    # 0 = not recorded, i.e. made before revisions were (for Lite0: the Swish-activated net).
    backbone_revision: int = 0
    input_size: int = 224
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    num_frames: int = 64
    scales: tuple[float, ...] = ORIGINAL_SCALES   # () = temporal multi-scale averaging off
    extras: tuple[str, ...] = ()      # extra per-frame feature groups, e.g. ("content_stats_v1",)
    backbone_dim: int = 1280
    extras_dim: int = 0
    sampling: str = "keyframe"        # "keyframe" or "exact"

    @property
    def feature_dim(self) -> int:
        return self.backbone_dim + self.extras_dim

    @property
    def max_steps(self) -> int:
        """Time steps of a features row: int(F * max scale), as the original (64 -> 73)."""
        if not self.scales:
            return self.num_frames
        return max(max(5, int(self.num_frames * s)) for s in self.scales)

    def blocks(self) -> list[tuple[str, int]]:
        """(name, width) of each block of per-frame columns, in column order."""
        out = list(BACKBONE_BLOCKS.get(self.backbone, ((self.backbone, self.backbone_dim),)))
        if len(self.extras) == 1:
            out.append((self.extras[0], self.extras_dim))
        else:
            out += [(e, EXTRA_DIMS[e]) for e in self.extras]
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["feature_dim"] = self.feature_dim
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Pipeline":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("mean", "std", "scales", "extras"):
            if k in kw and kw[k] is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    @classmethod
    def from_json(cls, s: str | bytes) -> "Pipeline":
        if isinstance(s, bytes):
            s = s.decode()
        return cls.from_dict(json.loads(s))

    def describe(self) -> str:
        extras = "+" + "+".join(self.extras) if self.extras else ""
        ms = f"multiscale{list(self.scales)}" if self.scales else "no-multiscale"
        sha = self.weights_sha256[:12] or "unknown-weights"
        return (f"{self.backbone}{extras} ({sha}, revision {self.backbone_revision}, {self.input_size}px, mean={list(self.mean)}, "
                f"std={list(self.std)}, {self.num_frames} frames, {ms}, dim={self.feature_dim})")

    def feature_space(self) -> tuple:
        return tuple(getattr(self, name) for name in _FEATURE_SPACE_FIELDS)

    def with_(self, **changes) -> "Pipeline":
        return replace(self, **changes)


# What the original research project's features files and checkpoints were made with. Files
# without a `pipeline` record are taken to be these (see shared design notes, "Known defect").
ORIGINAL_PIPELINE = Pipeline(backbone="efficientnet-v2-s", weights_sha256="", input_size=384,
                             mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def check_compatible(a: Pipeline, b: Pipeline, a_name: str = "features", b_name: str = "model") -> None:
    """Raise PipelineMismatch naming both pipelines unless they produce the same feature space."""
    if a.feature_space() == b.feature_space():
        return
    if a.with_(backbone_revision=b.backbone_revision).feature_space() == b.feature_space():
        old = a_name if a.backbone_revision < b.backbone_revision else b_name
        raise PipelineMismatch(
            f"feature pipeline mismatch: {a_name} was made by {a.backbone} module revision "
            f"{a.backbone_revision}, {b_name} by revision {b.backbone_revision}; {old} comes from an "
            f"older net{_REVISION_NOTES.get(min(a.backbone_revision, b.backbone_revision), '')}: "
            f"re-extract the features (vidclass extract) and retrain with this version")
    raise PipelineMismatch(
            f"feature pipeline mismatch: {a_name} uses {a.describe()} but {b_name} uses "
            f"{b.describe()}; re-extract the features with the model's pipeline or use a model "
            f"trained on this pipeline")
