"""How a run ends, said once: its statuses, what MLflow calls them, the process's exit codes,
and the names a run is known by (net, dataset, optimizer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lrexp.engine.settings import STOP_REASONS

__all__ = ["ENDED_ON_ITS_OWN", "EXIT_BAD_INPUT", "EXIT_CLUSTER_UNAVAILABLE", "EXIT_FAILED",
           "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_TERMINATED", "FAILED", "FINISHED", "KILLED",
           "RUN_NAME_PARTS", "SKIPPED", "exit_code", "mlflow_status", "run_names"]

# The process's exit codes: done, a crash, the user's config or input, Ctrl-C, SIGTERM (the
# shell's 128 + signal number, so a scheduler or a script reads them as it reads a signal).
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
# The cluster cannot take jobs at all (its commands absent, its controller down): sysexits.h's
# EX_UNAVAILABLE, "a service is unavailable". A job sbatch refuses as configured is the user's
# setting: exit 2, as every configuration mistake.
EXIT_CLUSTER_UNAVAILABLE = 69
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a reader that went away

# The runner's own statuses, beside the engine's stop reasons (which are finished runs); FINISHED,
# KILLED and FAILED are also how MLflow closes runs.
KILLED, FAILED, SKIPPED, FINISHED = "KILLED", "FAILED", "SKIPPED", "FINISHED"
# a run whose test ran its course (not stopped, failed or skipped): its minimum is comparable
ENDED_ON_ITS_OWN = frozenset(STOP_REASONS) - {"interrupted"}
_MLFLOW_STATUS = {"interrupted": KILLED, KILLED: KILLED, SKIPPED: KILLED, FAILED: FAILED}


def mlflow_status(status: str) -> str:
    """FINISHED, KILLED or FAILED: how the tracked run of a run with ``status`` ends."""
    return _MLFLOW_STATUS.get(status, FINISHED)


def exit_code(*, interrupted: bool, user_error: bool, terminated: bool = False) -> int:
    """The exit code of a run that did not finish."""
    if interrupted:
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    return EXIT_BAD_INPUT if user_error else EXIT_FAILED


RUN_NAME_PARTS = ("net", "dataset", "optimizer")


def run_names(config: Mapping[str, Any]) -> dict[str, str]:
    """net, dataset and optimizer as runs are named and tagged, from a run's config (a
    DictConfig or the plain dict of a config.yaml): a node's ``name`` where it has one (the
    zoo's nets), else its ``_target_``'s last part (``TabNet``, ``digits``, ``SGD``); "?"
    where a config says neither."""
    def named(part: str) -> str:
        node = config.get(part)
        if not isinstance(node, Mapping):
            return "?"
        for key in ("name", "_target_"):
            value = node.get(key)
            if isinstance(value, str) and value:
                return value.rsplit(".", 1)[-1] if key == "_target_" else value
        return "?"

    return {part: named(part) for part in RUN_NAME_PARTS}
