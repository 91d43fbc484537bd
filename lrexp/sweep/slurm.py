"""What the ``lrexp_slurm`` launcher adds to hydra-submitit-launcher's SlurmLauncher for jobs
that SLURM stops. The launcher class itself is ``hydra_plugins.lrexp_slurm_launcher`` (source:
lrexp/sweep/hydra_plugin; Hydra instantiates launchers from the ``hydra_plugins`` package only)
and calls ``run_job`` in each job and ``waiting_for_jobs`` around its ``launch``;
conf/hydra/launcher/lrexp_slurm.yaml targets it.

In a job (see ``slurm_job`` for the signals SLURM sends and why):
- SIGUSR2, which submitit has SLURM send ``signal_delay_s`` before the time limit (or on
  preemption): submitit's own handler would raise inside the range test and the run would end
  FAILED. lrexp stops the test first, records the partial curve KILLED, then hands the signal to
  submitit, which requeues the job (preempted, or ``max_num_timeout`` not used up) or not.
- SIGTERM (the time limit itself, ``scancel``, ``scontrol requeue``): lrexp's SIGTERM handling
  records the partial curve KILLED; ``stopped_by`` says which, as SLURM tells it.
- One job's stop never skips the sweep's other jobs (``stops.scheduled_job``). A job being
  requeued ends without a result, so the parent waits for its next attempt, whose MLflow run
  replaces this one's (the tracker matches ``slurm.job_id`` and the run dir).

In the sweep's parent, where submitit's launcher waits for each job's result:
- a job that left no result (cancelled while pending, killed outright) makes submitit raise,
  which would end the sweep without its summary and leave the parent run open: lrexp records
  that job KILLED with SLURM's final state and goes on.
- without SLURM accounting (no slurmdbd, so no sacct) submitit cannot see such a job end and
  would wait forever: lrexp asks squeue instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import open_dict

from lrexp.run import stops
from lrexp.run.life import EXIT_FAILED, EXIT_TERMINATED, FAILED, KILLED
from lrexp.sweep import slurm_job

__all__ = ["GONE", "lost_job", "run_job", "stopped_by_state", "waiting_for_jobs"]

log = logging.getLogger(__name__)

# A job's final SLURM state (squeue or sacct) -> stopped_by, for a job that left no result
_FINAL_STATES = {"CANCELLED": slurm_job.CANCELLED, "TIMEOUT": slurm_job.TIME_LIMIT,
                 "PREEMPTED": slurm_job.PREEMPTED}
GONE = "GONE"  # a job squeue no longer lists (ended MinJobAge ago, or cancelled while pending)


def run_job(call: Callable[[], JobReturn]) -> JobReturn:
    """One job, on a node (the launcher's ``__call__``; submitit has set its signal handlers):
    stops recorded with SLURM's reason, SIGUSR2 handed to submitit afterwards. A SIGUSR2 that
    comes while no range test runs (Hydra's job set-up, writing the results) is noted and
    dropped: submitit's handler would raise there, and a test that ended needs no requeue."""
    notice = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint_and_try_requeue
    causes = _Causes(notice)
    outside_the_test: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: outside_the_test.append(signum))
    try:
        with stops.scheduled_job(stops.Scheduler((signal.SIGUSR2,), causes.of)) as record:
            returned = call()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    if outside_the_test:
        log.info("SLURM's early notice (SIGUSR2) came while no range test ran; the job ends as "
                 "it is.")
    _requeue_if_asked(record.received, causes, notice)
    return returned


@contextlib.contextmanager
def waiting_for_jobs(lost_job: Callable[[Any, Exception], JobReturn]) -> Iterator[None]:
    """Around the launcher's ``launch`` (in the sweep's parent): jobs watched by squeue where
    sacct does not answer; a job that left no result handed to ``lost_job``."""
    with _watched_by_squeue(), _results_never_raise(lost_job):
        yield


def lost_job(launcher: Any, job: Any, error: Exception) -> JobReturn:
    """Record a job that left no result in its job dir's summary.json (where the sweep's
    summary reads it): KILLED with SLURM's final state when it did not finish
    (``UncompletedJobError``), FAILED with the error's last line when it raised
    (``FailedJobError``); a summary that already says how the test ended is kept. Its JobReturn
    for Hydra's sweeper, which must not raise: the sweep goes on to its summary."""
    try:
        return _record_lost_job(launcher, job, error)
    except Exception as failure:  # noqa: BLE001 - never the end of the sweep
        log.warning("Job %s left no result, and recording it failed: %s", job.job_id, failure)
        return JobReturn(overrides=[], status=JobStatus.COMPLETED, _return_value=EXIT_FAILED)


def _record_lost_job(launcher: Any, job: Any, error: Exception) -> JobReturn:
    from hydra.core.hydra_config import HydraConfig
    from submitit.core.utils import DelayedSubmission, FailedJobError

    from lrexp.run.life import ENDED_ON_ITS_OWN, run_names
    from lrexp.run.summary import SUMMARY_FILE, RunSummary, write_status

    overrides, _, job_num, *_ = DelayedSubmission.load(job.paths.submitted_pickle).args
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config,
                                                                    list(overrides))
    with open_dict(config.hydra.job):
        config.hydra.job.num = job_num
    HydraConfig.instance().set_config(config)  # the subdir may use ${hydra:...}
    job_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    reason = lines[-1 if isinstance(error, FailedJobError) else 0] if lines else repr(error)
    returned = JobReturn(overrides=list(overrides), cfg=config, working_dir=str(job_dir),
                         task_name=str(config.hydra.job.name), status=JobStatus.COMPLETED)
    with contextlib.suppress(OSError, ValueError):
        if RunSummary.read(job_dir / SUMMARY_FILE).status in ENDED_ON_ITS_OWN:
            log.warning("Job %s (%s) finished its range test but returned no result: %s",
                        job.job_id, job_dir.name, reason)
            returned.return_value = EXIT_FAILED
            return returned
    if isinstance(error, FailedJobError):  # it ran and raised: a crash, not a stop
        log.warning("Job %s (%s) failed: %s", job.job_id, job_dir.name, reason)
        write_status(job_dir, run_names(config), FAILED, error=reason)
        returned.return_value = EXIT_FAILED
        return returned
    state = job.watcher.get_state(job.job_id, mode="force")
    stopped_by = stopped_by_state(state, started=(job_dir / ".hydra").is_dir())
    log.warning("Job %s (%s) ended without a result (SLURM state %s); recorded as KILLED: %s",
                job.job_id, job_dir.name, state, reason)
    write_status(job_dir, run_names(config), KILLED, error=reason, stopped_by=stopped_by)
    returned.return_value = EXIT_TERMINATED
    return returned


