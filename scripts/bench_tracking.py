"""Per-step cost of recording a curve in MLflow: lrexp's buffered tracker against the naive
``mlflow.log_metrics`` call per step, side by side on the same SQLite store.

For each round (interleaved): one run logs ``lr`` and ``loss`` for N steps the naive way, one
with ``MlflowTracker`` (log_step in the loop, everything sent in log_batch chunks at finish).
Reported per step: the in-loop cost and the amortized cost (loop + the final flush) / N.
Run creation is timed separately and is the same for both.

    python scripts/bench_tracking.py [--steps 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path


def naive(uri: str, steps: int) -> tuple[float, float]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        start = time.perf_counter()
        for step in range(steps):
            mlflow.log_metrics({"lr": 1e-7 * 1.2**step, "loss": 2.3 - step * 1e-3}, step=step)
        loop = time.perf_counter() - start
    return loop, loop


def lrexp_tracker(uri: str, steps: int) -> tuple[float, float]:
    from lrexp.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(uri, experiment="bench")
    tracker.start("bench", params={}, tags={})
    start = time.perf_counter()
    for step in range(steps):
        tracker.log_step(step, 1e-7 * 1.2**step, 2.3 - step * 1e-3)
    loop = time.perf_counter() - start
    tracker._send_steps()  # what finish() sends for the curve, timed on its own
    total = time.perf_counter() - start
    tracker.finish(status="FINISHED")
    return loop, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'bench.db'}"
        naive(uri, 2), lrexp_tracker(uri, 2)  # create tables and experiment before timing
        results: dict[str, list[tuple[float, float]]] = {"naive log_metrics": [], "lrexp": []}
        for _ in range(args.rounds):
            results["naive log_metrics"].append(naive(uri, args.steps))
            results["lrexp"].append(lrexp_tracker(uri, args.steps))
    for name, rounds in results.items():
        loop = statistics.median(r[0] for r in rounds) / args.steps * 1e3
        total = statistics.median(r[1] for r in rounds) / args.steps * 1e3
        print(f"{name:18s} in-loop {loop:8.4f} ms/step   amortized {total:8.4f} ms/step")
    ratio = statistics.median(r[1] for r in results["lrexp"]) / \
        statistics.median(r[1] for r in results["naive log_metrics"])
    print(f"lrexp / naive (amortized): {ratio:.4f}  ({args.steps} steps, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
