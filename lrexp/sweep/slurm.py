"""What the ``lrexp_slurm`` launcher (lrexp/sweep/hydra_plugin) adds to submitit's
SlurmLauncher: ``run_job`` in each job, ``waiting_for_jobs`` and ``launch_jobs`` in the sweep's
parent. One job's stop never skips the others: each is recorded with SLURM's reason, and a sweep
SLURM took no job of ends in one paragraph.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import open_dict

from lrexp.run import life, stops
from lrexp.run.files import PARENT_CLOSED_FILE, PARENT_RUN_FILE, SWEEP_SUMMARY_FILE
from lrexp.run.life import EXIT_CLUSTER_UNAVAILABLE
from lrexp.sweep import slurm_job

__all__ = ["EXIT_CLUSTER_UNAVAILABLE", "GONE", "NotSubmitted", "launch_jobs", "lost_job",
           "not_submitted", "report_not_submitted", "run_job", "stopped_by_state",
           "waiting_for_jobs"]

log = logging.getLogger(__name__)

# A job's final SLURM state (squeue or sacct) -> stopped_by, for a job that left no result
_FINAL_STATES = {"CANCELLED": slurm_job.CANCELLED, "TIMEOUT": slurm_job.TIME_LIMIT,
                 "PREEMPTED": slurm_job.PREEMPTED}
GONE = "GONE"  # a job squeue no longer lists (ended MinJobAge ago, or cancelled while pending)
NOT_SUBMITTED_FILE = "slurm_not_submitted.json"  # in the sweep dir, for report_not_submitted
# How sbatch says it could not reach the controller (SLURM's slurm_strerror texts)
_UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out", "Connection refused",
                "Zero Bytes were transmitted", "Communication connection failure")
# What to change when sbatch refuses a job, by the words of its refusal
_FIXES = {
    "gres": "a cluster without GPUs takes no hydra.launcher.gpus_per_node: set it to null "
            "(sinfo -o '%P %G' lists each partition's GPUs)",
    "node configuration is not available": "ask for what a node has: lower "
            "hydra.launcher.cpus_per_task or hydra.launcher.mem_gb (sinfo -o '%P %c %m' lists "
            "each partition's CPUs and memory in MB)",
    "Memory required": "lower hydra.launcher.mem_gb (sinfo -o '%P %m' lists each "
            "partition's memory in MB)",
    "partition": "set hydra.launcher.partition to one that sinfo lists",
    "time limit": "lower hydra.launcher.timeout_min to the partition's limit (sinfo -o '%P %l')",
}
_SHOWN_SETTINGS = ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min")


def run_job(call: Callable[[], JobReturn]) -> JobReturn:
    """One job, on a node: stops recorded with SLURM's reason, SIGUSR2 handed to submitit
    afterwards. One that comes while no range test runs is dropped: submitit's handler would
    raise there, and a test that ended needs no requeue."""
    notice = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint_and_try_requeue
    # SLURM's answer changes as the job ends (COMPLETING, then gone): asked once per signal
    cause = functools.cache(functools.partial(_cause, notice))
    outside_the_test: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: outside_the_test.append(signum))
    try:
        with stops.scheduled_job(stops.Scheduler((signal.SIGUSR2,), cause)) as record:
            returned = call()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    if outside_the_test:
        log.info("SLURM's early notice (SIGUSR2) came while no range test ran; the job ends as "
                 "it is.")
    _requeue_if_asked(record.received, cause, notice)
    return returned


def lost_job(launcher: Any, job: Any, error: Exception) -> JobReturn:
    """Record a job that left no result in its summary.json: KILLED with SLURM's final state
    when it did not finish, FAILED with the error's last line when it raised; a summary that
    says how the test ended is kept. Its JobReturn, never an error: the sweep goes on."""
    try:
        return _record_lost_job(launcher, job, error)
    except Exception as failure:  # noqa: BLE001 - never the end of the sweep
        log.warning("Job %s left no result, and recording it failed: %s", job.job_id, failure)
        return JobReturn(overrides=[], status=JobStatus.COMPLETED, _return_value=life.EXIT_FAILED)


def _record_lost_job(launcher: Any, job: Any, error: Exception) -> JobReturn:
    from submitit.core.utils import DelayedSubmission, FailedJobError

    from lrexp.run.summary import SUMMARY_FILE, RunSummary

    overrides, _, job_num, *_ = DelayedSubmission.load(job.paths.submitted_pickle).args
    returned = _job_return(launcher, list(overrides), job_num)
    job_dir = Path(str(returned.working_dir))
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    reason = lines[-1 if isinstance(error, FailedJobError) else 0] if lines else repr(error)
    with contextlib.suppress(OSError, ValueError):
        if RunSummary.read(job_dir / SUMMARY_FILE).status in life.ENDED_ON_ITS_OWN:
            log.warning("Job %s (%s) finished its range test but returned no result: %s",
                        job.job_id, job_dir.name, reason)
            return _recorded(returned, life.EXIT_FAILED)
    if isinstance(error, FailedJobError):  # it ran and raised: a crash, not a stop
        log.warning("Job %s (%s) failed: %s", job.job_id, job_dir.name, reason)
        return _recorded(returned, life.EXIT_FAILED, life.FAILED, error=reason)
    state = job.watcher.get_state(job.job_id, mode="force")
    stopped_by = stopped_by_state(state, started=(job_dir / ".hydra").is_dir())
    log.warning("Job %s (%s) ended without a result (SLURM state %s); recorded as KILLED: %s",
                job.job_id, job_dir.name, state, reason)
    return _recorded(returned, life.EXIT_TERMINATED, life.KILLED, error=reason,
                     stopped_by=stopped_by)


def _job_return(launcher: Any, overrides: list[str], job_num: int) -> JobReturn:
    """Job ``job_num``'s JobReturn as Hydra's sweeper takes it, its config composed as the job
    would compose it (``working_dir``: the job's dir, where the sweep summary reads)."""
    from hydra.core.hydra_config import HydraConfig

    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(config.hydra.job):
        config.hydra.job.num = job_num
    HydraConfig.instance().set_config(config)  # the subdir may use ${hydra:...}
    job_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    return JobReturn(overrides=overrides, cfg=config, working_dir=str(job_dir),
                     task_name=str(config.hydra.job.name), status=JobStatus.COMPLETED)


def _recorded(returned: JobReturn, exit_code: int, status: str | None = None,
              **fields: Any) -> JobReturn:
    """``returned`` with ``exit_code``; with ``status``, written to the job dir's summary."""
    from lrexp.run.summary import write_status

    if status is not None:
        write_status(Path(str(returned.working_dir)), life.run_names(returned.cfg or {}),
                     status, **fields)
    returned.return_value = exit_code
    return returned


@dataclass(frozen=True)
class NotSubmitted:
    """Why SLURM took none of the sweep's jobs: sbatch's own words, the exit code, the fix."""

    what: str  # what failed, one sentence
    said: str  # sbatch's (or submitit's) own message
    fix: str
    exit_code: int


def launch_jobs(launcher: Any, launch: Callable[[], list[JobReturn]],
                job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
    """The launcher's ``launch``; when SLURM takes none of the jobs, each is recorded FAILED
    (``not_submitted``) and the sweep goes on to its summary, which closes the parent run."""
    try:
        return launch()
    except Exception as error:  # noqa: BLE001 - classified; anything else is raised again
        why = not_submitted(error)
        if why is None:
            raise
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / NOT_SUBMITTED_FILE).write_text(json.dumps(asdict(why)))
    return [_recorded(_job_return(launcher, list(overrides), initial_job_idx + index),
                      why.exit_code, life.FAILED, error=f"not submitted to SLURM: {why.said}")
            for index, overrides in enumerate(job_overrides)]


SLURM_COMMANDS = ("sbatch", "srun", "squeue", "sacct", "scancel")


def not_submitted(error: BaseException) -> NotSubmitted | None:
    """Why SLURM took no job, from submitit's error; None for an error not about submitting."""
    from submitit.core.utils import FailedJobError

    text = str(error)
    # a SLURM command that is not there, not any file that is missing
    command = Path(str(error.filename or "")).name if isinstance(error, FileNotFoundError) else ""
    if command in SLURM_COMMANDS or (
            isinstance(error, RuntimeError) and 'Could not detect "srun"' in text):
        missing = command or "srun"
        return NotSubmitted(
            "SLURM's commands (sbatch, srun) are not on this machine's PATH",
            f"{missing}: command not found",
            "run the sweep on the cluster's login node (or put SLURM's bin folder on PATH), or "
            "leave hydra/launcher out to run its jobs on this machine", EXIT_CLUSTER_UNAVAILABLE)
    if not isinstance(error, FailedJobError):
        return None
    said = _sbatch_said(text)
    if any(words in said for words in _UNREACHABLE):
        return NotSubmitted(
            "sbatch could not reach the cluster's controller", said,
            "check the cluster with sinfo or scontrol ping (or ask its administrators) and run "
            "the sweep again, or leave hydra/launcher out to run its jobs on this machine",
            EXIT_CLUSTER_UNAVAILABLE)
    fix = next((fix for words, fix in _FIXES.items() if words.lower() in said.lower()),
               "change the hydra.launcher setting it names")
    return NotSubmitted("sbatch refused the sweep's jobs as configured", said,
                        f"{fix}, and run the sweep again", life.EXIT_BAD_INPUT)


def _sbatch_said(text: str) -> str:
    """sbatch's last error line without its prefixes ("sbatch: error: ...")."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines or [text]
    said = errors[-1]
    for prefix in ("sbatch: error:", "Batch job submission failed:"):
        said = said.split(prefix, 1)[-1].strip()
    return said


def report_not_submitted(sweep_dir: Path, launcher_settings: Mapping[str, Any]) -> None:
    """After the sweep's summary, for a sweep SLURM took no job of: one paragraph (what failed,
    sbatch's words, the job's settings, what was kept, the fix) and the exit code."""
    try:
        why = NotSubmitted(**json.loads((sweep_dir / NOT_SUBMITTED_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return
    settings = ", ".join(f"{key}={launcher_settings.get(key)}" for key in _SHOWN_SETTINGS)
    sys.stderr.write(
        f"lrexp: error: SLURM took none of the sweep's jobs: {why.what} (\"{why.said}\"; "
        f"hydra.launcher: {settings}). Nothing ran; {_parent_kept(sweep_dir)}"
        f"{sweep_dir / SWEEP_SUMMARY_FILE} lists every job as not submitted. To fix: "
        f"{why.fix}. Exit code {why.exit_code}.\n")
    raise SystemExit(why.exit_code)


def _parent_kept(sweep_dir: Path) -> str:
    """What became of the sweep's MLflow run, as the sweep's end left it (none: "")."""
    with contextlib.suppress(OSError):
        run_id = (sweep_dir / PARENT_RUN_FILE).read_text().strip()
        with contextlib.suppress(OSError):
            status = (sweep_dir / PARENT_CLOSED_FILE).read_text().strip()
            return f"the sweep's MLflow run {run_id} is closed {status}, and "
        return f"the sweep's MLflow run {run_id} could not be closed (see the warning above); "
    return ""


def stopped_by_state(state: str, started: bool) -> str:
    """``stopped_by`` of a job that left no result, from its final SLURM state as squeue or
    sacct gives it ("CANCELLED by 0", "TIMEOUT", ...; ``GONE``: squeue no longer lists it)."""
    if state == GONE:  # a pending array task that scancel removed leaves no trace in SLURM
        return "SLURM: gone" + ("" if started else " before it started")
    head = state.split()[0] if state.split() else "unknown"
    return _FINAL_STATES.get(head, f"SLURM {head}")


def _cause(notice: Any, signum: int) -> str:
    """Why SLURM stopped this job with ``signum``."""
    if signum == signal.SIGUSR2:  # submitit tells a time limit from a preemption by the clock
        timed_out = getattr(getattr(notice, "__self__", None), "has_timed_out", None)
        return slurm_job.TIME_LIMIT if timed_out is None or timed_out() else slurm_job.PREEMPTED
    return slurm_job.sigterm_cause(slurm_job.job_info())


def _requeue_if_asked(received: int | None, cause: Callable[[int], str], notice: Any) -> None:
    """After the run recorded what it had: a job SLURM requeues leaves no result (the parent
    waits for its next attempt); after SIGUSR2, submitit decides whether to requeue."""
    if received == signal.SIGTERM and cause(received) == slurm_job.REQUEUED:
        log.warning("SLURM requeued this job: it ends without a result; its next attempt runs "
                    "the range test again and its MLflow run replaces this one.")
        raise SystemExit(life.EXIT_TERMINATED)
    if received == signal.SIGUSR2 and callable(notice):
        from submitit.core.utils import UncompletedJobError

        try:
            notice(signal.SIGUSR2, None)  # checkpoints and requeues (and exits), or refuses
        except UncompletedJobError as refusal:
            log.info("submitit did not requeue this job: %s", refusal)


@contextlib.contextmanager
def waiting_for_jobs(lost_job: Callable[[Any, Exception], JobReturn]) -> Iterator[None]:
    """Around the launcher's ``launch``, the one place lrexp patches submitit (it has no hook;
    test_slurm_rules.py fails when they move): a job that left no result goes to ``lost_job``
    instead of raising; without SLURM accounting, ``SlurmJob``'s watcher asks squeue."""
    from submitit.slurm.slurm import SlurmJob

    original_results, original_watcher = SlurmJob.results, SlurmJob.watcher

    def results(job: Any) -> list[Any]:
        try:
            return original_results(job)
        except Exception as error:  # noqa: BLE001 - UncompletedJobError, FailedJobError
            return [lost_job(job, error)]

    setattr(SlurmJob, "results", results)  # noqa: B010 - a method, replaced for a while
    if not _accounting():
        SlurmJob.watcher = _make_queue_watcher()
    try:
        yield
    finally:
        setattr(SlurmJob, "results", original_results)  # noqa: B010
        SlurmJob.watcher = original_watcher


@functools.cache
def _accounting() -> bool:
    """Whether sacct answers (SLURM accounting, slurmdbd): what submitit's watcher asks."""
    try:
        return subprocess.run(["sacct", "--noheader", "-X", "-j", "1"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _make_queue_watcher() -> Any:
    from submitit.slurm.slurm import SlurmInfoWatcher

    class QueueWatcher(SlurmInfoWatcher):
        """Job states from squeue; a job squeue no longer lists has ended (state GONE)."""

        def __init__(self) -> None:
            super().__init__(delay_s=10)  # squeue is cheap; a lost job is seen within 10 s
            self.asked: set[str] = set()

        def _make_command(self) -> list[str] | None:
            self.asked = self._registered - self._finished
            if not self.asked:
                return None
            return ["squeue", "--me", "--array", "--states=all", "--noheader",
                    "--format=%i|%T"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            listed = {}
            for line in text.splitlines():
                job, _, state = line.strip().partition("|")
                listed[job] = {"JobID": job, "State": state}
            return {**{job: {"JobID": job, "State": GONE} for job in self.asked}, **listed}

    return QueueWatcher()