def stopped_by_state(state: str, started: bool) -> str:
    """``stopped_by`` of a job that left no result, from its final SLURM state as squeue or
    sacct gives it ("CANCELLED by 0", "TIMEOUT", ...; ``GONE``: squeue no longer lists it)."""
    if state == GONE:  # a pending array task that scancel removed leaves no trace in SLURM
        return "SLURM: gone" + ("" if started else " before it started")
    head = state.split()[0] if state.split() else "unknown"
    return _FINAL_STATES.get(head, f"SLURM {head}")


class _Causes:
    """Why SLURM stopped this job, asked once per signal: SLURM's answer changes as the job
    ends (COMPLETING, then gone)."""

    def __init__(self, notice: Any) -> None:
        self.notice = notice
        self.known: dict[int, str] = {}

    def of(self, signum: int) -> str:
        if signum not in self.known:
            self.known[signum] = self._ask(signum)
        return self.known[signum]

    def _ask(self, signum: int) -> str:
        if signum == signal.SIGUSR2:  # submitit tells a time limit from a preemption by the clock
            timed_out = getattr(getattr(self.notice, "__self__", None), "has_timed_out", None)
            return slurm_job.TIME_LIMIT if timed_out is None or timed_out() \
                else slurm_job.PREEMPTED
        return slurm_job.sigterm_cause(slurm_job.job_info())


def _requeue_if_asked(received: int | None, causes: _Causes, notice: Any) -> None:
    """After the run recorded what it had: a job SLURM requeues leaves no result (the parent
    waits for its next attempt); after SIGUSR2, submitit decides whether to requeue."""
    if received == signal.SIGTERM and causes.of(received) == slurm_job.REQUEUED:
        log.warning("SLURM requeued this job: it ends without a result; its next attempt runs "
                    "the range test again and its MLflow run replaces this one.")
        raise SystemExit(EXIT_TERMINATED)
    if received == signal.SIGUSR2 and callable(notice):
        from submitit.core.utils import UncompletedJobError

        try:
            notice(signal.SIGUSR2, None)  # checkpoints and requeues (and exits), or refuses
        except UncompletedJobError as refusal:
            log.info("submitit did not requeue this job: %s", refusal)


@contextlib.contextmanager
def _results_never_raise(lost_job: Callable[[Any, Exception], JobReturn]) -> Iterator[None]:
    """While the plugin's ``launch`` gathers results (``[j.results()[0] for j in jobs]``, no
    hook), a job that left none is handed to ``lost_job`` instead of raising."""
    from submitit.slurm.slurm import SlurmJob

    original = SlurmJob.results

    def results(job: Any) -> list[Any]:
        try:
            return original(job)
        except Exception as error:  # noqa: BLE001 - UncompletedJobError, FailedJobError
            return [lost_job(job, error)]

    setattr(SlurmJob, "results", results)  # noqa: B010 - a method, replaced for a while
    try:
        yield
    finally:
        setattr(SlurmJob, "results", original)  # noqa: B010


@contextlib.contextmanager
def _watched_by_squeue() -> Iterator[None]:
    """submitit watches jobs through a watcher shared by its SlurmJob class; without accounting,
    one that asks squeue."""
    from submitit.slurm.slurm import SlurmJob

    if _accounting():
        yield
        return
    original = SlurmJob.watcher
    SlurmJob.watcher = _make_queue_watcher()
    try:
        yield
    finally:
        SlurmJob.watcher = original


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
