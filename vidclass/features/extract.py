"""The one feature pipeline used by training, the CLI and the workers.

video file -> sample_frames (num_frames, keyframe/exact) -> per-frame vectors
(backbone columns, then each group named in pipeline.extras: "content_stats_v1" content
statistics, "nsfwjs-4.3.0_mobilenet_v2" the drawing net's embedding and probabilities)
-> temporal multi-scale averaging (as the original) -> features [T, D] zero-padded to
pipeline.max_steps, with `length` valid steps.

Multi-scale only repeats or drops sampled frames, so the backbone runs once per sampled frame and
each scale indexes those vectors, instead of running the CNN on 1 + 0.85 + 1.15 = 3x the frames.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vidclass.media.frames import sample_frames
from vidclass.features.pipeline import CONTENT_STATS, Pipeline

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


@dataclass
class VideoFeatures:
    features: np.ndarray          # float32 [T, D], zero-padded after `length`
    length: int                   # valid steps
    frames: np.ndarray            # uint8 [F, H, W, 3] RGB, the sampled frames
    timings: dict = field(default_factory=dict)   # sample_s, features_s
    # The per-frame vectors [F, D] before temporal multi-scale, and each frame's time in seconds
    # (None when unknown): vidclass.model.timeline reuses them for the timeline.
    per_frame: np.ndarray | None = None
    times: np.ndarray | None = None


def scale_indices(num_frames: int, scale: float) -> np.ndarray:
    """Frame indices of one temporal scale: int(F*s) (min 5) uniform indices over F frames.

    Uniform = np.linspace(0, F-1, n) truncated with astype(int) (the original resampling).
    """
    n = max(5, int(num_frames * scale))
    return np.linspace(0, num_frames - 1, n).astype(int)


def temporal_multiscale(per_frame: np.ndarray, scales) -> tuple[np.ndarray, int]:
    """Original temporal multi-scale averaging: per_frame [F, D] -> ([T, D], length).

    For each scale s the F frame vectors are resampled to int(F*s) (min 5) with uniform indices,
    the sequences are zero-padded to the longest and averaged element-wise (padding included, as the
    original did, so steps past a shorter scale's end are averaged with zeros). length = the longest
    scale's length. scales == () -> the F vectors unchanged.
    """
    per_frame = np.asarray(per_frame, dtype=np.float32)
    if per_frame.ndim != 2 or len(per_frame) == 0:
        raise ValueError(f"expected per-frame features [F, D] with F >= 1, got {per_frame.shape}")
    if not scales:
        return per_frame.copy(), len(per_frame)
    f = len(per_frame)
    seqs = [per_frame[scale_indices(f, s)] for s in scales]
    t = max(len(s) for s in seqs)
    out = np.zeros((t, per_frame.shape[1]), dtype=np.float32)
    for s in seqs:
        out[:len(s)] += s
    out /= len(seqs)
    return out, t


def clip_vector(features: np.ndarray, length: int) -> np.ndarray:
    """A clip's pooled vector: each feature's mean and standard deviation over its `length` valid
    steps, [mean | std] float32 [2D] (what PooledLinearModel's "mean_std" pooling computes before
    standardising). Kept with every finished job, so a correction can be learned from later."""
    x = np.asarray(features, dtype=np.float64)[:max(1, int(length))]
    mean = x.mean(axis=0)
    return np.concatenate([mean, np.sqrt(((x - mean) ** 2).mean(axis=0))]).astype(np.float32)


class FeatureExtractor:
    """Features of a video file exactly as the pipeline describes them."""

    def __init__(self, pipeline: Pipeline, runtime: str = "auto", backbone=None):
        from vidclass.features.backbone import load_backbone
        from vidclass.features.pipeline import CONTENT_STATS, DRAWING_NET, EXTRA_DIMS

        self.pipeline = pipeline
        unknown = [e for e in pipeline.extras if e not in EXTRA_DIMS]
        if unknown:
            raise ValueError(f"unknown feature extras {unknown}; known: {sorted(EXTRA_DIMS)}")
        if pipeline.extras_dim != sum(EXTRA_DIMS[e] for e in pipeline.extras):
            raise ValueError(f"pipeline.extras_dim is {pipeline.extras_dim} but {list(pipeline.extras)} "
                             f"have {sum(EXTRA_DIMS[e] for e in pipeline.extras)} values")
        self.backbone = backbone if backbone is not None else load_backbone(pipeline, runtime)
        self.use_stats = CONTENT_STATS in pipeline.extras
        self.drawing_net = None
        if DRAWING_NET in pipeline.extras:
            from vidclass.features.drawing_net import load_drawing_net
            self.drawing_net = load_drawing_net(runtime if runtime in ("torch", "onnx") else "auto")

    @property
    def runtime(self) -> str:
        return self.backbone.runtime

    def extract_file(self, path: str | os.PathLike, progress: Progress | None = None) -> VideoFeatures:
        """Sample the pipeline's frames from a file and compute its features (VideoError if unusable)."""
        t0 = time.perf_counter()
        if progress:
            progress("sampling", 0.0)
        stats: dict = {}
        sampled = sample_frames(path, self.pipeline.num_frames,
                                exact=self.pipeline.sampling == "exact", with_next=self.use_stats,
                                stats=stats,
                                progress=(lambda f: progress("sampling", f)) if progress else None)
        frames, next_frames = sampled if self.use_stats else (sampled, None)
        if progress:
            progress("sampling", 1.0)
        sample_s = time.perf_counter() - t0
        result = self.extract_frames(frames, progress=progress, next_frames=next_frames)
        result.timings["sample_s"] = sample_s
        if stats.get("times") is not None:
            result.times = np.asarray(stats["times"], dtype=np.float64)
        return result

    def per_frame(self, frames: np.ndarray, progress: Progress | None = None,
                  next_frames: np.ndarray | None = None) -> np.ndarray:
        """Per-frame vectors [F, D] (backbone, then content statistics when enabled)."""
        nets = 2 if self.drawing_net is not None else 1

        def stage_progress(k):
            return (lambda frac: progress("features", (k + frac) / nets)) if progress else None
        vecs = [self.backbone.extract(frames, progress=stage_progress(0))]
        for extra in self.pipeline.extras:      # in the pipeline's column order
            if extra == CONTENT_STATS:
                from vidclass.features.content_stats import compute_content_stats
                vecs.append(compute_content_stats(frames, next_frames))
            else:
                vecs.append(self.drawing_net.extract(frames, progress=stage_progress(1)))
        return np.concatenate(vecs, axis=1) if len(vecs) > 1 else vecs[0]

    def extract_frames(self, frames: np.ndarray, progress: Progress | None = None,
                       next_frames: np.ndarray | None = None) -> VideoFeatures:
        """Features of already-sampled frames uint8 [F, H, W, 3].

        With content statistics, pass `next_frames` (sample_frames(..., with_next=True)) or the
        short-term motion columns are those of a still video (0 motion) and differ from what
        extract_file computes for the same file.
        """
        frames = np.asarray(frames)
        if self.use_stats and next_frames is None:
            log.warning("content statistics without next_frames: short-term motion is reported as 0")
        t0 = time.perf_counter()
        vecs = self.per_frame(frames, progress, next_frames)
        feats, length = temporal_multiscale(vecs, self.pipeline.scales)
        t = self.pipeline.max_steps if len(frames) == self.pipeline.num_frames else len(feats)
        if len(feats) < t:
            feats = np.concatenate([feats, np.zeros((t - len(feats), feats.shape[1]), np.float32)])
        return VideoFeatures(features=feats, length=length, frames=frames,
                             timings={"features_s": time.perf_counter() - t0}, per_frame=vecs)
