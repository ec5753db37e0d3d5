"""The original research project's model: BiLSTM + self-attention + attention pooling.

Its module names and shapes follow the original exactly (see the shared design note
seed-compat.md), so its `best_ensemble_model_N.pt` files load with strict=True.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vidclass.model.clip_classifier import ClipClassifier, normalize_config


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
