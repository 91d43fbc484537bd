"""Warm joblib workers: fork them from a server that has already imported torch and MLflow.

Hydra's joblib launcher runs jobs in loky worker processes. A fresh worker spends seconds
importing torch, torch._dynamo (pulled in by the first optimizer), MLflow and matplotlib before
its first job, and every worker pays it again (measured with scripts/bench_sweep.py). Python's
forkserver start method imports them once, in one server process started at sweep start, while
the parent still opens the MLflow parent run; each worker is then a fork of that server: no
import of its own, and the imported modules' memory pages are shared between workers.

The server only imports modules: it never runs a torch op or opens a database, so forking it is
as safe as torch's own fork-started DataLoader workers, which fork a process that has done far
more. Turn it off with ``hydra.callbacks.warm_workers.enabled=false`` (workers then start the
loky way, each importing).
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lrexp.sweep.launchers import runs_parallel_loky_workers

log = logging.getLogger(__name__)

# What every job imports before its first step, heaviest first.
PRELOAD = ["lrexp.sweep.forkserver_signals",  # first: the server must outlive a group's SIGTERM
           "torch", "torch._dynamo", "torchvision", "mlflow", "matplotlib.figure",
           "lrexp.app.runner", "lrexp.engine.rangetest", "lrexp.tracking.mlflow_tracker",
           "lrexp.app.models", "lrexp.app.data", "lrexp.plotting", "lrexp.engine.suggest"]


class WarmJoblibWorkers(Callback):
    def __init__(self, enabled: bool = True, preload: list[str] | None = None) -> None:
        self.enabled = enabled
        self.preload = list(preload) if preload is not None else PRELOAD

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not (self.enabled and runs_parallel_loky_workers(config.hydra.launcher)):
            return
        if "forkserver" not in multiprocessing.get_all_start_methods():
            return  # Windows: loky's own start method it is
        try:
            from joblib.externals.loky.backend.context import set_start_method
        except ImportError:  # a joblib without the vendored loky we know
            return
        multiprocessing.set_forkserver_preload(self.preload)
        set_start_method("forkserver", force=True)
        # Start the server now: its imports overlap the parent's MLflow set-up.
        from multiprocessing import forkserver

        forkserver.ensure_running()
        log.debug("joblib workers fork from a forkserver that preloads %s", self.preload)
