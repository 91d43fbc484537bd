"""What a process learns from SLURM about its own job: which job and attempt (its environment,
the runs' tags ``slurm.job_id`` and ``slurm.restarts``) and, once stopped, why.

Why a running job gets a signal, as SLURM (22.05) tells at that moment; measured on the cluster
of scripts/slurm_local.sh, pinned by tests/test_slurm.py:

| cause | signal | ``scontrol show job`` |
|---|---|---|
| time limit | SIGTERM (SIGKILL after KillWait) | JobState=COMPLETING Reason=TimeLimit |
| ``scancel`` | SIGTERM (SIGKILL after KillWait) | JobState=COMPLETING Reason=None |
| ``scontrol requeue`` | SIGTERM (SIGKILL after KillWait) | Restarts one above this attempt's |
| ``--signal=USR2@N`` (submitit's notice) | SIGUSR2, N s before the limit | JobState=RUNNING |
"""

from __future__ import annotations

import logging
import os
import subprocess

__all__ = ["CANCELLED", "PREEMPTED", "REQUEUED", "TIME_LIMIT", "attempt", "job_id", "job_info",
           "sigterm_cause", "slurm_tags"]

log = logging.getLogger(__name__)

# stopped_by, as the sweep summary and the MLflow tag say it
TIME_LIMIT, CANCELLED, REQUEUED, PREEMPTED = (
    "SLURM time limit", "scancel", "SLURM requeue", "SLURM preemption")


def job_id() -> str | None:
    """This job's id as squeue shows it (``123_4`` for an array task); None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def attempt() -> int:
    """How often SLURM requeued this job before this run of it (0 on the first run)."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "")
    return int(restarts) if restarts.isdigit() else 0


def slurm_tags() -> dict[str, str]:
    """Tags naming this SLURM job and attempt; none outside SLURM."""
    found = job_id()
    return {} if found is None else {"slurm.job_id": found, "slurm.restarts": str(attempt())}


def job_info() -> dict[str, str]:
    """``scontrol show job`` of this job as {field: value} (JobState, Reason, Restarts, ...);
    {} outside SLURM or when the controller does not answer."""
    own = os.environ.get("SLURM_JOB_ID")
    if own is None:
        return {}
    try:
        shown = subprocess.run(["scontrol", "show", "job", "--oneliner", own],
                               capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("Asking SLURM why job %s stopped failed: %s", own, error)
        return {}
    return dict(word.split("=", 1) for word in shown.split() if "=" in word)


def sigterm_cause(info: dict[str, str]) -> str:
    """Why SLURM sent this job SIGTERM, from ``job_info()`` read just after (see the table)."""
    state, reason = info.get("JobState", ""), info.get("Reason", "")
    restarts = info.get("Restarts", "")
    if restarts.isdigit() and int(restarts) > attempt():
        return REQUEUED
    if reason == "TimeLimit" or state == "TIMEOUT":
        return TIME_LIMIT
    if state == "PREEMPTED" or reason == "Preemption":
        return PREEMPTED
    if state in ("CANCELLED", "COMPLETING"):
        return CANCELLED
    return f"SIGTERM (SLURM job state {state or 'unknown'})"
