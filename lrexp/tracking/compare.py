"""Compare range tests recorded in MLflow: a table and an overlay plot, rebuilt from each run's
``lr`` / ``loss`` metric histories, so it needs nothing but the tracking store.

    python -m lrexp.tracking.compare --experiment lrexp            # every run of an experiment
    python -m lrexp.tracking.compare --parent <run id>             # the children of a sweep
    python -m lrexp.tracking.compare --experiment lrexp --uri http://127.0.0.1:5000 --out cmp.png

It only reads (a missing store is refused, never created); every bad input is refused in one
paragraph with exit status 2, ``--out`` before the store is opened.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from lrexp.run.summary import RunSummary, format_table
from lrexp.tracking.defaults import DEFAULT_TIMEOUT_S
from lrexp.tracking.redaction import first_line, redact
from lrexp.tracking.store import (
    DATABASE_PORTS,
    resolve_tracking_uri,
    server_reachable,
    sqlite_store_problem,
)

__all__ = ["CompareError", "check_out", "check_run_id", "check_store", "curve_of", "fetch_runs",
           "main", "summary_of"]

SWEEP_PARENT_TAG = "lrexp.sweep"
PROG = "python -m lrexp.tracking.compare"
LIST_RUNS = ("List the store's runs with `mlflow runs list --experiment-id ID` or open it in "
             "`mlflow ui --backend-store-uri URI`; a sweep's parent is the run tagged lrexp.sweep.")


class CompareError(ValueError):
    """A bad input to compare: one paragraph saying what is wrong, the value, and the fix."""


# MLflow's run ids are 32 hex digits: no quote or operator in an id reaches a filter string
RUN_ID = re.compile(r"[0-9a-f]{1,32}")


def check_run_id(run_id: str) -> str:
    """The run id in lower case, or CompareError when it cannot be an MLflow run id."""
    if not RUN_ID.fullmatch(run_id.lower()):
        raise CompareError(
            f"--parent {run_id!r} is not an MLflow run id: a run id is 32 hexadecimal digits "
            f"(0-9, a-f), as in 5ddd61f16f56418d8712b725f65f3240. {LIST_RUNS}")
    return run_id.lower()


def check_out(out: Path) -> Path:
    """``--out`` must name a file (not an existing folder) in a format matplotlib writes."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if out.is_dir():
        raise CompareError(
            f"--out {str(out)!r} is an existing folder; --out names the plot's file. Give a file "
            f"path, e.g. --out {str(out / 'compare_runs.png')!r}.")
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise CompareError(
            f"--out {str(out)!r} does not end in a plot format that compare writes (got "
            f"{out.suffix or 'no extension'!r}); the extension picks the format, one of: "
            f"{', '.join(formats)}. E.g. --out {str(out.with_suffix('.png'))!r}.")
    return out


REMOTE_SCHEMES = {"databricks", "databricks-uc", "uc"}


def check_store(uri: str, timeout_s: float) -> None:
    """CompareError unless ``uri`` looks like a store compare can read: a SQLite file with runs,
    an http(s) server that answers within ``timeout_s``, a database URL, a file-store folder."""
    shown = redact(uri)
    fix = "Pass --uri (or set MLFLOW_TRACKING_URI) to the store your runs were recorded in"
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        if not urllib.parse.urlsplit(uri).hostname:
            raise CompareError(f"--uri {shown!r} names no host; an MLflow server's URI looks "
                               f"like http://127.0.0.1:5000. {fix}.")
        if not server_reachable(uri, timeout_s):
            raise CompareError(
                f"the tracking server {shown} did not answer within {timeout_s:g} s (nothing "
                f"listening there, or not an MLflow server). Start it (`mlflow server`), check "
                f"the host and port, or raise --timeout-s for a slow link. {fix}.")
        return
    if scheme == "sqlite":
        _check_sqlite(uri, shown, fix)
        return
    if scheme.split("+")[0] in DATABASE_PORTS or scheme in REMOTE_SCHEMES:
        return
    folder = Path(urllib.parse.urlsplit(uri).path if scheme == "file" else uri)
    if scheme in ("", "file") and folder.is_dir():
        return  # MLflow's file store (./mlruns): MLflow itself says whether it will read it
    raise CompareError(
        f"--uri {shown!r} is not a tracking URI compare can read: it needs sqlite:///PATH (a "
        f"file), http(s)://HOST:PORT (an MLflow server), a database URL (postgresql://..., "
        f"mysql://..., mssql://...) or an existing file-store folder. {fix}.")


def _check_sqlite(uri: str, shown: str, fix: str) -> None:
    if not uri.startswith("sqlite:///"):  # resolve_tracking_uri made the path absolute
        raise CompareError(f"--uri {shown!r} is not a SQLite URI MLflow reads: write "
                           f"sqlite:///relative/path.db or sqlite:////absolute/path.db. {fix}.")
    problem = sqlite_store_problem(uri, reading=True)
    if problem:
        raise CompareError(f"{problem} (--uri {shown!r}); compare only reads, so it never "
                           f"creates a store. {fix}.")


