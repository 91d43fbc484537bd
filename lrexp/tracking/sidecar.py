"""The run logger in a process of its own: MLflow's import and store set-up off the test's path.

``SidecarTracker`` starts ``python -m lrexp.tracking.sidecar`` before torch is imported; the
child builds the run logger the ``tracking`` group names and opens the store while the parent
trains (a process, not a thread: MLflow's import in a thread races the test's lazy imports).
The parent sends pickled commands on the child's stdin (``init``, ``start``, ``step``s,
``finish``); the child sends back its log records, what it prints, and ``done``.

* Ctrl-C and SIGTERM reach the whole process group: the child ignores them and takes the status
  from the parent (a Ctrl-C while the parent waits at the end reaches it as SIGUSR1).
* The parent killed outright: the child reads EOF and closes the run KILLED itself.
* A child that dies: at the end a new child completes the run from every step the parent
  recorded; the parent owns the run (``OWNER_PID_TAG``), so no orphan closer ends it meanwhile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from lrexp.run.life import KILLED

# imported before the child's reader thread unpickles RunSummary: no import beside the main thread
from lrexp.run.summary import RunSummary
from lrexp.tracking.build import target_class
from lrexp.tracking.defaults import DEFAULT_TIMEOUT_S
from lrexp.tracking.mlflow_tracker import (
    OWNER_PID_TAG,
    TRACKING_DISABLED,
    RunLogger,
    TrackedOutcome,
    hint_import,
)
from lrexp.tracking.redaction import first_line
from lrexp.tracking.store import resolve_tracking_uri

__all__ = ["SidecarTracker"]

log = logging.getLogger(__name__)

ABANDONED_MESSAGE = ("The lrexp process stopped before it closed its MLflow run (killed?): "
                     "closing it KILLED with the %d steps it recorded.")


class SidecarTracker(RunLogger):
    """The run logger, carried out by a child process; never imports MLflow."""

    def __init__(self, target: str, settings: Mapping[str, Any],
                 wait_s: float | None = None) -> None:
        self.run_id: str | None = None  # known once the child opened the run
        self.usable = True  # False once the child is gone: the run dir keeps everything
        # the wait after finish: the child may still import MLflow; each call may take timeout_s
        self.wait_s = wait_s or max(60.0, 12 * float(settings.get("timeout_s", DEFAULT_TIMEOUT_S)))
        self._init = ("init", target, dict(settings), _relayed_level())
        self._uri = resolve_tracking_uri(settings.get("uri"))
        self._recorded: list[tuple[Any, ...]] = []  # start and every step: a new child's replay
        self._closed = False
        self._outcome: TrackedOutcome | None = None  # what the child said at the end
        self._owner = {OWNER_PID_TAG: str(os.getpid())}  # this process trains the run
        self._spawn()

    def _spawn(self) -> None:
        """Start a child and send it ``init``; a new child for a dead one starts afresh."""
        self._ended = threading.Event()  # the child said done, or its channel closed
        self._done = self._failed = False
        self._relay = True  # False once the parent stopped waiting
        self._child: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        try:
            with _stop_signals_blocked():  # the child inherits the mask: no early Ctrl-C kills it
                self._child = subprocess.Popen(
                    [sys.executable, "-m", "lrexp.tracking.sidecar"], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, env=_child_environment())
        except OSError as error:
            self._failed = True
            self._lost(f"could not start ({error})")
            return
        self._reader = threading.Thread(target=self._read, name="lrexp-tracking-sidecar",
                                        daemon=True)
        self._reader.start()
        self._send(self._init)

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        self._record(("start", run_name, dict(params), {**tags, **self._owner}))

    def log_values(self, step: int, values: Mapping[str, float]) -> None:
        self._record(("step", int(step), {str(name): float(value) for name, value in
                                          values.items()}, int(time.time() * 1000)))

    def finish(self, *, status: str, result: Any = None, summary: RunSummary | None = None,
               files: Mapping[str, Path] | None = None, out_dir: Path | None = None) -> None:
        """Send the rest, then wait (at most ``wait_s``) for the child to close the run."""
        if self._closed:
            return
        # the tracker reads only the smoothed curve of the result
        curve = (SimpleNamespace(smoothed=[float(v) for v in result.smoothed])
                 if result is not None else None)
        finish = ("finish", {"status": status, "result": curve, "summary": summary,
                             "files": {k: Path(v) for k, v in (files or {}).items()},
                             "out_dir": out_dir})
        self._closed = True
        self._deliver(finish)
        if self._died():
            self._replace(finish)
        if not self._done:  # a child that answered gave the hint itself
            hint_import(out_dir)

    def close(self) -> None:
        """Without ``finish``: the child closes a run it opened KILLED, in its own time."""
        if not self._closed:
            self._closed = True
            self._end_input()

    def outcome(self) -> TrackedOutcome:
        """What the child said it stored; else what is known (its step count is not)."""
        return self._outcome or TrackedOutcome(self._uri, self.run_id, None, None,
                                               "its tracking process did not say what it stored")

    def _died(self) -> bool:
        """Gone without saying done, and not for a reason a new child would meet again."""
        return self._child is not None and not self._done and not self._failed \
            and self._ended.is_set()

    def _replace(self, finish: tuple[Any, ...]) -> None:
        """A new child: the run the dead one opened, every recorded step, then ``finish``."""
        opened = self.run_id
        replay = [("attach", opened, self._owner) if opened and message[0] == "start"
                  else message for message in self._recorded]
        log.warning("Starting a new MLflow process to complete %s with the %d steps this "
                    "process recorded.", f"MLflow run {opened}" if opened else "the run",
                    sum(message[0] == "step" for message in self._recorded))
        self.usable = True
        self._spawn()
        for message in replay:
            self._send(message)
        self._deliver(finish)
        if self._done and self._outcome is not None:
            log.warning("The new MLflow process completed the run: %s.",
                        self._outcome.describe(len({m[1] for m in replay if m[0] == "step"})))

    def _record(self, message: tuple[Any, ...]) -> None:
        self._recorded.append(message)
        self._send(message)

    def _deliver(self, finish: tuple[Any, ...]) -> None:
        """Send ``finish``, close the child's input and wait for it to be done."""
        self._send(finish)
        self._end_input()
        try:
            self._wait_for_child()
        except KeyboardInterrupt:
            self._stop_child()
            raise

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._child is None or self._child.stdin is None or not self.usable or \
                self._child.stdin.closed:
            return
        try:
            pickle.dump(message, self._child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._child.stdin.flush()
        except (OSError, ValueError):  # a broken pipe: the child is gone
            self._lost(self._exit_description())

    def _end_input(self) -> None:
        if self._child is not None and self._child.stdin is not None:
            with contextlib.suppress(OSError):
                self._child.stdin.close()

    def _read(self) -> None:
        """The reader thread: relays the child's messages until its channel closes. It
        unpickles only builtins and imports nothing (importing beside the main thread races)."""
        assert self._child is not None and self._child.stdout is not None
        try:
            while True:
                try:
                    kind, payload = pickle.load(self._child.stdout)
                except Exception:  # noqa: BLE001 - EOF, or a child that died mid-message
                    return
                if self._relay:
                    self._relay_message(kind, payload)
        finally:  # also when relaying failed (a closed stdout): nobody waits in vain
            self._ended.set()

    def _relay_message(self, kind: str, payload: Any) -> None:
        if kind == "log":
            _relog(payload)
        elif kind == "stdout":
            sys.stdout.write(payload)
        elif kind == "opened":
            self.run_id = payload
        elif kind == "done":
            self.run_id, usable, outcome = payload
            self.usable = self.usable and usable
            self._outcome = TrackedOutcome(**outcome) if outcome else None
            self._done = True
            self._ended.set()
        elif kind == "failed":
            self._failed = True
            self._lost(f"failed ({payload})")

    def _wait_for_child(self) -> None:
        """Until the child says done (not until its interpreter has wound down)."""
        child = self._child
        if child is None or self._reader is None:
            return
        if not self._ended.wait(timeout=self.wait_s):
            self._relay = False
            log.warning("MLflow tracking did not finish within %g s; it goes on in the "
                        "background (process %d). If the run does not show up in MLflow, its "
                        "run dir has everything.", self.wait_s, child.pid)
            return
        self._reader.join(timeout=10)  # the records it sent last, before we go on
        if not self._done:  # the channel closed without done: the child died
            self._lost(self._exit_description())

    def _stop_child(self) -> None:
        """Ctrl-C while waiting at the end: the child closes the run KILLED, as a tracker does."""
        child = self._child
        if child is None or child.poll() is not None:
            return
        with contextlib.suppress(OSError):
            child.send_signal(signal.SIGUSR1)
        self._relay = self._ended.wait(timeout=self.wait_s)

    def _exit_description(self) -> str:
        code = self._child.poll() if self._child is not None else None
        return "stopped" if code is None else f"stopped (exit code {code})"

    def _lost(self, why: str) -> None:
        if self.usable and self._failed:
            log.warning(TRACKING_DISABLED, f"its MLflow process {why}")
        elif self.usable:  # a new child completes the run at the end (_replace)
            log.warning("The MLflow process of this run %s; the test goes on, and a new "
                        "one completes the MLflow run at the end.", why)
        self.usable = False


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back in this thread while it starts the child, which inherits
    the mask and ignores them before it unblocks them. One that arrives meanwhile reaches this
    process just after."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _child_environment() -> dict[str, str]:
    """This environment, with this lrexp (a checkout's, a test's) first on the child's path."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, path) if p)}


def _relayed_level() -> int:
    """The lowest level this process shows from lrexp or anyone else: the child sends no more."""
    return min(logging.getLogger().getEffectiveLevel(),
               logging.getLogger("lrexp").getEffectiveLevel())


def _relog(fields: dict[str, Any]) -> None:
    record = logging.makeLogRecord(fields)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


class _Channel:
    """The child's messages to the parent. Also its sys.stdout: what MLflow prints (a run's
    link) appears in the parent's, or on stderr once the parent is gone."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.lock, self.open = stream, threading.Lock(), True

    def send(self, kind: str, payload: Any) -> bool:
        with self.lock:
            if not self.open:
                return False
            try:
                pickle.dump((kind, payload), self.stream, protocol=pickle.HIGHEST_PROTOCOL)
                self.stream.flush()
                return True
            except (OSError, ValueError):
                self.open = False
                return False

    def write(self, text: str) -> int:
        if text and not self.send("stdout", text):
            sys.stderr.write(text)
        return len(text)

    def flush(self) -> None:
        pass


