"""Start-up and default-run wall times of the CLI, measured side by side.

* ``python -m lrexp --help`` against ``python -c "import torch"``, interleaved over rounds
  (goal: help takes less than half as long, because it imports neither torch nor mlflow);
* the default run (digits + simple_cnn, 100 points), imports included, with tracking off and on
  (goal: <= 15 s wall on a 2-core laptop-class machine).

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
        for tracking in ("none", "mlflow"):
            runs = [wall([py, "-m", "lrexp", f"tracking={tracking}", "progress=false"], cwd)
                    for _ in range(max(2, args.rounds // 2))]
            print(f"default run, tracking={tracking}: median {statistics.median(runs):.1f} s "
                  f"wall (runs: {', '.join(f'{r:.1f}' for r in runs)})")


if __name__ == "__main__":
    main()
