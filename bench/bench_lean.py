"""`vidclass classify` of one 10 s corpus clip: wall time and peak RSS, torch-free (the shipped
model's numpy sidecars and cached ONNX exports) beside the torch path of the previous release
(the same checkpoints copied into a fresh folder without sidecars, so torch loads them every run).

    .venv/bin/python -m bench.bench_lean [--runs 5] [--clip PATH]

Each run is a fresh process (as a user's CLI call is); ONNX exports are made before timing.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("VIDCLASS_CORPUS", REPO.parent / "shared" / "corpus"))
DEFAULT_CLIP = CORPUS / "Gaming" / "racing" / "supertuxkart_3.mp4"


def run(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one process."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv} failed")
    return wall, usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clip", default=str(DEFAULT_CLIP))
    args = ap.parse_args()
    cli = [str(Path(sys.executable).parent / "vidclass"), "classify", args.clip]
    out = {"clip": Path(args.clip).name, "runs": args.runs}
    base = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")

    def torch_models(tmp: Path) -> Path:
        """The checkpoints alone in a fresh folder: torch loads them (and writes sidecars after)."""
        folder = Path(tempfile.mkdtemp(dir=tmp))
        for f in (REPO / "models_enhanced").iterdir():
            if f.suffix in (".pt", ".json"):
                shutil.copy(f, folder / f.name)
        return folder

    with tempfile.TemporaryDirectory() as tmp:
        modes = {"numpy_onnx": lambda: REPO / "models_enhanced",
                 "torch_checkpoints": lambda: torch_models(Path(tmp))}
        for mode, models in modes.items():
            run(cli, dict(base, VIDCLASS_MODELS_DIR=str(models())))      # warm: ONNX exports, page cache
            walls, rss = zip(*(run(cli, dict(base, VIDCLASS_MODELS_DIR=str(models()))) for _ in range(args.runs)))
            out[mode] = {"wall_s_median": round(statistics.median(walls), 2), "wall_s_max": round(max(walls), 2),
                         "peak_rss_mb_median": round(statistics.median(rss)), "peak_rss_mb_max": round(max(rss))}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
