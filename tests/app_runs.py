"""The app, run in the test's own process.

``compose_config`` + ``run_config``: Hydra's compose API and the real runner, for what a run
does. ``lrexp_main``: the real command line (``lrexp.app.main.main`` with ``sys.argv``: Hydra's
parsing, run dir, job logging, callbacks, launchers, lrexp's exit codes), for what the command
does. Either costs the run itself, not a new interpreter's ~10 s of imports; the subprocess
form (``sweep_checks.lrexp_cli``) stays for what only a process shows.
"""

import contextlib
import copy
import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from lrexp.app.runner import run
from lrexp.app.schema import register

CONF = str(Path(__file__).resolve().parents[1] / "conf")
register()


@cache
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def compose_config(*overrides: str, out_dir: Path | None = None) -> DictConfig:
    """The composed config (tracking off, no progress bar unless overridden); each distinct
    override list is composed once per session and handed out as a copy."""
    cfg = copy.deepcopy(_composed(("tracking=none", "progress=false", *overrides)))
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = os.getcwd()  # this test's, not the first composer's
        if out_dir is not None:
            cfg.hydra.runtime.output_dir = str(out_dir)
    return cfg


def with_values(cfg: DictConfig, *overrides: str) -> DictConfig:
    """``cfg`` with ``key=value`` overrides parsed by Hydra's override grammar and set as Hydra
    sets them on the composed config: many values tried on one composition (a config group's
    choice, ``net=mlp``, still needs ``compose_config``)."""
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg


def run_config(cfg: DictConfig) -> int:
    """The runner on a composed config, as a job of ``python -m lrexp`` would run it."""
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # a real job's config has no hydra node
    return run(cfg)


def reset_process_state() -> None:
    """What a fresh ``python -m lrexp`` process starts with: no Hydra singletons (lrexp's own
    record of a command's stops lasts as long as the command)."""
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


@dataclass
class Finished:
    returncode: int
    output: str  # stdout and stderr, interleaved as a terminal shows them


def lrexp_main(*args: str) -> Finished:
    """``python -m lrexp progress=false ARGS`` in this process (flags go before overrides)."""
    from lrexp.app import main as app_main

    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    argv, output, code = sys.argv, io.StringIO(), 0
    reset_process_state()
    sys.argv = ["lrexp", *flags, "progress=false", *overrides]
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            app_main.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
        for handler in root.handlers:  # Hydra's console and lrexp.log handlers
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        reset_process_state()
    return Finished(code, output.getvalue())


def poll_until(condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    """Wait for ``condition`` (checked every 50 ms) instead of sleeping a guessed time."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


def curve_rows(curve: Path) -> int:
    """Data rows flushed so far to a curve file being written (after its meta and header)."""
    return max(0, curve.read_text().count("\n") - 2) if curve.exists() else 0


def training_started(run_dir: Path) -> bool:
    """Has the job in ``run_dir`` started its range test? (the runner logs it)"""
    log = run_dir / "lrexp.log"
    return log.exists() and "Starting the LR range test" in log.read_text()


@contextlib.contextmanager
def when_ready(ready: Callable[[], bool], action: Callable[[], None],
               timeout_s: float = 120) -> Iterator[list[str]]:
    """Do ``action`` from a helper thread once ``ready()`` holds (polled every 50 ms) while the
    block runs the code under test in the main thread. Yields a list of what went wrong on the
    way (empty when the action ran); code that is never ready is stopped with a Ctrl-C after
    ``timeout_s``."""
    problems: list[str] = []
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if done.wait(0.05):
                problems.append("the code under test returned before it was ready")
                return
            if time.monotonic() > deadline:
                problems.append(f"not ready within {timeout_s} s; stopped with Ctrl-C")
                os.kill(os.getpid(), signal.SIGINT)
                return
        action()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield problems
    finally:
        done.set()
        watcher.join(timeout=30)


def signal_this_process_when(ready: Callable[[], bool], signum: int = signal.SIGINT,
                             timeout_s: float = 120):
    """``when_ready`` that sends ``signum`` to this very process, as a terminal's Ctrl-C or a
    scheduler's SIGTERM reaches a running ``python -m lrexp``: Python runs the handler in the
    main thread, where the code under test runs."""
    problems: list[str] = []

    def send() -> None:
        if signum != signal.SIGINT and signal.getsignal(signum) in (signal.SIG_DFL, None):
            # its default action would end pytest itself: stop the run with Ctrl-C, and say so
            problems.append(f"no handler for {signal.Signals(signum).name} while it ran")
            os.kill(os.getpid(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signum)

    @contextlib.contextmanager
    def watching() -> Iterator[list[str]]:
        # a shell's background job starts with SIGINT ignored, which Python keeps: give this
        # test the handler a terminal's Ctrl-C meets, then put back what was there
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with when_ready(ready, send, timeout_s) as more:
                yield problems
            problems.extend(more)
        finally:
            signal.signal(signal.SIGINT, previous)

    return watching()
