"""Which Hydra launcher runs the sweep, read from the composed ``hydra.launcher`` node."""

from __future__ import annotations

from omegaconf import DictConfig


def joblib_n_jobs(launcher: DictConfig) -> int | None:
    """``n_jobs`` of Hydra's joblib launcher; None for any other launcher."""
    if "joblib" not in str(launcher.get("_target_", "")):
        return None
    return launcher.get("n_jobs")


def runs_parallel_loky_workers(launcher: DictConfig) -> bool:
    """Whether this launcher is Hydra's joblib launcher running loky processes, n_jobs != 1."""
    return joblib_n_jobs(launcher) not in (None, 1) \
        and launcher.get("backend") in (None, "loky") and launcher.get("prefer") != "threads"
