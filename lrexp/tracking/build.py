"""The run logger a run's ``tracking`` settings name: built in this process or in a sidecar."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lrexp.tracking.defaults import DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    from lrexp.tracking.mlflow_tracker import RunLogger

__all__ = ["build_target", "build_tracker", "target_class", "use_sidecar"]


def build_tracker(tracking: Mapping[str, Any] | None,
                  parent_run_id: str | None = None) -> RunLogger:
    """The run logger the ``tracking`` settings name by ``_target_`` (its other keys are its
    arguments), in a sidecar process (``tracking.sidecar``) or this one; ``enabled: false``
    (or no settings at all) records nothing."""
    from lrexp.tracking.mlflow_tracker import NullTracker
    from lrexp.tracking.sidecar import SidecarTracker, finish_wait_s

    if tracking is None or not tracking.get("enabled", True):
        return NullTracker()
    arguments = {str(key): tracking[key] for key in tracking if key not in ("enabled", "sidecar")}
    target = str(arguments.pop("_target_"))
    arguments["parent_run_id"] = parent_run_id
    if use_sidecar(tracking.get("sidecar", "auto"), target):
        return SidecarTracker(target, arguments, finish_wait_s(
            float(arguments.get("timeout_s", DEFAULT_TIMEOUT_S))))
    logger: RunLogger = build_target(target, arguments)
    return logger


def target_class(target: str) -> Any:
    """The class ``target`` names (module.Class)."""
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_target(target: str, settings: Mapping[str, Any]) -> Any:
    return target_class(target)(**settings)


def use_sidecar(choice: Any, target: str) -> bool:
    """``tracking.sidecar``: true, false, or auto: a sidecar unless this process has imported
    MLflow already (a warm sweep worker, a test session), where the import is paid and a
    process of its own would only add its start and a second import."""
    if choice == "auto":
        return "mlflow" not in sys.modules and not target.endswith(".NullTracker")
    return bool(choice)
