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
``scancel`` of one job must not skip the others. The scheduler's module declares itself with
``scheduled_job``: its extra stop signals (submitit's SIGUSR2 notice), and how to tell why a
job was stopped, which the run records as ``stopped_by``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lrexp.sweep.launchers import runs_parallel_loky_workers

log = logging.getLogger(__name__)

MARKER = "INTERRUPTED"
_interrupted_here = False  # this process saw the sweep interrupted (read by __main__ for 130)
_terminated = False  # this process got SIGTERM (exit 143 instead of 130)
_received: int | None = None  # the stop signal this process got


@dataclass(frozen=True)
class Scheduler:
    """The batch scheduler that runs this process as one job: its stops end this job alone."""

    stop_signals: tuple[int, ...]  # taken like SIGTERM, besides it (e.g. submitit's SIGUSR2)
    cause: Callable[[int], str]  # the signal received -> why the job was stopped


_scheduler: Scheduler | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM (a SLURM time limit, ``docker stop``, systemd) taken as Ctrl-C, so the engine
    returns its partial curve and the run is recorded KILLED like an interrupted one."""


def terminated() -> bool:
    return _terminated


def received_signal() -> int | None:
    """The stop signal (SIGTERM, or a scheduler's) this process received, if any."""
    return _received


@contextlib.contextmanager
def scheduled_job(scheduler: Scheduler) -> Iterator[None]:
    """Within the block this process is a job of ``scheduler``: see ``Scheduler``."""
    global _scheduler
    _scheduler = scheduler
    try:
        yield
    finally:
        _scheduler = None


def under_scheduler() -> bool:
    """Whether a stop signal here stops this job alone (a batch scheduler's job)."""
    return _scheduler is not None


def stop_cause() -> str:
    """Why this process's run was stopped: the scheduler's reason, else the signal."""
    if _received is None:
        return "Ctrl-C"
    if _scheduler is not None:
        return _scheduler.cause(_received)
    return signal.Signals(_received).name


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, the first SIGTERM (or a scheduler's stop signal) raises
    ``Terminated``; later ones are ignored while the run records what it has (the sender's
    SIGKILL follows anyway after its grace time). Signal handlers can only be set in the main
    thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = (signal.SIGTERM, *(_scheduler.stop_signals if _scheduler else ()))

    def on_stop(signum: int, frame: Any) -> None:
        global _terminated, _received
        _terminated, _received = True, signum
        for each in signums:  # a second one (SLURM's SIGTERM after its notice): recording
            signal.signal(each, signal.SIG_IGN)
        raise Terminated

    previous = {signum: signal.signal(signum, on_stop) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
