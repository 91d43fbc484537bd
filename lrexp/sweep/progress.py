"""Sweep progress on the console: job k of n, the time so far and an estimate of the rest, from
the total and start time left in the sweep dir (any job's process can read them).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lrexp.run.summary import SUMMARY_FILE
from lrexp.tracking.redaction import redact

__all__ = ["SweepProgress", "count_jobs", "progress_line"]

log = logging.getLogger(__name__)

PROGRESS_FILE = "sweep_progress.json"


def count_jobs(config: DictConfig) -> int | None:
    """How many jobs Hydra's basic sweeper makes of this config; None for another sweeper."""
    if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    # every combination, a key set twice taking its last (test_progress.py checks it on Hydra)
    values = {override.get_key_element(): len(list(override.sweep_string_iterator()))
              if override.is_sweep_override() else 1 for override in overrides}
    return math.prod(values.values())


def progress_line(job: int, total: int | None, done: int, elapsed_s: float) -> str:
    """``job 3 of 9 starting; 2 done in 1m40s, about 5m50s left`` (job counts from 1)."""
    of_total = f" of {total}" if total else ""
    line = f"Sweep: job {job}{of_total} starting; {done} done in {_duration(elapsed_s)}"
    if total and done:
        line += f", about {_duration(elapsed_s / done * (total - done))} left"
    return line


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes \
        else f"{secs}s"


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            total = count_jobs(config)
        except Exception as error:  # noqa: BLE001 - progress must never stop a sweep
            log.debug("Counting the sweep's jobs failed: %s", error)
            total = None
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PROGRESS_FILE).write_text(json.dumps({"total": total,
                                                           "started": time.time()}))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            progress = json.loads((sweep_dir / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return  # not a multirun, or started without this callback
        done = len(list(sweep_dir.glob(f"*/{SUMMARY_FILE}")))
        overrides = redact(" ".join(config.hydra.overrides.task))
        log.info("%s (%s)", progress_line(int(config.hydra.job.num) + 1, progress.get("total"),
                                          done, time.time() - progress["started"]), overrides)