class _RelayHandler(logging.Handler):
    """Each record to the parent, formatted, with builtin values only."""

    def __init__(self, channel: _Channel) -> None:
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(record.__dict__, msg=record.getMessage(), args=None, exc_info=None)
        if record.exc_info:
            fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
        fields = {key: value for key, value in fields.items()
                  if isinstance(value, (str, int, float, type(None)))}
        if not self.channel.send("log", fields):
            sys.stderr.write(f"{record.levelname} {record.name}: {fields['msg']}\n")


def _read_commands(stream: IO[bytes], commands: queue.Queue[tuple[Any, ...] | None]) -> None:
    """Reader thread: drains stdin at once (the parent never blocks on a full pipe while the
    main thread imports MLflow); None marks its end."""
    while True:
        try:
            commands.put(pickle.load(stream))
        except Exception:  # noqa: BLE001 - EOF: the parent closed it or is gone
            commands.put(None)
            return


def _serve(tracker: Any, commands: queue.Queue[tuple[Any, ...] | None],
           channel: _Channel) -> int:
    prepare = getattr(tracker, "prepare", None)
    if prepare is not None:
        prepare()
    started, steps = False, 0
    while True:
        message = commands.get()
        if message is None:  # the parent is gone (or let go) without finish
            if started:
                log.warning(ABANDONED_MESSAGE, steps)
                tracker.finish(status=KILLED)
            return 0
        kind, *arguments = message
        if kind == "step":
            tracker.log_values(*arguments[:2], timestamp_ms=arguments[2])
            steps += 1
        elif kind in ("start", "attach"):
            getattr(tracker, kind)(*arguments)
            started = True
            if getattr(tracker, "run_id", None):
                channel.send("opened", tracker.run_id)
        elif kind == "finish":
            tracker.finish(**arguments[0])
            outcome = getattr(tracker, "outcome", lambda: None)()
            channel.send("done", (getattr(tracker, "run_id", None),
                                  bool(getattr(tracker, "usable", True)),
                                  None if outcome is None else dataclasses.asdict(outcome)))
            return 0


