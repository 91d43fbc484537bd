"""Sweep wall time: Hydra's basic (serial) launcher against joblib with n_jobs=2, same store.

Both sweeps run the same 4 small nets (mlp, simple_cnn, vgg11, resnet18 at batch 16, 30 points)
into one SQLite store, alternating over rounds. Also measured: the overhead of a sweep over a
single run (one net as a 1-job multirun vs the same plain run: the parent run, the callback and
the summary).

    python scripts/bench_sweep.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

NETS = "mlp,simple_cnn,vgg11,resnet18"
COMMON = ["num_iter=30", "batch_size=16", "progress=false"]


def wall(args: list[str], cwd: str) -> float:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lrexp", *args], cwd=cwd, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cwd:
        wall(["net=mlp", "num_iter=5", "progress=false"], cwd)  # create the store first
        serial, parallel, single, sweep_of_one = [], [], [], []
        for _ in range(args.rounds):
            serial.append(wall(["-m", f"net={NETS}", *COMMON], cwd))
            parallel.append(wall(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                  f"net={NETS}", *COMMON], cwd))
            single.append(wall(["net=mlp", *COMMON], cwd))
            sweep_of_one.append(wall(["-m", "net=mlp", *COMMON], cwd))
    ratio = statistics.median(p / s for p, s in zip(parallel, serial))
    print(f"4-net sweep, serial (basic launcher): {statistics.median(serial):.1f} s")
    print(f"4-net sweep, joblib n_jobs=2:         {statistics.median(parallel):.1f} s")
    print(f"joblib / serial wall time:            {ratio:.2f}  (goal <= 0.65)")
    overhead = statistics.median(w - s for w, s in zip(sweep_of_one, single))
    print(f"1-job sweep vs single run:            {statistics.median(sweep_of_one):.1f} s vs "
          f"{statistics.median(single):.1f} s -> sweep overhead {overhead:+.1f} s")
    print(f"per job in the serial sweep:          {statistics.median(serial) / 4:.1f} s "
          f"(a single run, process start included: {statistics.median(single):.1f} s)")


if __name__ == "__main__":
    main()
