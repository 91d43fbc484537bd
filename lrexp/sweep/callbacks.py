"""Hydra callback for sweeps: one parent MLflow run per multirun, every job its child (its id
left in the sweep dir, for jobs in any process). At the end the jobs' run dirs give the summary
table, the overlay, the seed groups and the lowest minimum.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lrexp.run.files import (
    PARENT_CLOSED_FILE,
    PARENT_RUN_FILE,
    SWEEP_OVERLAY_FILE,
    SWEEP_SUMMARY_FILE,
    SWEPT_KEYS_FILE,
)
from lrexp.run.life import ENDED_ON_ITS_OWN, FAILED, FINISHED, KILLED
from lrexp.run.summary import format_table
from lrexp.run.sweep_dir import SweepJobs, collect_jobs, seeds_vary, write_summary_csv
from lrexp.sweep import interrupt
from lrexp.sweep.seed_groups import (
    SeedGroup,
    describe_group,
    seed_groups,
    write_group,
)

if TYPE_CHECKING:
    from lrexp.sweep.recorder import SweepRecorder

log = logging.getLogger(__name__)


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.recorder: SweepRecorder | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from lrexp.sweep.recorder import sweep_recorder
        from lrexp.tracking.redaction import redact_logs

        redact_logs()
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_swept_keys(config, sweep_dir)
        recorder = sweep_recorder(config.get("tracking"))
        if recorder is None:
            return
        run_id = recorder.open(parent_name(sweep_dir), tags={
            "lrexp.sweep": "true", "hydra_overrides": " ".join(config.hydra.overrides.task),
            "sweep_dir": str(sweep_dir.resolve())})
        if run_id is not None:
            self.parent_run_id, self.recorder = run_id, recorder
            (sweep_dir / PARENT_RUN_FILE).write_text(run_id)
            log.info("Sweep parent MLflow run: %s", run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lrexp.tracking.redaction import redact_file

        sweep_dir = Path(config.hydra.sweep.dir)
        record = sweep_dir / "multirun.yaml"  # Hydra's record of the sweep's overrides
        if record.is_file():
            redact_file(record)
        jobs = collect_jobs(sweep_dir)
        rows = jobs.rows
        if not rows:
            return
        table_path = write_summary_csv(rows, sweep_dir / SWEEP_SUMMARY_FILE)
        overlay_path = None
        if jobs.curves:
            from lrexp.plotting import plot_overlay, save_figure

            # 800 px wide: whole in MLflow's description panels (1600-px window, Assistant open)
            overlay_path = save_figure(plot_overlay(_overlay_curves(jobs)),
                                       sweep_dir / SWEEP_OVERLAY_FILE, dpi=100)
        try:
            groups, best = _read_seed_groups(sweep_dir, jobs)
        except KeyboardInterrupt:  # the parent run is closed, not left RUNNING
            self._close_parent(sweep_dir, rows, table_path, overlay_path, status=KILLED)
            raise
        log.info("Sweep summary (%s):\n%s%s", table_path, format_table(rows),
                 "".join(f"\n{line}" for line in [*map(describe_group, groups),
                                                    *([describe_best(best)] if best else [])]))
        self._close_parent(sweep_dir, rows, table_path, overlay_path, groups=groups, best=best)

    def _close_parent(self, sweep_dir: Path, rows: list[dict[str, Any]], table: Path,
                      overlay: Path | None, status: str | None = None,
                      groups: list[SeedGroup] | None = None,
                      best: dict[str, Any] | None = None) -> None:
        """The parent run with the sweep's results: KILLED if stopped, FAILED if every job was."""
        if self.parent_run_id is None or self.recorder is None:
            return
        if status is None:
            status = KILLED if interrupt.was_interrupted(sweep_dir) else \
                FAILED if all(row["status"] == FAILED for row in rows) else FINISHED
        for group in groups or []:
            self.recorder.log_seed_group(self.parent_run_id, group, len(groups or []) > 1)
        page = self.recorder.close(
            self.parent_run_id, rows=rows, files=[table, *([overlay] if overlay else [])],
            status=status, best=best,
            description=parent_description(self.parent_run_id, rows, overlay, table, best),
            experiment_note=experiment_note(self.parent_run_id, parent_name(sweep_dir), rows,
                                            overlay, table))
        if page:
            (sweep_dir / PARENT_CLOSED_FILE).write_text(status)
            log.info("The sweep in the MLflow UI, every job's curve in one chart: %s", page)