def fetch_runs(client: Any, experiment: str | None, parent: str | None) -> list[Any]:
    """A sweep's children (``parent`` from check_run_id), or an experiment's runs but parents."""
    if parent is not None:
        parent_run = _parent_run(client, parent)
        return client.search_runs([parent_run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                                  order_by=["attributes.start_time ASC"])
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise CompareError(f"there is no experiment named {experiment!r} in this store. Check "
                           "the name (`mlflow experiments search` lists them) and --uri.")
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    return [run for run in runs if SWEEP_PARENT_TAG not in run.data.tags]


def _parent_run(client: Any, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    short = " (the table's ids are the first 8 of 32 digits)" if len(run_id) < 32 else ""
    raise CompareError(f"there is no run with id {run_id!r} in this store{short}, so no sweep "
                       f"parent to compare. {LIST_RUNS}") from None


def summary_of(run: Any) -> RunSummary:
    """The run's summary as the tracker recorded it: tags and summary metrics."""
    tags = run.data.tags
    return RunSummary.from_metrics(run.data.metrics, tags, device=tags.get("device", "?"),
                                   status=tags.get("status", run.info.status),
                                   default_method=tags.get("default_method"))


def curve_of(client: Any, run: Any) -> Any:
    """The run's curve from its ``lr`` and ``loss`` histories."""
    import numpy as np

    from lrexp.engine.curve import smooth
    from lrexp.engine.result import RangeTestResult
    from lrexp.engine.suggest import REGIMES

    history = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
               for key in ("lr", "loss")}
    # a repeated test's lr follows its longest repeat, its loss (the median) may end sooner
    steps = sorted(history["lr"].keys() & history["loss"].keys())
    lrs = np.array([history["lr"][step] for step in steps], dtype=np.float64)
    losses = np.array([history["loss"][step] for step in steps], dtype=np.float64)
    beta = float(run.data.params.get("beta", 0.98))
    # the start the run's suggestion assumed, from its tags, so the overlay marks its LR
    tags = run.data.tags
    return RangeTestResult(lrs, losses, smooth(losses, beta), beta=beta,
                           range_schedule=run.data.params.get("schedule", "exp"),
                           pretrained=tags.get("regime") == REGIMES[1],
                           momentum=tags.get("momentum") != "false")


def _row(run: Any) -> dict[str, Any]:
    """The run's table row; its ``swept`` the settings its name adds to net-dataset-optimizer
    (a sweep child's: what its siblings set otherwise)."""
    summary = summary_of(run)
    name = run.info.run_name or ""
    swept = name[len(summary.run_name):].strip() if name.startswith(summary.run_name) else ""
    return {**summary.row(run.info.run_id[:8]), "swept": swept or None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="every run of this MLflow experiment")
    which.add_argument("--parent", help="a sweep's parent run id")
    parser.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI or "
                        "sqlite:///mlflow.db)")
    parser.add_argument("--out", type=Path, default=Path("compare_runs.png"),
                        help="the overlay plot's file, its extension the format (.png, .pdf, "
                        ".svg, ...; default: compare_runs.png); an existing folder is refused")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                        help="how long to wait for a tracking server's answer, in seconds "
                        f"(default: {DEFAULT_TIMEOUT_S:g})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.timeout_s > 0:
        parser.error(f"--timeout-s must be > 0 seconds; got {args.timeout_s:g}.")
    try:
        return _compare(args)
    except CompareError as error:
        sys.stderr.write(f"{PROG}: error: {error}\n")
        return 2


def _compare(args: argparse.Namespace) -> int:
    """Check every input, then read the runs, print the table and write the plot."""
    check_out(args.out)
    parent = None if args.parent is None else check_run_id(args.parent)
    uri = resolve_tracking_uri(args.uri)
    check_store(uri, args.timeout_s)

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from lrexp.plotting import plot_overlay, save_figure
    from lrexp.tracking.mlflow_tracker import http_limits

    with http_limits(args.timeout_s):
        try:
            client = MlflowClient(uri)
            runs = fetch_runs(client, args.experiment, parent)
            rows = [_row(run) for run in runs]
            curves = {f"{run.info.run_name} ({run.info.run_id[:8]})": curve_of(client, run)
                      for run in runs}
        except MlflowException as error:
            raise CompareError(f"MLflow could not read the store {redact(uri)}: "
                               f"{first_line(error)} Check --uri and that the store is up."
                               ) from None
    if not runs:
        what = (f"the run {args.parent} has no child runs (is it a sweep's parent? a single "
                "run is compared with --experiment)" if args.parent is not None else
                f"the experiment {args.experiment!r} has no range-test runs")
        print(f"compare: no runs found: {what}.", file=sys.stderr)
        return 1
    print(format_table(rows))
    save_figure(plot_overlay(curves), args.out)
    print(f"overlay plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
