"""The tracker a run's ``tracking`` settings name: built in this process or in a sidecar."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lrexp.tracking.defaults import DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    from lrexp.tracking.mlflow_tracker import Tracker

__all__ = ["build_tracker", "use_sidecar"]


def build_tracker(tracking: Mapping[str, Any] | None, parent_run_id: str | None = None,
                  in_process: bool = False) -> Tracker:
    """The tracker the ``tracking`` settings name by ``_target_`` (its other keys are its
    arguments); ``enabled: false`` (or no settings at all) records nothing. It runs in a sidecar
    process (``tracking.sidecar``) unless ``in_process`` (a sweep's parent run, whose id the
    jobs need at once)."""
    from lrexp.tracking.mlflow_tracker import NullTracker
    from lrexp.tracking.sidecar import SidecarTracker, build_target, finish_wait_s

    if tracking is None or not tracking.get("enabled", True):
        return NullTracker()
    arguments = {str(key): tracking[key] for key in tracking if key not in ("enabled", "sidecar")}
    target = str(arguments.pop("_target_"))
    if not in_process and use_sidecar(tracking.get("sidecar", "auto"), target):
        return SidecarTracker(target, {**arguments, "parent_run_id": parent_run_id},
                              finish_wait_s(float(arguments.get("timeout_s", DEFAULT_TIMEOUT_S))))
    tracker: Tracker = build_target(target, {**arguments, "parent_run_id": parent_run_id})
    return tracker


def use_sidecar(choice: Any, target: str) -> bool:
    """``tracking.sidecar``: true, false, or auto: a sidecar unless this process has imported
    MLflow already (a warm sweep worker, a test session), where the import is paid and a
    process of its own would only add its start and a second import."""
    if choice == "auto":
        return "mlflow" not in sys.modules and not target.endswith(".NullTracker")
    return bool(choice)
