"""Many writers, one SQLite store: do parallel jobs lose anything, and how often do they wait?

Runs a 6-job sweep (mlp, seeds 0-5, 100 points) with the joblib launcher at n_jobs=3 and at
n_jobs=6 into a fresh SQLite store each, then counts: children FINISHED, complete lr/loss
histories (against each job's curve.csv), and lrexp's retries of a store call ("MLflow store
busy" in the job logs). MLflow already waits up to 20 s for SQLite's write lock on every
session (PRAGMA busy_timeout); lrexp's retry with backoff is the layer above that.

    python scripts/bench_sqlite_writers.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from lrexp.engine.result import RangeTestResult

JOBS = ["net=mlp", "seed=0,1,2,3,4,5", "num_iter=100", "progress=false"]


def sweep(n_jobs: int, cwd: Path) -> dict[str, float]:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lrexp", "-m", "hydra/launcher=joblib",
                           f"hydra.launcher.n_jobs={n_jobs}", *JOBS], cwd=cwd, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the sweep failed:\n{proc.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lrexp")
    children = [r for r in client.search_runs([experiment.experiment_id])
                if "mlflow.parentRunId" in r.data.tags]
    complete = 0
    for child in children:
        rows = len(RangeTestResult.from_csv(Path(child.data.tags["run_dir"]) / "curve.csv"))
        histories = [client.get_metric_history(child.info.run_id, key) for key in ("lr", "loss")]
        complete += all(len(h) == rows for h in histories)
    retries = sum(log.read_text().count("MLflow store busy")
                  for log in cwd.glob("outputs/multirun/*/*/*/lrexp.log"))
    return {"wall": wall, "finished": sum(c.info.status == "FINISHED" for c in children),
            "complete": complete, "retries": retries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("n_jobs  round  wall     children FINISHED  complete histories  store retries")
    for n_jobs in (3, 6):
        for round_ in range(args.rounds):
            with tempfile.TemporaryDirectory() as cwd:
                got = sweep(n_jobs, Path(cwd))
            print(f"{n_jobs:6d}  {round_:5d}  {got['wall']:5.1f} s  {got['finished']:4d} of 6"
                  f"          {got['complete']:4d} of 6          {got['retries']:4d}")


if __name__ == "__main__":
    main()
