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
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lrexp.sweep.launchers import runs_parallel_loky_workers

log = logging.getLogger(__name__)

MARKER = "INTERRUPTED"
_interrupted_here = False  # this process saw the sweep interrupted (read by __main__ for 130)
_terminated = False  # this process got SIGTERM (exit 143 instead of 130)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a SLURM time limit, ``docker stop``, systemd) taken as Ctrl-C, so the engine
    returns its partial curve and the run is recorded KILLED like an interrupted one."""


def terminated() -> bool:
    return _terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, the first SIGTERM raises ``Terminated``; later ones are ignored while
    the run records what it has (the sender's SIGKILL follows anyway after its grace time).
    Signal handlers can only be set in the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        global _terminated
        _terminated = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def mark(sweep_dir: str | Path) -> None:
    global _interrupted_here
    _interrupted_here = True
    Path(sweep_dir, MARKER).touch()


def was_interrupted(sweep_dir: str | Path) -> bool:
    return Path(sweep_dir, MARKER).exists()


def interrupted_in_this_process() -> bool:
    return _interrupted_here


class SweepInterrupt(Callback):
    """Parent side: waits for joblib workers on the first Ctrl-C or SIGTERM; notes an
    interrupted sweep."""

    def __init__(self) -> None:
        self.previous_handlers: dict[int, Any] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not runs_parallel_loky_workers(config.hydra.launcher):
            return  # jobs run in this process (basic launcher) or get no signal from us
        sweep_dir = config.hydra.sweep.dir

        def first_signal(signum: int, frame: Any) -> None:
            global _terminated
            _terminated = _terminated or signum == signal.SIGTERM
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
