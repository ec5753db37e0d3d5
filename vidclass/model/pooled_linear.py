"""The shipped model: linear class and subcategory heads over a clip's frames, pooled over time."""
from __future__ import annotations

import torch
from torch import nn

from vidclass.model.clip_classifier import ClipClassifier, normalize_config


POOLINGS = ("mean", "mean_std", "frames")


class PooledLinearModel(ClipClassifier):
    """Pool over time -> dropout -> linear class (and subcategory) heads.

    A linear model of the clip's average frame ("mean" pooling) or of each feature's mean and
    standard deviation over time ("mean_std"). On the corpus's few dozen sources per class it
    generalises to unseen sources better than the BiLSTM, which has the capacity to learn each
    training source's look (BENCHMARKS.md, "Feature study"). Same inputs, outputs and checkpoint
    format as SuperEnhancedTemporalModel; hidden_dim, layers and heads are unused.

    With "frames" (the "frames" recipe, vidclass.training.recipes), the heads read every frame on its own: each frame is
    standardised (`frame_mean`, `frame_scale` [feature_dim], block-weighted like mean_std's), gets
    its class log-probabilities, and the clip's logits are their mean over the valid frames (a
    normalised geometric mean of the frames' probabilities). Trained on frames as samples, it
    learns what a frame shows rather than how a clip as a whole varies (README, model card: better
    on the family folds, not on the locked families).

    With "mean_std", `pooled_mean` and `pooled_scale` [2 * feature_dim] standardise the pooled
    vector and weight each feature block (backbone, content statistics, ...) to an equal share of
    the variance, so a 25-value block is not drowned by a 1536-value one (vidclass.training.linear_fit sets them).
    """

    def __init__(self, config: dict | None = None, **overrides):
        super().__init__()
        cfg = normalize_config({**(config or {}), **overrides, "arch": "pooled"})
        if cfg["pooling"] not in POOLINGS:
            raise ValueError(f"unknown pooling {cfg['pooling']!r}; known: {', '.join(POOLINGS)}")
        self.config = cfg
        d = cfg["feature_dim"]
        if cfg["input_norm"]:
            self.register_buffer("input_mean", torch.zeros(d))
            self.register_buffer("input_std", torch.ones(d))
        pooled_dim = 2 * d if cfg["pooling"] == "mean_std" else d
        if cfg["pooling"] == "frames":
            self.register_buffer("frame_mean", torch.zeros(d))
            self.register_buffer("frame_scale", torch.ones(d))
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

    def forward_all(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        if self.config["pooling"] != "frames":
            return super().forward_all(x, lengths)
        batch, steps, _ = x.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long)
        lengths = torch.as_tensor(lengths).to(x.device, torch.long).clamp(1, steps)
        valid = (torch.arange(steps, device=x.device)[None, :] < lengths[:, None]).to(x.dtype).unsqueeze(-1)
        z = self.dropout((x - self.frame_mean) * self.frame_scale)
        n = lengths.unsqueeze(-1).to(x.dtype)

        def clip_log_probs(head):
            return (torch.log_softmax(head(z), dim=-1) * valid).sum(1) / n
        sub = clip_log_probs(self.subcategory_head) if self.subcategory_head is not None else None
        return clip_log_probs(self.classifier) / self.config.get("temperature", 1.0), sub
