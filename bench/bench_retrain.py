"""Retraining from corrections (issue "The service learns from its users"): the time of one retrain
on the CPU for the corpus plus N corrections, as the worker runs it (`python -m
vidclass.training.retrain` in a child process: start, both models' family folds, the held-out
correction groups, the final fit and writing the version), and a worker's switch to a new version
(Ensemble.load of its folder, what model_versions.use_active does before a task).

The corrections are corpus clip vectors with 5% multiplicative noise in 50 source groups: the
time depends on their number and width, not on what they show. (They duplicate corpus clips, so
the accuracies this prints are not a measurement of anything; tests/test_learning_loop.py has a
real one.)

    .venv/bin/python -m bench.bench_retrain [--corrections 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corrections", type=int, default=1000)
    args = parser.parse_args()
    from vidclass.training.retrain import CORPUS_POOLED, load_corpus_pooled

    corpus_path = REPO / "features_enhanced" / CORPUS_POOLED
    corpus = load_corpus_pooled(corpus_path)
    n = args.corrections
    rng = np.random.default_rng(0)
    idx = rng.choice(len(corpus.data), n)
    x = corpus.data.x[idx] * (1 + 0.05 * rng.standard_normal((n, corpus.data.x.shape[1]))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "corrections.npz", x=x.astype(np.float16), labels=corpus.data.labels[idx],
                 groups=np.array([f"g{i % 50}" for i in range(n)]), job_ids=np.array([f"j{i}" for i in range(n)]),
                 in_active=np.zeros(n, bool))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vidclass.training.retrain", "--corpus", str(corpus_path),
                        "--corrections", str(tmp / "corrections.npz"), "--out", str(tmp / "v2"),
                        "--result", str(tmp / "result.json")], check=True, env=env, stdout=subprocess.DEVNULL)
        retrain_s = time.perf_counter() - t
        result = json.loads((tmp / "result.json").read_text())

        code = ("import time, sys; t = time.perf_counter(); from vidclass.model.ensemble import Ensemble; "
                f"e = Ensemble.load({str(tmp / 'v2')!r}, device='cpu'); "
                "print(time.perf_counter() - t, type(e.members[0]).__name__, 'torch' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env).stdout.split()
    print(json.dumps({
        "corpus_clips": len(corpus.data), "corrections": n, "correction_groups": 50, "cores_used": 1,
        "retrain_s": round(retrain_s, 1), "folds": result["evaluation"]["folds"],
        "switch_load_s": round(float(out[0]), 3), "member_runtime": out[1], "torch_imported_by_load": out[2] == "True",
    }, indent=1))


if __name__ == "__main__":
    main()
