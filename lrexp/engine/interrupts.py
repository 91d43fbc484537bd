"""Ctrl-C and stop signals held off while a curve point is recorded.

A point goes to several records in turn (the result's lists, then ``on_step``: curve.csv, the
tracker). A KeyboardInterrupt raised between two of them left MLflow one point short of the
curve. Inside ``held()`` an interrupt raised through ``interrupt`` waits until the block ends, so
a point reaches every record or none. Signal handlers run in the main thread only, so only the
main thread holds.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["held", "holdable_ctrl_c", "interrupt"]


class _Hold:
    depth = 0  # open held() blocks in the main thread
    pending: KeyboardInterrupt | None = None  # the first interrupt that came meanwhile


_hold = _Hold()


def interrupt(error: KeyboardInterrupt) -> None:
    """Raise ``error`` when the ``held()`` block running ends, else now (for signal handlers).
    A second one while the first waits is raised at once: a record that hangs (a tracking
    store that does not answer) can still be left with a second Ctrl-C."""
    if _hold.depth and _hold.pending is None:
        _hold.pending = error
        return
    raise error


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Within the block, ``interrupt`` waits; the first one is raised as the block ends. A block
    that fails drops it: the failure ends the work anyway, and the signal was seen."""
    if not _in_main_thread():
        yield
        return
    _hold.depth += 1
    try:
        yield
    except BaseException:
        _hold.depth -= 1
        if not _hold.depth:
            _hold.pending = None
        raise
    _hold.depth -= 1
    if not _hold.depth and _hold.pending is not None:
        pending, _hold.pending = _hold.pending, None
        raise pending


def _ctrl_c(signum: int, frame: object) -> None:
    interrupt(KeyboardInterrupt())


@contextlib.contextmanager
def holdable_ctrl_c() -> Iterator[None]:
    """Within the block, Ctrl-C goes through ``interrupt`` when Python's own handler has it (a
    handler someone else set is left alone)."""
    if not _in_main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _ctrl_c)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is _ctrl_c:
            signal.signal(signal.SIGINT, signal.default_int_handler)
