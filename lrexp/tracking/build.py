"""The run logger a run's ``tracking`` settings name: built in this process or in a sidecar."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrexp.tracking.mlflow_tracker import RunLogger

__all__ = ["build_tracker", "target_class", "use_sidecar"]


def build_tracker(tracking: Mapping[str, Any] | None,
                  parent_run_id: str | None = None) -> RunLogger:
    """The run logger the ``tracking`` settings name by ``_target_`` (its other keys are its
    arguments), in a sidecar process or this one; ``enabled: false`` records nothing."""
    from lrexp.tracking.mlflow_tracker import NullTracker
    from lrexp.tracking.sidecar import SidecarTracker

    if tracking is None or not tracking.get("enabled", True):
        return NullTracker()
    arguments = {str(key): tracking[key] for key in tracking if key not in ("enabled", "sidecar")}
    target = str(arguments.pop("_target_"))
    arguments["parent_run_id"] = parent_run_id
    if use_sidecar(tracking.get("sidecar", "auto"), target):
        return SidecarTracker(target, arguments)
    logger: RunLogger = target_class(target)(**arguments)
    return logger


def target_class(target: str) -> Any:
    """The class ``target`` names (module.Class)."""
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def use_sidecar(choice: Any, target: str) -> bool:
    """``tracking.sidecar``: true, false, or auto: a sidecar unless this process has imported
    MLflow already (a warm sweep worker, a test session): a second import would only cost."""
    if choice == "auto":
        return "mlflow" not in sys.modules and not target.endswith(".NullTracker")
    return bool(choice)
