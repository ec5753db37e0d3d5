"""Run every benchmark in turn (`make bench`); each prints its own table for BENCHMARKS.md."""
import subprocess
import sys

BENCHMARKS = ("bench.bench_sampling", "bench.bench_features", "bench.bench_pipeline_cost", "bench.bench_api",
              "bench.bench_segments")


def main() -> int:
    failed = 0
    for module in BENCHMARKS:
        print(f"== {module}", flush=True)
        failed += subprocess.call([sys.executable, "-m", module]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
