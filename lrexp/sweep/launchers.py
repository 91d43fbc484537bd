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


# lrexp's own launchers: their module (pyproject's package-dir maps it from lrexp/sweep/) and
# the extra that provides what they build on
LREXP_LAUNCHERS = {"hydra_plugins.lrexp_slurm_launcher": "submitit"}


def register_lrexp_launcher(launcher: DictConfig) -> None:
    """Make lrexp's launcher known to Hydra when the sweep uses it. Hydra instantiates only the
    launcher classes its plugin scan found, and the scan walks the ``hydra_plugins`` folders,
    where an editable install has no file of lrexp's (a wheel has): so register the class. A
    missing extra is the user's setup: one paragraph and exit 2, not Hydra's traceback."""
    import importlib
    import sys

    from hydra.core.plugins import Plugins

    module_name, _, class_name = str(launcher.get("_target_", "")).rpartition(".")
    if module_name not in LREXP_LAUNCHERS:
        return
    found = getattr(importlib.import_module(module_name), class_name, None)
    if found is None:
        extra = LREXP_LAUNCHERS[module_name]
        sys.stderr.write(
            f"lrexp: error: the launcher {class_name} needs lrexp's [{extra}] extra, which is "
            f"not installed; nothing was run. Install it (pip install 'lrexp[{extra}]', or "
            f"pip install -e '.[{extra}]' in a checkout), or choose another "
            "hydra/launcher.\n")
        raise SystemExit(2)
    Plugins.instance().register(found)
