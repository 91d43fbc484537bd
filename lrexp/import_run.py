"""Send a finished run dir to MLflow later (when the store was unreachable at run time).

    python -m lrexp.import_run outputs/2026-11-25/10-00-00 [--uri URI] [--experiment NAME]

Reads the run dir's config.yaml, summary.json and curve.csv and records them exactly as the
runner would have: params, tags, every step's lr / loss / loss_smooth, summary metrics and the
artifacts. Exit code 0 when the run is in MLflow, 2 when the folder is not an lrexp run dir,
1 when the store cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lrexp.result import RangeTestResult
from lrexp.tracking import MlflowTracker, flatten, resolve_tracking_uri

REQUIRED = ("config.yaml", "summary.json", "curve.csv")


def import_run(run_dir: Path, uri: str | None = None, experiment: str | None = None) -> str | None:
    """Record ``run_dir`` in MLflow; returns the new run id (None if the store is unusable)."""
    from omegaconf import OmegaConf

    missing = [name for name in REQUIRED if not (run_dir / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{run_dir} is not a finished lrexp run dir: {', '.join(missing)} missing. Pass the "
            "folder that holds curve.csv (e.g. outputs/<date>/<time>)."
        )
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    result = RangeTestResult.from_csv(run_dir / "curve.csv")
    tracking = config.get("tracking", {})
    tracker = MlflowTracker(uri=resolve_tracking_uri(uri or tracking.get("uri")),
                            experiment=experiment or tracking.get("experiment", "lrexp"),
                            timeout_s=float(tracking.get("timeout_s", 5.0)))
    names = {key: summary.get(key, "?") for key in ("net", "dataset", "optimizer")}
    tracker.start(run_name="-".join(names.values()), params=flatten(config),
                  tags={**names, "device": summary.get("device", "?"), "imported_from":
                        str(run_dir.resolve())})
    for step, (lr, loss) in enumerate(zip(result.lrs, result.losses)):
        tracker.log_step(step, float(lr), float(loss))
    files = {path.name: path for path in sorted(run_dir.iterdir())
             if path.suffix in (".png", ".csv", ".yaml", ".json")}
    status = "KILLED" if result.stop_reason == "interrupted" else "FINISHED"
    tracker.finish(status=status, result=result, summary=summary, files=files, out_dir=run_dir)
    return tracker.run_id if tracker.usable else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrexp.import_run", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--uri", help="tracking URI (default: the run's, MLFLOW_TRACKING_URI, "
                        "or sqlite:///mlflow.db)")
    parser.add_argument("--experiment", help="experiment name (default: the run's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_id = import_run(args.run_dir, args.uri, args.experiment)
    except FileNotFoundError as error:
        sys.stderr.write(f"lrexp.import_run: error: {error}\n")
        return 2
    if run_id is None:
        return 1
    print(f"Imported {args.run_dir} as MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
