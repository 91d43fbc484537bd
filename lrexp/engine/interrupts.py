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

__all__ = ["held", "holdable_ctrl_c", "interrupt", "released"]


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
    """Within the block, ``interrupt`` waits; the first one is raised as the block ends. When
    the block fails meanwhile the stop still wins, with the failure as its context."""
    if not _in_main_thread():
        yield
        return
    if not _hold.depth:  # one raised just as an earlier block ended may have been left here
        _hold.pending = None
    _hold.depth += 1
    try:
        yield
    except BaseException as error:
        _hold.depth -= 1
        pending = _take_pending()
        if pending is not None and not isinstance(error, KeyboardInterrupt):
            raise pending from error
        raise
    _hold.depth -= 1
    pending = _take_pending()
    if pending is not None:
        raise pending


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Within a ``held()`` block, a part that may hang (sending to a tracking store) once the
    point is already recorded: there an interrupt is raised at once, a waiting one first."""
    if not _in_main_thread() or not _hold.depth:
        yield
        return
    depth, _hold.depth = _hold.depth, 0
    try:
        pending = _take_pending()
        if pending is not None:
            raise pending
        yield
    finally:
        _hold.depth = depth


def _take_pending() -> KeyboardInterrupt | None:
    if _hold.depth:
        return None
    pending, _hold.pending = _hold.pending, None
    return pending


def _ctrl_c(signum: int, frame: object) -> None:
    interrupt(KeyboardInterrupt())


@contextlib.contextmanager
def holdable_ctrl_c() -> Iterator[None]:
    """Within the block, Ctrl-C goes through ``interrupt`` when Python's own handler has it (a
    handler someone else set is left alone)."""
    if not _in_main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    try:
        signal.signal(signal.SIGINT, _ctrl_c)
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is _ctrl_c:
            signal.signal(signal.SIGINT, signal.default_int_handler)
