"""Benchmark: CPU cost per video of the shipped feature pipeline against the previous release's.

    .venv/bin/python -m bench.bench_pipeline_cost [--repeats 3]

Both pipelines run `FeatureExtractor.extract_file` (sampling, CNNs, content statistics: all a
worker does before the linear model) on the fixture clips (10 s corpus clips) and on a 10-minute
720p file, alternating between pipelines so both see the same machine load; best of `repeats`
per file. The shipped pipeline must stay within 1.5x of the previous one (issue: model card).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.bench_sampling import make_long_video
from vidclass.features.backbone import LITE0_STAGES, default_pipeline, shipped_pipeline
from vidclass.features.extract import FeatureExtractor
from vidclass.features.pipeline import CONTENT_STATS

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    pipelines = {
        "previous (stage stats + content stats, 64 frames, multi-scale)":
            default_pipeline(extras=(CONTENT_STATS,), backbone=LITE0_STAGES),
        "shipped (stage stats + pooled, content stats, drawing net, 32 frames)": shipped_pipeline(),
    }
    extractors = {name: FeatureExtractor(p, runtime="onnx") for name, p in pipelines.items()}
    files = sorted(FIXTURES.glob("*.mp4")) + [make_long_video(10.0)]
    best = {name: {} for name in pipelines}
    for fx in extractors.values():
        fx.extract_file(files[0])                     # warm-up: ONNX sessions, arenas
    for _ in range(args.repeats):
        for f in files:
            for name, fx in extractors.items():
                t = time.perf_counter()
                fx.extract_file(f)
                dt = time.perf_counter() - t
                best[name][f.name] = min(dt, best[name].get(f.name, dt))
    names = list(pipelines)
    print("| file | " + " | ".join(names) + " | ratio |")
    print("|---|" + "---|" * (len(names) + 1))
    for f in files:
        a, b = best[names[0]][f.name], best[names[1]][f.name]
        print(f"| {f.name} | {a:.2f} s | {b:.2f} s | {b / a:.2f}x |")
    total = [sum(best[n].values()) for n in names]
    print(f"| all files | {total[0]:.2f} s | {total[1]:.2f} s | {total[1] / total[0]:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
