"""Benchmark: backbone feature extraction throughput (frames/s), torch vs ONNX Runtime.

    .venv/bin/python -m bench.bench_features [--frames 64] [--batches 1,8,16,32]

Frames are 64 real frames sampled from the test fixtures (as FeatureExtractor sees them), so the
time includes preprocessing (resize to 224, normalise) and the CNN. Also times content_stats_v1.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from vidclass.features.backbone import LITE0, LITE0_STAGES, default_pipeline, load_backbone
from vidclass.features.content_stats import GROUP_NAME, compute_content_stats
from vidclass.media.frames import sample_frames

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
OUTPUT = Path(__file__).resolve().parent / "output"


def _frames(n: int):
    clips = sorted(FIXTURES.glob("*.mp4"))
    per = -(-n // len(clips))
    sampled = [sample_frames(c, per, with_next=True) for c in clips]
    # Same frame size for one batch: crop to the smallest clip's size.
    h = min(f.shape[1] for f, _ in sampled); w = min(f.shape[2] for f, _ in sampled)
    frames = np.concatenate([f[:, :h, :w] for f, _ in sampled])[:n]
    nexts = np.concatenate([x[:, :h, :w] for _, x in sampled])[:n]
    return frames, nexts


def _rate(fn, n: int, repeats: int = 3) -> float:
    fn()                                  # warm-up (allocations, ORT arena)
    best = min(_timed(fn) for _ in range(repeats))
    return n / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--batches", default="1,8,16,32")
    ap.add_argument("--runtimes", default="torch,onnx")
    args = ap.parse_args(argv)
    frames, nexts = _frames(args.frames)
    print(f"{len(frames)} frames {frames.shape[1]}x{frames.shape[2]}, cpus={os.cpu_count()}, "
          f"load: {os.getloadavg()[0]:.2f}")
    for backbone in (LITE0, LITE0_STAGES):
        pipeline = default_pipeline(backbone=backbone)
        for runtime in args.runtimes.split(","):
            for bs in [int(b) for b in args.batches.split(",")]:
                bb = load_backbone(pipeline, runtime, batch_size=bs)
                fps = _rate(lambda: bb.extract(frames), len(frames))
                print(f"{backbone} {runtime:5s} batch {bs:2d}: {fps:6.1f} frames/s")
    fps = _rate(lambda: compute_content_stats(frames, nexts), len(frames))
    print(f"content_stats_v1: {fps:6.1f} frames/s ({1000 / fps:.1f} ms/frame)")

    # End to end (sampling + backbone + stats + multi-scale), default runtime and batch size.
    from vidclass.features.extract import FeatureExtractor
    long_file = OUTPUT / "long_1280x720_10min.mp4"
    files = [FIXTURES / "gaming_supertux_4.mp4"] + ([long_file] if long_file.is_file() else [])
    for backbone, extras in ((LITE0, ()), (LITE0, (GROUP_NAME,)), (LITE0_STAGES, (GROUP_NAME,))):
        fx = FeatureExtractor(default_pipeline(extras=extras, backbone=backbone))
        for path in files:
            fx.extract_file(path)
            t = time.perf_counter()
            res = fx.extract_file(path)
            total = time.perf_counter() - t
            print(f"extract_file {path.name} [{backbone} {fx.runtime}{'+' + extras[0] if extras else ''}]: "
                  f"{total:.2f} s (sample {res.timings['sample_s']:.2f} s, "
                  f"features {res.timings['features_s']:.2f} s) -> {res.features.shape}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
