"""Compare range tests recorded in MLflow: a table and an overlay plot.

    python scripts/compare_runs.py --experiment lrexp            # every run of an experiment
    python scripts/compare_runs.py --parent <run id>             # the children of a sweep
    python scripts/compare_runs.py --experiment lrexp --uri http://127.0.0.1:5000 --out cmp.png

Curves are rebuilt from each run's ``lr`` / ``loss`` metric histories (MlflowClient), so the
plot needs nothing but the tracking store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lrexp.engine.curve import smooth
from lrexp.engine.result import RangeTestResult
from lrexp.plotting import plot_overlay, save_figure
from lrexp.sweep.callbacks import format_table
from lrexp.tracking.mlflow_tracker import resolve_tracking_uri


def fetch_runs(client, experiment: str | None, parent: str | None) -> list:
    if parent:
        parent_run = client.get_run(parent)
        return client.search_runs([parent_run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                                  order_by=["attributes.start_time ASC"])
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"compare_runs: no experiment named {experiment!r} in this store.")
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    return [run for run in runs if "lrexp.sweep" not in run.data.tags]  # skip sweep parents


def curve_of(client, run) -> RangeTestResult:
    history = {key: sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
               for key in ("lr", "loss")}
    lrs = [m.value for m in history["lr"]]
    losses = [m.value for m in history["loss"]]
    beta = float(run.data.params.get("beta", 0.98))
    return RangeTestResult(lrs, losses, smooth(losses, beta), beta=beta,
                           schedule=run.data.params.get("schedule", "exp"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment")
    which.add_argument("--parent", help="a sweep's parent run id")
    parser.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI or "
                        "sqlite:///mlflow.db)")
    parser.add_argument("--out", type=Path, default=Path("compare_runs.png"))
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(resolve_tracking_uri(args.uri))
    runs = fetch_runs(client, args.experiment, args.parent)
    if not runs:
        print("compare_runs: no runs found.", file=sys.stderr)
        return 1
    rows, curves = [], {}
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        label = f"{run.info.run_name} ({run.info.run_id[:8]})"
        rows.append({"job": run.info.run_id[:8], "net": tags.get("net"),
                     "optimizer": tags.get("optimizer"), "status": run.info.status,
                     **{key: metrics.get(key) for key in (
                         "suggested_lr", "suggested_lr_steepest", "suggested_lr_valley",
                         "min_loss", "diverged_lr")}})
        curves[label] = curve_of(client, run)
    print(format_table(rows))
    save_figure(plot_overlay(curves), args.out)
    print(f"overlay plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