def main() -> int:
    """``python -m lrexp.tracking.sidecar``: serve one run for the parent on stdin/stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent says how the run ended
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked since the start
    signal.signal(signal.SIGUSR1, signal.default_int_handler)  # the parent's Ctrl-C at the end
    with contextlib.suppress(OSError):
        os.nice(10)  # the training process first: this one's work overlaps its test
    channel = _Channel(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)  # anything written to fd 1 goes to stderr, not into the channel
    sys.stdout = channel
    commands: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
    threading.Thread(target=_read_commands, args=(sys.stdin.buffer, commands),
                     daemon=True).start()
    init = commands.get()
    if init is None or init[0] != "init":
        return 0
    _, target, settings, level = init
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(_RelayHandler(channel))
    tracker = None
    try:
        tracker = target_class(target)(**settings)
        return _serve(tracker, commands, channel)
    except KeyboardInterrupt:  # the parent's SIGUSR1: a run still open is closed KILLED
        if tracker is not None:
            tracker.close()
        return 130
    except Exception as error:  # noqa: BLE001 - the parent says it, once
        log.debug("The tracking process failed", exc_info=True)
        channel.send("failed", first_line(f"{type(error).__name__}: {error}"))
        return 1


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # everything is in the store: skip the seconds of tearing down MLflow and SQLAlchemy
    os._exit(code)
