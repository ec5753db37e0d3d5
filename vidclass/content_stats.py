"""Cheap per-frame content statistics ("content_stats_v1"), concatenated to the CNN features.

ImageNet features say what is in a frame; they say little about how the picture was made, which is
what separates Gaming from Animation from screen content from camera footage on sources a model
never saw. These statistics measure that directly (a few ms per frame on one core):

- colours per 8x8 luma block: screen content (text, UI, charts) has many blocks with very few
  distinct values, as the AV1 encoders' screen-content detection counts;
- flat blocks: renders and UI have exactly flat areas, camera footage has none;
- sensor noise: mean |Laplacian-like residual| (Immerkaer's noise estimator) in smooth-but-not-flat
  blocks; camera footage is noisy, renders are not (compression lowers it, but not to zero);
- edges and sharpness: hard text/UI edges vs soft natural edges;
- saturation and luma statistics, luma levels used, luma entropy;
- short-term motion (frame vs the frame decoded right after it), unchanged pixels vs that frame;
- static overlay: share of pixels equal to the temporal median of all sampled frames (game HUDs,
  window chrome, slide backgrounds), a video-level cue computed per frame so it fits [T, D];
- change since the previous sample.

Every value is scaled to roughly [0, 1]. `compute_content_stats(frames, next_frames)` -> [F, K].
"""
from __future__ import annotations

import numpy as np

GROUP_NAME = "content_stats_v1"

FEATURE_NAMES = (
    "blk_colors_le2", "blk_colors_le4", "blk_colors_le8", "blk_colors_log_mean",
    "flat_blocks", "smooth_blocks",
    "noise_median", "noise_smooth_p25", "zero_residual_frac",
    "edge_density", "strong_edge_density", "grad_mean", "sharpness_p99",
    "sat_mean", "sat_std", "sat_high_frac",
    "luma_mean", "luma_std", "luma_extreme_frac", "luma_levels_used", "luma_entropy",
    "motion_next", "unchanged_next_frac", "static_vs_median_frac", "change_prev_sample",
)
CONTENT_STATS_DIM = len(FEATURE_NAMES)

_BLOCK = 8
_LOG256 = float(np.log(256.0))


def _luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma as float32 (what the encoder saw, near enough)."""
    f = frame.astype(np.float32)
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


def _blocks(y: np.ndarray) -> np.ndarray:
    """[nb, 64] view of the 8x8 blocks of a 2-D array (cropped to a multiple of 8)."""
    h, w = (y.shape[0] // _BLOCK) * _BLOCK, (y.shape[1] // _BLOCK) * _BLOCK
    b = y[:h, :w].reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).swapaxes(1, 2)
    return b.reshape(-1, _BLOCK * _BLOCK)


def _spatial_stats(frame: np.ndarray, y: np.ndarray) -> list[float]:
    y8 = np.clip(y + 0.5, 0, 255).astype(np.uint8)
    blocks = _blocks(y8)
    srt = np.sort(blocks, axis=1)
    distinct = 1 + (np.diff(srt.astype(np.int16), axis=1) != 0).sum(axis=1)
    bstd = _blocks(y).std(axis=1)

    # Immerkaer residual: I * [[1,-2,1],[-2,4,-2],[1,-2,1]] kills smooth gradients, keeps noise.
    r = (4 * y[1:-1, 1:-1] - 2 * (y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:])
         + y[:-2, :-2] + y[:-2, 2:] + y[2:, :-2] + y[2:, 2:])
    ar = np.abs(r)
    rblk = _blocks(ar).mean(axis=1) / 6.0            # ~ noise sigma * sqrt(2/pi) per block
    rstd = _blocks(y[1:-1, 1:-1]).std(axis=1)
    smooth = (rstd > 0.5) & (rstd < 12.0)
    noise_smooth = float(np.percentile(rblk[smooth], 25)) if smooth.any() else 0.0

    gx = np.abs(np.diff(y, axis=1))[:-1, :]
    gy = np.abs(np.diff(y, axis=0))[:, :-1]
    g = np.maximum(gx, gy)

    # Chroma (max - min of RGB) / 255: like HSV saturation without blowing up in dark areas.
    sat = (frame.max(axis=2) - frame.min(axis=2)).astype(np.float32) / 255.0

    hist = np.bincount(y8.ravel(), minlength=256).astype(np.float32)
    p = hist / hist.sum()
    nz = p[p > 0]
    entropy = float(-(nz * np.log2(nz)).sum())

    return [
        float((distinct <= 2).mean()), float((distinct <= 4).mean()), float((distinct <= 8).mean()),
        float(np.log2(distinct).mean() / 6.0),
        float((bstd < 0.5).mean()), float((bstd < 3.0).mean()),
        float(min(np.median(rblk) / 2.0, 2.0)), float(min(noise_smooth, 2.0)),
        float((ar < 0.5).mean()),
        float((g > 40).mean()), float((g > 120).mean()), float(min(g.mean() / 32.0, 2.0)),
        float(np.percentile(g, 99) / 255.0),
        float(sat.mean() * 2.0), float(sat.std() * 2.0), float((sat > 0.25).mean()),
        float(y.mean() / 255.0), float(y.std() / 128.0),
        float(((y8 < 16) | (y8 > 239)).mean()),
        float((hist > 0).sum() / 256.0), entropy / 8.0,
    ]


def _small(y: np.ndarray) -> np.ndarray:
    """2x2-averaged luma for temporal comparisons (cheaper, and robust to 1-px jitter)."""
    h, w = (y.shape[0] // 2) * 2, (y.shape[1] // 2) * 2
    return y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def compute_content_stats(frames: np.ndarray, next_frames: np.ndarray | None = None) -> np.ndarray:
    """Content statistics of F sampled frames -> float32 [F, CONTENT_STATS_DIM].

    next_frames[i] is the frame decoded right after frames[i] (for short-term motion); without it
    the motion values are those of an unchanging frame (0 motion), so pass it whenever possible.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {frames.dtype} {frames.shape}")
    n = len(frames)
    out = np.zeros((n, CONTENT_STATS_DIM), dtype=np.float32)
    if n == 0:
        return out
    lumas = [_luma(f) for f in frames]
    smalls = np.stack([_small(y) for y in lumas])
    median = np.median(smalls, axis=0)
    for i in range(n):
        row = _spatial_stats(frames[i], lumas[i])
        s = smalls[i]
        if next_frames is not None:
            d = np.abs(s - _small(_luma(next_frames[i])))
            motion, unchanged = float(np.log1p(d.mean()) / _LOG256), float((d <= 2.0).mean())
        else:
            motion, unchanged = 0.0, 1.0
        static = float((np.abs(s - median) <= 3.0).mean())
        j = i - 1 if i > 0 else min(1, n - 1)
        change = float(np.log1p(np.abs(s - smalls[j]).mean()) / _LOG256)
        row += [motion, unchanged, static, change]
        out[i] = row
    return out
