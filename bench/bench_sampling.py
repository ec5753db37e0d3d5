"""Benchmark: sampling 64 frames from a 10-minute 720p H.264 file, seek-based vs decode-everything.

    .venv/bin/python -m bench.bench_sampling [--frames 64] [--minutes 10] [--skip-opencv]

The test file is made once in bench/output/ (gitignored) by encoding with PyAV/libx264: 1280x720,
30 fps, a keyframe every 4 s (GOP 120, no scene-cut keyframes, B-frames on, preset superfast,
CRF 23), as typical downloaded files are. Its pictures are real corpus clips (one per class, the test
fixtures) upscaled to 720p with a slow pan so every frame carries motion, looped to the length.

Baseline = what the original did: OpenCV VideoCapture reading every frame, keeping the 64 at
np.linspace(0, total-1, 64) indices.
"""
from __future__ import annotations

import argparse
import os
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidclass.media.frames import sample_frames

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "bench" / "output"
FIXTURES = ROOT / "tests" / "fixtures"
W, H, FPS, GOP = 1280, 720, 30, 120


def _source_frames() -> list[np.ndarray]:
    """Frames of the fixture clips, upscaled to 10% over 720p (room for the pan)."""
    frames = []
    for clip in sorted(FIXTURES.glob("*.mp4")):
        with av.open(str(clip)) as c:
            for f in c.decode(video=0):
                frames.append(f.to_ndarray(format="rgb24", width=int(W * 1.1) // 2 * 2,
                                           height=int(H * 1.1) // 2 * 2))
    return frames


def make_long_video(minutes: float = 10.0, path: Path | None = None) -> Path:
    path = path or OUTPUT / f"long_{W}x{H}_{minutes:g}min.mp4"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    src = _source_frames()
    total = int(minutes * 60 * FPS)
    tmp = path.with_suffix(".tmp.mp4")
    t0 = time.perf_counter()
    with av.open(str(tmp), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.gop_size = GOP
        s.codec_context.options = {"preset": "superfast", "crf": "23", "keyint_min": str(GOP),
                                   "sc_threshold": "0", "bf": "2"}
        mh, mw = src[0].shape[0] - H, src[0].shape[1] - W
        for i in range(total):
            # Source clips are 12 fps: advance the source 2 frames per 5 output frames.
            img = src[(i * 12 // FPS) % len(src)]
            phase = (i % 240) / 240.0                  # 8 s pan back and forth
            x = int(mw * abs(1 - 2 * phase)); y = int(mh * phase)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[y:y + H, x:x + W]), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for pkt in s.encode(frame.reformat(format="yuv420p")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    os.replace(tmp, path)
    print(f"made {path} ({total} frames) in {time.perf_counter() - t0:.0f} s")
    return path


def opencv_all_frames(path: Path, n: int) -> np.ndarray:
    """The original approach: decode every frame with OpenCV, keep n uniform ones."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = set(np.linspace(0, total - 1, n).astype(int).tolist())
    kept, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i in wanted:
            kept.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    return np.stack(kept)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--skip-opencv", action="store_true")
    args = ap.parse_args(argv)
    path = make_long_video(args.minutes)
    print(f"file: {path.name}, {path.stat().st_size / 1e6:.1f} MB; load: {os.getloadavg()[0]:.2f}")
    results = {}
    for mode, exact in (("keyframe", False), ("exact", True)):
        best = None
        for _ in range(3):
            stats = {}
            t = time.perf_counter()
            frames = sample_frames(path, args.frames, exact=exact, stats=stats)
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        results[mode] = best
        print(f"vidclass sample_frames {mode:8s}: {best:6.2f} s  ({stats['decoded']} frames decoded, "
              f"{frames.shape})")
    if not args.skip_opencv:
        t = time.perf_counter()
        frames = opencv_all_frames(path, args.frames)
        dt = time.perf_counter() - t
        print(f"OpenCV decode-every-frame  : {dt:6.2f} s  ({frames.shape})")
        for mode, s in results.items():
            print(f"speed-up {mode}: {dt / s:.1f}x")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
