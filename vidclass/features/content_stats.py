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

The values are part of the feature space recorded in features files and checkpoints: any change
to what they compute (not merely how fast) needs a new group name ("content_stats_v2").
Known weak spot of v1: `strong_edge_density` (max neighbour difference > 120 at 256 px) is ~0 on
almost every clip of the corpus.
"""
from __future__ import annotations

import cv2
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
    """BT.601 luma (8-bit, as the encoder saw it) as float32."""
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _percentile_u8(values: np.ndarray, q: float) -> float:
    """q-th percentile of values in [0, 255] via a 256-bin histogram (faster than a partition)."""
    hist = np.bincount(np.minimum(values, 255).astype(np.uint8).ravel(), minlength=256)
    return float(np.searchsorted(np.cumsum(hist), q / 100.0 * values.size))


def _frac(mask: np.ndarray) -> float:
    """Share of True values (count_nonzero is much faster than a boolean .mean())."""
    return np.count_nonzero(mask) / max(1, mask.size)


def _block_view(y: np.ndarray) -> np.ndarray:
    """[h/8, 8, w/8, 8] view (no copy) of a 2-D array cropped to a multiple of 8."""
    h, w = (y.shape[0] // _BLOCK) * _BLOCK, (y.shape[1] // _BLOCK) * _BLOCK
    return y[:h, :w].reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK)


def _block_mean(y: np.ndarray) -> np.ndarray:
    return _block_view(y).mean(axis=(1, 3)).ravel()


def _block_std(y: np.ndarray) -> np.ndarray:
    m = _block_mean(y)
    m2 = _block_mean(y * y)
    return np.sqrt(np.maximum(m2 - m * m, 0.0))


def _blocks(y: np.ndarray) -> np.ndarray:
    """[nb, 64] view of the 8x8 blocks of a 2-D array (cropped to a multiple of 8)."""
    h, w = (y.shape[0] // _BLOCK) * _BLOCK, (y.shape[1] // _BLOCK) * _BLOCK
    b = y[:h, :w].reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).swapaxes(1, 2)
    return b.reshape(-1, _BLOCK * _BLOCK)


def _spatial_stats(frame: np.ndarray, y: np.ndarray) -> list[float]:
    y8 = y.astype(np.uint8)
    blocks = _blocks(y8)
    srt = np.sort(blocks, axis=1)
    distinct = 1 + (np.diff(srt.astype(np.int16), axis=1) != 0).sum(axis=1)
    bstd = _block_std(y)

    # Immerkaer residual: I * [[1,-2,1],[-2,4,-2],[1,-2,1]] kills smooth gradients, keeps noise.
    r = (4 * y[1:-1, 1:-1] - 2 * (y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:])
         + y[:-2, :-2] + y[:-2, 2:] + y[2:, :-2] + y[2:, 2:])
    ar = np.abs(r)
    rblk = _block_mean(ar) / 6.0            # ~ noise sigma * sqrt(2/pi) per block
    rstd = _block_std(y[1:-1, 1:-1])
    smooth = (rstd > 0.5) & (rstd < 12.0)
    noise_smooth = float(np.percentile(rblk[smooth], 25)) if smooth.any() else 0.0

    gx = np.abs(np.diff(y, axis=1))[:-1, :]
    gy = np.abs(np.diff(y, axis=0))[:, :-1]
    g = np.maximum(gx, gy)

    # Chroma (max - min of RGB) / 255: like HSV saturation without blowing up in dark areas.
    r, g_, b = frame[..., 0], frame[..., 1], frame[..., 2]
    sat = (np.maximum(np.maximum(r, g_), b) - np.minimum(np.minimum(r, g_), b)).astype(np.float32) / 255.0

    hist = np.bincount(y8.ravel(), minlength=256).astype(np.float32)
    p = hist / hist.sum()
    nz = p[p > 0]
    entropy = float(-(nz * np.log2(nz)).sum())

    return [
        _frac(distinct <= 2), _frac(distinct <= 4), _frac(distinct <= 8),
        float(np.log2(distinct).mean() / 6.0),
        _frac(bstd < 0.5), _frac(bstd < 3.0),
        float(min(np.median(rblk) / 2.0, 2.0)), float(min(noise_smooth, 2.0)),
        _frac(ar < 0.5),
        _frac(g > 40), _frac(g > 120), float(min(g.mean() / 32.0, 2.0)),
        _percentile_u8(g, 99) / 255.0,
        float(sat.mean() * 2.0), float(sat.std() * 2.0), _frac(sat > 0.25),
        float(y.mean() / 255.0), float(y.std() / 128.0),
        _frac((y8 < 16) | (y8 > 239)),
        float((hist > 0).sum() / 256.0), entropy / 8.0,
    ]


def _small(y: np.ndarray) -> np.ndarray:
    """Luma averaged over 4x4 pixels for temporal comparisons: cheap, robust to 1-px jitter."""
    h, w = y.shape
    return cv2.resize(y, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)


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
    # Median over time with time as the last (contiguous) axis: far faster than axis=0.
    median = np.median(np.moveaxis(smalls, 0, -1).copy(), axis=-1)
    for i in range(n):
        row = _spatial_stats(frames[i], lumas[i])
        s = smalls[i]
        if next_frames is not None:
            d = np.abs(s - _small(_luma(next_frames[i])))
            motion, unchanged = float(np.log1p(d.mean()) / _LOG256), _frac(d <= 2.0)
        else:
            motion, unchanged = 0.0, 1.0
        static = _frac(np.abs(s - median) <= 3.0)
        j = i - 1 if i > 0 else min(1, n - 1)
        change = float(np.log1p(np.abs(s - smalls[j]).mean()) / _LOG256)
        row += [motion, unchanged, static, change]
        out[i] = row
    return out