OVERLAY_SHOWS = "Every job's smoothed loss against the learning rate (log axis), one curve per job"


def parent_name(sweep_dir: Path) -> str:
    return f"sweep {sweep_dir.name}"


def _overlay_markdown(run_id: str, overlay: Path) -> str:
    """The overlay as markdown, its URL relative as MLflow's UI builds it (for path prefixes)."""
    from urllib.parse import quote

    return (f"![every job's loss against LR](get-artifact?path={quote(overlay.name)}"
            f"&run_uuid={run_id})")


def _jobs_line(rows: list[dict[str, Any]], table: Path) -> str:
    from collections import Counter

    statuses = ", ".join(f"{count} {status}" for status, count in
                         Counter(str(row["status"]) for row in rows).items())
    return (f"{len(rows)} jobs ({statuses}), each a child run of the sweep's run, whose "
            f"Artifacts hold their suggested LR and minimum loss (`{table.name}`).")


def parent_description(run_id: str, rows: list[dict[str, Any]], overlay: Path | None,
                       table: Path, best: dict[str, Any] | None = None) -> str:
    """The parent run's description (markdown, on its page in the MLflow UI)."""
    lines = [] if overlay is None else [_overlay_markdown(run_id, overlay), f"{OVERLAY_SHOWS}."]
    lines.append(_jobs_line(rows, table))
    if best is not None:
        lines.append(describe_best(best))
    return "\n\n".join(lines)


def experiment_note(run_id: str, run_name: str, rows: list[dict[str, Any]],
                    overlay: Path | None, table: Path) -> str:
    """The experiment's description (markdown): the latest sweep's overlay; "" without one."""
    if overlay is None:
        return ""
    return "\n\n".join([
        f"**Latest sweep**: [{run_name}](#/runs/{run_id}), every job's loss against LR "
        "(the ⌄ on the right shows it):",
        _overlay_markdown(run_id, overlay),
        f"{OVERLAY_SHOWS}; {_jobs_line(rows, table)}",
        "Each sweep is a run in the table below; its page shows its own chart."])


def _overlay_curves(jobs: SweepJobs) -> dict[str, Any]:
    """The overlay's curves by label: each job with its swept settings (or net / optimizer)."""
    return {f"{row['job']}: {row['swept'] or row['net'] + ' / ' + row['optimizer']}":
            jobs.curves[row["job"]] for row in jobs.rows if row["job"] in jobs.curves}


def write_swept_keys(config: DictConfig, sweep_dir: Path) -> list[str]:
    """The keys a sweep varies, from its command line (``net.depth=1,4``) and its sweeper's
    params (``sweep=seeds``), left in the sweep dir for the jobs to name their runs by."""
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [str(o.key_or_group) for o in parsed if o.is_sweep_override()]
    params = config.hydra.get("sweeper", {}).get("params") or {}
    keys += [str(key) for key in params if str(key) not in keys]
    (sweep_dir / SWEPT_KEYS_FILE).write_text(json.dumps(keys))
    return keys


def job_swept_settings(sweep_dir: Path, overrides: list[str]) -> str:
    """This job's overrides of the keys its sweep varies; all of them without that record."""
    try:
        keys = set(json.loads((sweep_dir / SWEPT_KEYS_FILE).read_text()))
    except (OSError, ValueError):
        return " ".join(overrides)
    parser = OverridesParser.create()
    return " ".join(o for o in overrides
                    if str(parser.parse_overrides([o])[0].key_or_group).lstrip("+~") in keys)


