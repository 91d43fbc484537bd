"""Warm joblib workers: forked from a server that has already imported torch and MLflow (it only
imports: forking it is as safe as torch's fork-started DataLoader workers), not each importing
them for seconds. ``hydra.callbacks.warm_workers.enabled=false`` turns it off.
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
