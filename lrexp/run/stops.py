"""What stopped this process's work: the stop signal it got, the batch scheduler that runs it as
one job, and whether a sweep it runs was interrupted.

Ctrl-C raises KeyboardInterrupt by itself; SIGTERM (a SLURM time limit, ``docker stop``,
systemd) and a scheduler's stop signals are taken the same way inside ``sigterm_as_interrupt``,
so the engine returns its partial curve and the run is recorded KILLED. Either waits while a
curve point is being recorded (``lrexp.engine.interrupts``). The record lives as long
as the outermost ``recording`` block (the command, or a job run by a launcher in a process of its
own), so nothing of one command's stops outlives it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from lrexp.engine.interrupts import interrupt
from lrexp.run.life import EXIT_INTERRUPTED, EXIT_TERMINATED

__all__ = ["ProcessRecord", "Scheduler", "Terminated", "current", "recording", "scheduled_job",
           "sigterm_as_interrupt"]


@dataclass(frozen=True)
class Scheduler:
    """The batch scheduler that runs this process as one job: its stops end this job alone."""

    stop_signals: tuple[int, ...]  # taken like SIGTERM, besides it (e.g. submitit's SIGUSR2)
    cause: Callable[[int], str]  # the signal received -> why the job was stopped


@dataclass
class ProcessRecord:
    """What this process's work went through so far."""

    received: int | None = None  # the stop signal received (SIGTERM, or a scheduler's)
    sweep_interrupted: bool = False  # a sweep run here was stopped: the command exits 130/143
    scheduler: Scheduler | None = None  # a batch scheduler's job: a stop ends this job alone
    task_started: bool = False  # Hydra started the task: its errors are no longer the input's

    @property
    def terminated(self) -> bool:
        """A stop signal came (exit 143), not Ctrl-C alone (exit 130)."""
        return self.received is not None

    @property
    def interrupted_exit_code(self) -> int:
        return EXIT_TERMINATED if self.terminated else EXIT_INTERRUPTED

    def stop_cause(self) -> str:
        """Why this process's run was stopped: the scheduler's reason, else the signal."""
        if self.received is None:
            return "Ctrl-C"
        if self.scheduler is not None:
            return self.scheduler.cause(self.received)
        return signal.Signals(self.received).name


class Terminated(KeyboardInterrupt):
    """SIGTERM (or a scheduler's stop signal) taken as Ctrl-C."""


_open: ContextVar[ProcessRecord | None] = ContextVar("lrexp_process_record", default=None)


def current() -> ProcessRecord | None:
    """The record of the ``recording`` block this runs in, if any."""
    return _open.get()


@contextlib.contextmanager
def recording() -> Iterator[ProcessRecord]:
    """The record of the work within the block: the enclosing block's, else a new one."""
    found = _open.get()
    if found is not None:
        yield found
        return
    record = ProcessRecord()
    token = _open.set(record)
    try:
        yield record
    finally:
        _open.reset(token)


@contextlib.contextmanager
def scheduled_job(scheduler: Scheduler) -> Iterator[ProcessRecord]:
    """Within the block this process is a job of ``scheduler``: see ``Scheduler``."""
    with recording() as record:
        previous, record.scheduler = record.scheduler, scheduler
        try:
            yield record
        finally:
            record.scheduler = previous


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[ProcessRecord]:
    """Within the block, the first SIGTERM (or a scheduler's stop signal) raises ``Terminated``
    once the curve point being recorded, if any, is; later ones are ignored while the run
    records what it has (the sender's SIGKILL follows anyway after its grace time). Signal
    handlers can only be set in the main thread; elsewhere only the record is kept."""
    with recording() as record:
        if threading.current_thread() is not threading.main_thread():
            yield record
            return
        signums = (signal.SIGTERM, *(record.scheduler.stop_signals if record.scheduler else ()))

        def on_stop(signum: int, frame: object) -> None:
            record.received = signum
            for each in signums:  # a second one (SLURM's SIGTERM after its notice): recording
                signal.signal(each, signal.SIG_IGN)
            interrupt(Terminated())

        previous = {signum: signal.signal(signum, on_stop) for signum in signums}
        try:
            yield record
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
