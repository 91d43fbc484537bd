"""Ctrl-C (or SIGTERM) in a sweep stops the sweep and keeps what was recorded.

The running jobs stop their range tests, record their partial curves and mark their MLflow runs
KILLED (the engine's own Ctrl-C path); the jobs not yet started are skipped; the sweep summary
and the parent run are still written (the parent KILLED); the process exits 130.

The jobs tell each other through a file in the sweep dir, which every launcher shares: an
interrupted job leaves ``INTERRUPTED`` there and a job that finds it skips itself. With the
joblib launcher the jobs run in worker processes that get the terminal's Ctrl-C themselves, so
the parent must not react to the first one: joblib would kill the workers at once, before they
record anything. ``SweepInterrupt`` makes the parent wait for them; a second Ctrl-C quits at
once.

A job run by a batch scheduler (SLURM, ``lrexp.sweep.slurm``) is stopped alone: a time limit or
``scancel`` of one job must not skip the others (``lrexp.run.stops.scheduled_job``). What this
process received is kept in its ``lrexp.run.stops`` record, never in a module of its own.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lrexp.run import stops
from lrexp.run.files import INTERRUPTED_FILE
from lrexp.sweep.launchers import runs_parallel_loky_workers

log = logging.getLogger(__name__)


def mark(sweep_dir: str | Path) -> None:
    """Leave the sweep's marker, and note in this process's record that its sweep stopped."""
    record = stops.current()
    if record is not None:
        record.sweep_interrupted = True
    Path(sweep_dir, INTERRUPTED_FILE).touch()


def was_interrupted(sweep_dir: str | Path) -> bool:
    return Path(sweep_dir, INTERRUPTED_FILE).exists()


class SweepInterrupt(Callback):
    """Parent side: waits for joblib workers on the first Ctrl-C or SIGTERM; notes an
    interrupted sweep."""

    def __init__(self) -> None:
        self.previous_handlers: dict[int, Any] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not runs_parallel_loky_workers(config.hydra.launcher):
            return  # jobs run in this process (basic launcher) or get no signal from us
        sweep_dir = config.hydra.sweep.dir
        record = stops.current()

        def first_signal(signum: int, frame: Any) -> None:
            if signum == signal.SIGTERM and record is not None:
                record.received = signum
            mark(sweep_dir)
            log.warning("Stopping the sweep: the running jobs record their partial curves, the "
                        "others are skipped. Send the signal again to quit at once (running "
                        "jobs stay unrecorded).")
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

        self.previous_handlers = {signum: signal.signal(signum, first_signal)
                                  for signum in (signal.SIGINT, signal.SIGTERM)}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for signum, handler in self.previous_handlers.items():
            signal.signal(signum, handler)
        self.previous_handlers = {}
        if was_interrupted(config.hydra.sweep.dir):
            mark(config.hydra.sweep.dir)  # a worker saw the signal: this process exits 130/143
