"""Compare range tests recorded in MLflow: a table and an overlay plot, rebuilt from each run's
``lr`` / ``loss`` metric histories, so it needs nothing but the tracking store.

    python -m lrexp.tracking.compare --experiment lrexp            # every run of an experiment
    python -m lrexp.tracking.compare --parent <run id>             # the children of a sweep
    python -m lrexp.tracking.compare --experiment lrexp --uri http://127.0.0.1:5000 --out cmp.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lrexp.tracking.store import resolve_tracking_uri
from lrexp.tracking.summary import CONFIDENCE_SCORES, RunSummary, format_table

__all__ = ["curve_of", "fetch_runs", "main", "summary_of"]

SWEEP_PARENT_TAG = "lrexp.sweep"


def fetch_runs(client: Any, experiment: str | None, parent: str | None) -> list[Any]:
    """A sweep's children, or every range test of an experiment (sweep parents left out)."""
    if parent:
        parent_run = client.get_run(parent)
        return client.search_runs([parent_run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                                  order_by=["attributes.start_time ASC"])
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"compare: no experiment named {experiment!r} in this store.")
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    return [run for run in runs if SWEEP_PARENT_TAG not in run.data.tags]


# summary metrics named suggested_lr_* that are not a rule's suggestion
NOT_METHODS = {"low", "high", "iqr_decades", "range_decades"}


def summary_of(run: Any) -> RunSummary:
    """The run's summary as the tracker recorded it: tags and summary metrics."""
    tags, metrics = run.data.tags, run.data.metrics
    scores = {score: name for name, score in CONFIDENCE_SCORES.items()}
    confidence = metrics.get("suggestion_confidence")
    prefix = "suggested_lr_"
    return RunSummary(
        net=tags.get("net", "?"), dataset=tags.get("dataset", "?"),
        optimizer=tags.get("optimizer", "?"), status=tags.get("status", run.info.status),
        device=tags.get("device", "?"), suggested_lr=metrics.get("suggested_lr"),
        default_method=tags.get("default_method"),
        confidence=None if confidence is None else scores.get(int(confidence)),
        suggestions={key[len(prefix):]: value for key, value in metrics.items()
                     if key.startswith(prefix) and key[len(prefix):] not in NOT_METHODS},
        min_loss=metrics.get("min_loss"), lr_at_min_loss=metrics.get("lr_at_min_loss"),
        diverged_lr=metrics.get("diverged_lr"), repeats=int(metrics.get("repeats", 1)),
        suggested_lr_iqr_decades=metrics.get("suggested_lr_iqr_decades"),
        suggested_lr_range_decades=metrics.get("suggested_lr_range_decades"))


def curve_of(client: Any, run: Any) -> Any:
    """The run's curve from its ``lr`` and ``loss`` histories."""
    import numpy as np

    from lrexp.engine.curve import smooth
    from lrexp.engine.result import RangeTestResult

    history = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
               for key in ("lr", "loss")}
    # a repeated test's lr follows its longest repeat, its loss (the median) may end sooner
    steps = sorted(history["lr"].keys() & history["loss"].keys())
    lrs = np.array([history["lr"][step] for step in steps], dtype=np.float64)
    losses = np.array([history["loss"][step] for step in steps], dtype=np.float64)
    beta = float(run.data.params.get("beta", 0.98))
    return RangeTestResult(lrs, losses, smooth(losses, beta), beta=beta,
                           range_schedule=run.data.params.get("schedule", "exp"))


def _row(run: Any) -> dict[str, Any]:
    """The run's table row; its ``swept`` the settings its name adds to net-dataset-optimizer
    (a sweep child's: what its siblings set otherwise)."""
    summary = summary_of(run)
    name = run.info.run_name or ""
    swept = name[len(summary.run_name):].strip() if name.startswith(summary.run_name) else ""
    return {**summary.row(run.info.run_id[:8]), "swept": swept or None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrexp.tracking.compare",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="every run of this MLflow experiment")
    which.add_argument("--parent", help="a sweep's parent run id")
    parser.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI or "
                        "sqlite:///mlflow.db)")
    parser.add_argument("--out", type=Path, default=Path("compare_runs.png"),
                        help="where to write the overlay plot (default: compare_runs.png)")
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    from lrexp.plotting import plot_overlay, save_figure

    client = MlflowClient(resolve_tracking_uri(args.uri))
    runs = fetch_runs(client, args.experiment, args.parent)
    if not runs:
        print("compare: no runs found.", file=sys.stderr)
        return 1
    rows = [_row(run) for run in runs]
    curves = {f"{run.info.run_name} ({run.info.run_id[:8]})": curve_of(client, run)
              for run in runs}
    print(format_table(rows))
    save_figure(plot_overlay(curves), args.out)
    print(f"overlay plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
