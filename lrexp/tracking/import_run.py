"""Send a run dir to MLflow later (when the store was unreachable at run time, or the run crashed).

    python -m lrexp.tracking.import_run outputs/2026-11-25/10-00-00 [--uri URI] [--experiment NAME]

Records the run dir (read by ``lrexp.run.run_dir``, which trusts nothing in it) as the runner
would have; a run dir without summary.json is imported KILLED with every step of its curve. The
store is --uri, else MLFLOW_TRACKING_URI, else MLflow's default; the run's own tracking.uri only
with --use-run-dir-uri. Everything is checked before the MLflow run is created. Exit code 0 when
the run is in MLflow, 2 when the folder is not a usable lrexp run dir, 1 when the store fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lrexp.run.files import ARTIFACT_SUFFIXES, CONFIG_FILE, SUMMARY_FILE
from lrexp.run.run_dir import RunDir, RunDirError, read_run_dir, resolved_dir, shown
from lrexp.tracking.defaults import DEFAULT_EXPERIMENT, DEFAULT_TIMEOUT_S
from lrexp.tracking.mlflow_tracker import (
    INCOMPLETE_TAG,
    MlflowTracker,
    flatten,
    median_band_series,
    name_refused,
    repeat_loss_series,
)

__all__ = ["RunDirError", "import_run", "main"]

log = logging.getLogger(__name__)


def check_mlflow_names(run: RunDir) -> None:
    """Refuse a name MLflow would refuse mid-import, so that no half-sent run is left behind."""
    _check_names(flatten(run.config), run.path / CONFIG_FILE, "setting", param=True)
    if run.summary is not None:
        _check_names([f"suggested_lr_{name}" for name in run.summary.suggestions],
                     run.path / SUMMARY_FILE, "metric", param=False)


def _check_names(names: Iterable[Any], path: Path, what: str, param: bool) -> None:
    for name in names:
        if name_refused(str(name), param):
            raise RunDirError(
                f"{path}: the {what} name {shown(str(name))} is not one MLflow accepts (letters, "
                "digits, _ - . / : and spaces, a relative path without '..'). Rename it in "
                f"{path.name}."
            ) from None


class _StagedTracker(MlflowTracker):
    """Sends the run dir's extras (.hydra, logs) from the checked copy, not the dir itself."""

    def __init__(self, staged: Path, **settings: Any) -> None:
        super().__init__(**settings)
        self.staged = staged

    def _send_run_dir_extras(self, run_id: str, out_dir: Path) -> None:
        super()._send_run_dir_extras(run_id, self.staged)

    def runs_of(self, run_dir: Path) -> list[str]:
        """The experiment's live, complete runs that already hold ``run_dir`` (tag ``run_dir`` or
        ``imported_from``); none when the store is unreachable or the path has a quote."""
        if "'" in str(run_dir) or not self.connect():
            return []
        found = []
        for tag in ("run_dir", "imported_from"):
            query = f"tags.{tag} = '{run_dir}'"
            found += self.call(lambda q=query: self.client.search_runs(
                [self.experiment_id], q, max_results=10), "search runs")
        return sorted({run.info.run_id for run in found if INCOMPLETE_TAG not in run.data.tags})


def _tracker(run: RunDir, staged: Path, uri: str | None, experiment: str | None,
             use_run_dir_uri: bool) -> _StagedTracker:
    """Where to send: --uri, else (only when asked) the run's own tracking.uri, else
    MLFLOW_TRACKING_URI or MLflow's default; the run's experiment name is harmless."""
    tracking = run.tracking
    return _StagedTracker(
        staged, uri=uri or (tracking.get("uri") if use_run_dir_uri else None),
        experiment=experiment or tracking.get("experiment", DEFAULT_EXPERIMENT),
        timeout_s=tracking.get("timeout_s", DEFAULT_TIMEOUT_S))


def _send(run: RunDir, tracker: MlflowTracker, staged: Path) -> None:
    names = run.names
    weights = {"weights": run.summary.weights} if run.summary and run.summary.weights else {}
    tracker.start(run_name="-".join(names.values()), params={**flatten(run.config), **weights},
                  tags={**names, "device": run.summary.device if run.summary else "?",
                        "imported_from": str(run.path), **weights})
    if run.curve.repeats:
        for step, values in [*repeat_loss_series(run.curve), *median_band_series(run.curve)]:
            tracker.log_values(step, values)
    else:
        for step, (lr, loss) in enumerate(zip(run.curve.lrs, run.curve.losses)):
            tracker.log_step(step, float(lr), float(loss))
    files = {path.name: path for path in sorted(staged.iterdir())
             if path.is_file() and path.suffix in ARTIFACT_SUFFIXES}
    tracker.finish(status=run.status, result=run.curve, summary=run.summary, files=files,
                   out_dir=run.path)


def import_run(run_dir: Path | str, uri: str | None = None, experiment: str | None = None, *,
               use_run_dir_uri: bool = False, again: bool = False) -> str | None:
    """Record ``run_dir`` in MLflow; the new run id (None if the store is unusable). RunDirError
    before anything is sent when it cannot be imported or is there already (unless ``again``)."""
    run_dir = resolved_dir(run_dir)
    with tempfile.TemporaryDirectory(prefix="lrexp-import-") as staging:
        staged = Path(staging)
        run = read_run_dir(run_dir, staged)
        check_mlflow_names(run)
        tracker = _tracker(run, staged, uri, experiment, use_run_dir_uri)
        earlier = [] if again else tracker.runs_of(run_dir)
        if earlier:
            raise RunDirError(
                f"{run_dir} is already in MLflow experiment {tracker.experiment!r} at "
                f"{tracker.uri}, as run {', '.join(earlier)}; nothing was sent. Importing it "
                "again would make a duplicate run: pass --again if that is what you want, or "
                "delete the earlier run first (mlflow runs delete --run-id ...).")
        _send(run, tracker, staged)
    return tracker.run_id if tracker.usable else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lrexp.tracking.import_run",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI, else "
                       "sqlite:///mlflow.db)")
    where.add_argument("--use-run-dir-uri", action="store_true",
                       help="send to the tracking.uri named in the run dir's config.yaml")
    parser.add_argument("--experiment", help="experiment name (default: the run's, else lrexp)")
    parser.add_argument("--again", action="store_true",
                        help="record the run dir even if the experiment already holds it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_id = import_run(args.run_dir, args.uri, args.experiment,
                            use_run_dir_uri=args.use_run_dir_uri, again=args.again)
    except RunDirError as error:
        sys.stderr.write(f"lrexp.tracking.import_run: error: {error}\n")
        return 2
    if run_id is None:  # the tracker's warning above says why
        sys.stderr.write(f"lrexp.tracking.import_run: error: {args.run_dir} was not imported: "
                         "the MLflow store failed or could not be reached. Check --uri (or "
                         "MLFLOW_TRACKING_URI) and that the store is up, then run this again.\n")
        return 1
    print(f"Imported {args.run_dir} as MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
