"""Which Hydra launcher runs the sweep, read from the composed ``hydra.launcher`` node; lrexp's
own launcher made known to Hydra (``LrexpLaunchers``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)


# The pip extra each Hydra launcher plugin comes with, and the module it installs
LAUNCHER_PLUGINS = {"joblib": "hydra_plugins.hydra_joblib_launcher",
                    "submitit": "hydra_plugins.hydra_submitit_launcher"}


def missing_launcher_extra(words: list[str]) -> str | None:
    """The extra (joblib, submitit) a ``hydra/launcher=`` among ``words`` needs and lacks."""
    import importlib.util

    for word in words:
        if not word.startswith("hydra/launcher="):
            continue
        name = word.split("=", 1)[1]
        extra = "joblib" if "joblib" in name else "submitit" if (
            "submitit" in name or "slurm" in name) else None
        if extra and importlib.util.find_spec(LAUNCHER_PLUGINS[extra]) is None:
            return extra
    return None


def joblib_n_jobs(launcher: DictConfig) -> int | None:
    """``n_jobs`` of Hydra's joblib launcher; None for any other launcher."""
    if "joblib" not in str(launcher.get("_target_", "")):
        return None
    return launcher.get("n_jobs")


def runs_parallel_loky_workers(launcher: DictConfig) -> bool:
    """Whether this launcher is Hydra's joblib launcher running loky processes, n_jobs != 1."""
    return joblib_n_jobs(launcher) not in (None, 1) \
        and launcher.get("backend") in (None, "loky") and launcher.get("prefer") != "threads"


# lrexp's own launchers' module (pyproject's package-dir maps it from lrexp/sweep/hydra_plugin)
LREXP_LAUNCHERS = "hydra_plugins.lrexp_slurm_launcher"
# plugin launchers lrexp runs as its own: the same settings, plus lrexp's handling of its jobs
RUN_AS_LREXPS = {
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher":
        "hydra_plugins.lrexp_slurm_launcher.LrexpSlurmLauncher"}


class LrexpLaunchers(Callback):
    """lrexp's launcher made known to Hydra before it instantiates the sweep's launcher."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_valid_n_jobs(config.hydra.launcher)
        register_lrexp_launcher(config.hydra.launcher)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Last of the sweep's callbacks (Hydra ends them in reverse): a sweep SLURM took no
        job of ends with one paragraph and its exit code, after its summary is written."""
        if str(config.hydra.launcher.get("_target_", "")).startswith(LREXP_LAUNCHERS):
            from lrexp.sweep.slurm import report_not_submitted

            report_not_submitted(Path(str(config.hydra.sweep.dir)), config.hydra.launcher)


def _require_valid_n_jobs(launcher: DictConfig) -> None:
    """joblib's ``n_jobs=0`` means nothing; refuse it before the sweep's parent run opens (this
    callback runs first), instead of joblib's traceback after it."""
    n_jobs = joblib_n_jobs(launcher)
    if n_jobs == 0:  # None (joblib: one job) and negatives (cores + 1 + n_jobs) are valid
        sys.stderr.write(
            f"lrexp: error: Invalid setting hydra.launcher.n_jobs={n_jobs}: use a positive "
            "number of parallel jobs, or -1 for one per core (-2 for all but one); nothing "
            "was run.\n")
        raise SystemExit(2)


def register_lrexp_launcher(launcher: DictConfig) -> None:
    """Register lrexp's launcher with Hydra (whose plugin scan finds no file of an editable
    install's), and run ``hydra/launcher=submitit_slurm`` as ``lrexp_slurm``: without it one
    job's time limit would skip the sweep's other jobs and a lost job would end the sweep."""
    import importlib

    from hydra.core.plugins import Plugins

    target = str(launcher.get("_target_", ""))
    if target in RUN_AS_LREXPS:
        with read_write(launcher), open_dict(launcher):
            launcher._target_ = target = RUN_AS_LREXPS[target]
        log.info("hydra/launcher=submitit_slurm runs as lrexp_slurm: the same settings, and "
                 "jobs SLURM stops are recorded without stopping the sweep.")
    module_name, _, class_name = target.rpartition(".")
    if module_name == LREXP_LAUNCHERS:
        Plugins.instance().register(getattr(importlib.import_module(module_name), class_name))
