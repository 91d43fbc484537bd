"""A sweep's parent MLflow run: opened before its jobs, closed with the sweep's table, overlay,
per-job series, lowest minimum and seed groups; from the same ``tracking`` settings as the jobs."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lrexp.run.summary import SeedGroup
from lrexp.tracking.build import target_class
from lrexp.tracking.mlflow_tracker import (
    MlflowStore,
    median_band_series,
    repeat_loss_key,
    repeat_loss_series,
)

__all__ = ["LATEST_SWEEP_NOTE", "NOTE_TAG", "SweepRecorder", "sweep_recorder"]

log = logging.getLogger(__name__)

OVERLAY_IMAGE_KEY = "sweep_overlay"
NOTE_TAG = "mlflow.note.content"  # a run's or an experiment's description in the UI (markdown)
# Marks the experiment description lrexp keeps (the latest sweep's overlay) from a user's own
LATEST_SWEEP_NOTE = "<!-- lrexp: the latest sweep -->"
# The parent's series, one step per job: the children side by side in its charts.
PARENT_SERIES = {"job_suggested_lr": "suggested_lr", "job_min_loss": "min_loss",
                 "job_lr_at_min_loss": "lr_at_min_loss"}


def sweep_recorder(tracking: Mapping[str, Any] | None) -> SweepRecorder | None:
    """The parent run's recorder, where the jobs' run logger records into an MLflow store."""
    if tracking is None or not tracking.get("enabled", True):
        return None
    logger_class = target_class(str(tracking["_target_"]))
    if not (isinstance(logger_class, type) and issubclass(logger_class, MlflowStore)):
        return None
    return SweepRecorder(**{key: tracking[key] for key in ("uri", "experiment", "timeout_s")
                            if key in tracking})


class SweepRecorder(MlflowStore):
    """The parent run of one sweep."""

    def open(self, run_name: str, tags: Mapping[str, str]) -> str | None:
        """Create the parent run; its id, or None when the store is unusable."""
        with self.never_failing("creating the sweep's parent run"):
            return self.create_run(run_name, tags) if self.connect() else None
        return None

    def log_seed_group(self, run_id: str, group: SeedGroup, prefixed: bool) -> None:
        """A seed group as a repeated test's run has it, its files under its folder name; with
        several groups (``prefixed``) names start with the group's ("seeds_x/loss")."""
        prefix = f"{group.name}/" if prefixed else ""
        # which seed (and job) each loss_repeat_<i> series is
        order = ", ".join(f"{repeat_loss_key(index)}: seed {seed} ({job})"
                          for index, (seed, job) in enumerate(zip(group.seeds, group.jobs)))
        with self.never_failing("sending the sweep's seeds"):
            if not self.connect():
                return
            series = [*repeat_loss_series(group.result), *median_band_series(group.result),
                      (0, group.summary.metrics())]
            self.log_metrics(run_id, [(f"{prefix}{name}", value, step) for step, values in series
                                      for name, value in values.items()])
            self.set_tags(run_id, {f"{prefix}seeds": order[:5000]})
            for path in group.files.values():
                self.log_artifact(run_id, path, group.name)
            self.log_image(run_id, group.files["plot"], f"{group.name}_median")

    def close(self, run_id: str, rows: list[dict[str, Any]], files: list[Path], status: str,
              best: dict[str, Any] | None = None, description: str = "",
              experiment_note: str = "") -> str | None:
        """End the parent with the sweep's results, its ``description`` on its page and
        ``experiment_note`` above the experiment's runs; its page, or None when closing failed."""
        try:
            if not self.connect():
                return None
            table = {column: [row.get(column) for row in rows] for column in rows[0]}
            self.call(lambda: self.client.log_table(run_id, table, "sweep_summary.json"),
                      "log table")
            for path in files:
                self.log_artifact(run_id, path)
                if path.suffix == ".png":
                    self.log_image(run_id, path, OVERLAY_IMAGE_KEY)
            self._log_results(run_id, rows, best)
            if description:  # MLflow's UI shows this tag as the run's description
                self.set_tags(run_id, {NOTE_TAG: description})
            if experiment_note:
                self.call(lambda: self._note_experiment(experiment_note), "tag experiment")
            self.set_tags(run_id, {"status": status})
            self.call(lambda: self.end_run(run_id, status), "end run")
            return self.page(run_id)
        except Exception as error:  # noqa: BLE001 - tracking must never fail the sweep
            self.give_up(f"closing the sweep's parent run at {self.uri} failed: {error}")
            self.close_incomplete(run_id, error)
            return None

    def _log_results(self, run_id: str, rows: list[dict[str, Any]],
                     best: dict[str, Any] | None) -> None:
        """Each job's suggested LR and minimum loss as series over job order; the best's too."""
        points = [(name, float(row[column]), index)
                  for index, row in enumerate(rows) for name, column in PARENT_SERIES.items()
                  if isinstance(row.get(column), (int, float)) and math.isfinite(row[column])]
        if best is not None:
            points += [(f"best_{column}", float(best[column]), 0)
                       for column in ("suggested_lr", "min_loss")]
            self.set_tags(run_id, {"best_job": str(best["job"]),
                                   "best_swept": best.get("swept") or ""})
        if points:
            self.log_metrics(run_id, points)

    def _note_experiment(self, note: str) -> None:
        current = self.client.get_experiment(self.experiment_id).tags.get(NOTE_TAG, "")
        if not current or current.startswith(LATEST_SWEEP_NOTE):  # never a user's own
            self.client.set_experiment_tag(self.experiment_id, NOTE_TAG,
                                           f"{LATEST_SWEEP_NOTE}\n{note}")
