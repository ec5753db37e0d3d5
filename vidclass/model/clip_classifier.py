"""What every clip classifier shares: the model config (defaults, the original's aliases) and
the base class whose `_pooled` vector feeds the class and subcategory heads."""
from __future__ import annotations

import torch
from torch import nn

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