def lowest_minimum(rows: list[dict[str, Any]], noise: dict[str, float | None]
                   ) -> tuple[dict[str, Any] | None, str | None]:
    """The job whose curve reached the lowest loss, among jobs that suggest an LR: the swept
    setting that trains best (Smith 2018, section 4.3). A lead within the two curves' minibatch
    noise (``noise`` by job) is none: (None, the reason); (None, None) when no job qualifies."""
    finished = sorted((row for row in rows if row.get("status") in ENDED_ON_ITS_OWN
                       and isinstance(row.get("min_loss"), (int, float))
                       and row["min_loss"] == row["min_loss"]
                       and row.get("suggested_lr") is not None), key=lambda row: row["min_loss"])
    if not finished:
        return None, None
    best = finished[0]
    if len(finished) > 1:
        runner_up = finished[1]
        width = max(noise.get(best["job"]) or 0.0, noise.get(runner_up["job"]) or 0.0)
        if runner_up["min_loss"] - best["min_loss"] <= width:
            return None, (
                f"No clear winner: the lowest minima, {best['min_loss']:.6g} ({best['job']}) "
                f"and {runner_up['min_loss']:.6g} ({runner_up['job']}), differ by less than "
                f"the curves' minibatch noise ({width:.3g}); run seeds (sweep=seeds) or more "
                "points (num_iter) to tell them apart.")
    return best, None


def _read_seed_groups(sweep_dir: Path, jobs: SweepJobs
                      ) -> tuple[list[SeedGroup], dict[str, Any] | None]:
    """The sweep's seed groups, each written to its folder, and the row to name as the lowest
    minimum: among jobs, or among the groups' median curves (one seed's minimum is luck). A
    failure costs the groups and a warning, never the sweep's summary."""
    rows, overrides = jobs.rows, jobs.overrides
    try:
        groups = [write_group(group, sweep_dir) for group in seed_groups(
            overrides, rows, jobs.curves, sweep_dir, ENDED_ON_ITS_OWN)]
    except Exception as error:  # noqa: BLE001 - e.g. a full disk while writing a group's plot
        log.warning("The sweep's seeds were not read together: %s", error)
        groups = []
    if not groups:
        if seeds_vary(overrides, sweep_dir):
            log.info("The jobs ran with different seeds, but no two jobs of one setting ran "
                     "their course on one LR grid: no median curve, and no job is named best.")
            return [], None
        return [], _named_best(lowest_minimum(rows, {
            job: curve.loss_noise for job, curve in jobs.curves.items()}))
    if len(groups) == 1:
        return groups, None
    return groups, _named_best(lowest_minimum(
        [{**group.summary.row(group.name), "swept": group.setting, "group": True}
         for group in groups], {group.name: group.result.loss_noise for group in groups}))


def _named_best(found: tuple[dict[str, Any] | None, str | None]) -> dict[str, Any] | None:
    best, no_winner = found
    if no_winner:
        log.info(no_winner)
    return best


def describe_best(row: dict[str, Any]) -> str:
    setting = f" ({row['swept']})" if row.get("swept") else ""
    what = "median curve of seed group" if row.get("group") else "job"
    return (f"Lowest minimum loss: {what} {row['job']}{setting}: {row['min_loss']:.4g} at LR "
            f"{row['lr_at_min_loss']:.3g}; suggested LR {row['suggested_lr']:.3g} "
            f"(confidence {row['confidence']})")


class RunDirCheck(Callback):
    """Exit 2 with one paragraph when the run (or sweep) dir cannot be written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


def _require_writable(folder: Path, key: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a uniquely named probe: torchrun's ranks check the same folder at the same moment
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        sys.stderr.write(
            f"lrexp: error: the output folder {folder} cannot be written ({error.strerror}); "
            f"nothing was run. Set {key}=<a writable folder>, or run from a folder you can "
            "write to (outputs/ is created there).\n")
        raise SystemExit(2) from None
