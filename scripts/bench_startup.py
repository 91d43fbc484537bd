"""Start-up and default-run wall times of the CLI, measured side by side.

* ``python -m lrexp --help`` against ``python -c "import torch"``, interleaved over rounds
  (goal: help takes less than half as long, because it imports neither torch nor mlflow);
* the default run (digits + simple_cnn, 100 points), imports included, with MLflow tracking
  (a fresh SQLite store each time, as a first run in a new folder) against ``tracking=none``,
  interleaved pair by pair (goal: MLflow costs <= 1.15x: its import and store set-up run beside
  the range test, not before it).

    python scripts/bench_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time


def wall(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as cwd:
        help_times, torch_times = [], []
        for _ in range(args.rounds):
            help_times.append(wall([py, "-m", "lrexp", "--help"], cwd))
            torch_times.append(wall([py, "-c", "import torch"], cwd))
        ratios = [h / t for h, t in zip(help_times, torch_times)]
        print(f"--help {statistics.median(help_times):.2f} s, import torch "
              f"{statistics.median(torch_times):.2f} s, ratio (median of rounds) "
              f"{statistics.median(ratios):.2f}")
        runs: dict[str, list[float]] = {"none": [], "mlflow": []}
        for round_ in range(args.rounds):
            store = f"sqlite:///{cwd}/mlflow-{round_}.db"  # new each round: a first run's cost
            runs["none"].append(wall([py, "-m", "lrexp", "tracking=none", "progress=false"], cwd))
            runs["mlflow"].append(wall([py, "-m", "lrexp", f"tracking.uri={store}",
                                        "progress=false"], cwd))
        for tracking, times in runs.items():
            print(f"default run, tracking={tracking}: median {statistics.median(times):.1f} s "
                  f"wall (runs: {', '.join(f'{t:.1f}' for t in times)})")
        pairs = [m / n for m, n in zip(runs["mlflow"], runs["none"])]
        print(f"MLflow / none: median of pairs {statistics.median(pairs):.2f} "
              f"(pairs: {', '.join(f'{r:.2f}' for r in pairs)})")


if __name__ == "__main__":
    main()
