"""`vidclass classify` of a 10-minute 720p file beside decoding that file once, in the same run
(issue "Lean inference": the end-to-end time is to be at most 0.25x of a decode-all).

The file: corpus clips concatenated (bench/videogen.py) at 1280x720, 25 fps, H.264, one minute
encoded and then remuxed ten times (packets copied). The reference is a decode of every frame
with PyAV (libavcodec, what the ffmpeg command would run; the ffmpeg command is not on every
machine and the project does not need it), with its default threading. Classify runs as a user
runs it: a fresh `vidclass classify FILE` process, torch-free (numpy sidecars, ONNX exports made
before timing). Median of --runs of each, alternated.

    .venv/bin/python -m bench.bench_long_file [--runs 3] [--minutes 10]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CORPUS = Path(os.environ.get("VIDCLASS_CORPUS", REPO.parent / "shared" / "corpus"))
CLIPS = ["Gaming/racing/supertuxkart_3.mp4", "Natural_Content/camera_footage", "Flat_Content", "Animation"]


def pick_clips() -> list[Path]:
    """Four corpus clips of different classes (the first of each folder, sorted)."""
    out = []
    for rel in CLIPS:
        p = CORPUS / rel
        out.append(p if p.is_file() else sorted(p.rglob("*.mp4"))[0])
    return out


def decode_all(path: Path) -> float:
    import av

    t = time.perf_counter()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in c.decode(stream):
            pass
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--minutes", type=int, default=10)
    args = ap.parse_args()
    from bench.videogen import concat_clips, remux_concat

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = pick_clips()
        minute = tmp / "minute.mp4"
        concat_clips([(c, 15.0) for c in clips], minute, size=(1280, 720), fps=25)
        video = tmp / "long.mp4"
        duration = remux_concat([minute] * args.minutes, video)
        cli = [str(Path(sys.executable).parent / "vidclass"), "classify", str(video)]
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        subprocess.run(cli, env=env, check=True, capture_output=True)            # warm: exports, page cache
        decode, classify = [], []
        for _ in range(args.runs):
            decode.append(decode_all(video))
            t = time.perf_counter()
            subprocess.run(cli, env=env, check=True, capture_output=True)
            classify.append(time.perf_counter() - t)
        d, c = statistics.median(decode), statistics.median(classify)
        print(json.dumps({"file": f"{duration:.0f} s, 1280x720, 25 fps, {video.stat().st_size / 1e6:.0f} MB",
                          "runs": args.runs, "decode_all_s": round(d, 2), "classify_s": round(c, 2),
                          "ratio": round(c / d, 3), "decode_runs": [round(x, 2) for x in decode],
                          "classify_runs": [round(x, 2) for x in classify]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
