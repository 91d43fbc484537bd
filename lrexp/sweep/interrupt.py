"""Ctrl-C (or SIGTERM) in a sweep stops the sweep and keeps what was recorded: running jobs
record their partial curves, jobs not yet started skip themselves (``INTERRUPTED`` in the sweep
dir), the summary and the parent run (KILLED) are written, the exit code is 130. joblib would
kill its workers at once if the parent reacted, so ``SweepInterrupt`` waits for them.
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
    """Parent side: waits for joblib workers on the first Ctrl-C or SIGTERM."""

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
