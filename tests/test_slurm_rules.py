"""The SLURM rules that need no cluster: why a job stopped, which runs a requeued job replaces,
a notice that comes while no range test runs (tests/test_slurm.py runs them on a real one)."""

import os
import signal

import pytest
from hydra.core.utils import JobReturn, JobStatus
from mlflow.tracking import MlflowClient

from lrexp.sweep import slurm, slurm_job
from lrexp.sweep.recorder import SweepRecorder
from lrexp.tracking.mlflow_tracker import MlflowTracker


@pytest.mark.parametrize("state, started, expected", [
    ("CANCELLED by 0", True, slurm_job.CANCELLED),  # as sacct says it
    ("CANCELLED", True, slurm_job.CANCELLED),  # as squeue says it
    ("TIMEOUT", True, slurm_job.TIME_LIMIT),
    ("PREEMPTED", True, slurm_job.PREEMPTED),
    ("NODE_FAIL", True, "SLURM NODE_FAIL"),
    (slurm.GONE, False, "SLURM: gone before it started"),
    (slurm.GONE, True, "SLURM: gone"),
])
def test_a_lost_jobs_final_state_says_what_stopped_it(state, started, expected):
    assert slurm.stopped_by_state(state, started) == expected


@pytest.mark.parametrize("info, expected", [
    ({"JobState": "COMPLETING", "Reason": "TimeLimit", "Restarts": "0"}, slurm_job.TIME_LIMIT),
    ({"JobState": "COMPLETING", "Reason": "None", "Restarts": "0"}, slurm_job.CANCELLED),
    ({"JobState": "RUNNING", "Reason": "None", "Restarts": "1"}, slurm_job.REQUEUED),
    ({"JobState": "PREEMPTED", "Reason": "None", "Restarts": "0"}, slurm_job.PREEMPTED),
    ({}, "SIGTERM (SLURM job state unknown)"),  # the controller did not answer
])
def test_sigterm_is_told_apart_by_what_scontrol_shows_just_after(monkeypatch, info, expected):
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert slurm_job.sigterm_cause(info) == expected


def _attempt_run(monkeypatch, uri, experiment, parent, restarts, status, run_dir="/shared/0_mlp"):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_RESTART_COUNT", str(restarts))
    tracker = MlflowTracker(uri=uri, experiment=experiment, parent_run_id=parent)
    tracker.start("mlp", params={}, tags={"run_dir": run_dir, **slurm_job.slurm_tags()})
    tracker.log_step(0, 1e-3, 2.3)
    tracker.finish(status=status)
    return tracker.run_id


def test_a_requeued_jobs_run_replaces_only_its_own_earlier_attempts(
        monkeypatch, shared_sqlite_uri, experiment_name):
    client = MlflowClient(shared_sqlite_uri)
    parents = [SweepRecorder(uri=shared_sqlite_uri, experiment=experiment_name).open(
        f"sweep {n}", tags={}) for n in range(2)]
    first = _attempt_run(monkeypatch, shared_sqlite_uri, experiment_name, parents[1], 0, "KILLED")
    # the same job id in an older sweep (a cluster whose ids started over): not this job's
    older_sweep = _attempt_run(monkeypatch, shared_sqlite_uri, experiment_name, parents[0], 0,
                               "FINISHED")
    other_dir = _attempt_run(monkeypatch, shared_sqlite_uri, experiment_name, parents[1], 0,
                             "KILLED", run_dir="/shared/1_cnn")
    second = _attempt_run(monkeypatch, shared_sqlite_uri, experiment_name, parents[1], 1,
                          "FINISHED")
    assert client.get_run(first).info.lifecycle_stage == "deleted"
    assert client.get_run(second).data.tags["lrexp.replaces"] == first
    for kept in (older_sweep, other_dir, second):
        assert client.get_run(kept).info.lifecycle_stage == "active"


def test_a_notice_while_no_range_test_runs_is_dropped_not_raised():
    def submitits_notice(signum, frame):  # raises, as submitit's handler does outside a test
        raise RuntimeError("submitit would requeue or fail here")

    previous = signal.signal(signal.SIGUSR2, submitits_notice)
    try:
        def job() -> JobReturn:
            os.kill(os.getpid(), signal.SIGUSR2)  # e.g. while Hydra writes the job's result
            return JobReturn(status=JobStatus.COMPLETED, _return_value=0)

        assert slurm.run_job(job).return_value == 0
        assert signal.getsignal(signal.SIGUSR2) is submitits_notice  # put back for submitit
    finally:
        signal.signal(signal.SIGUSR2, previous)


def check_not_submitted(proc, sweep_root, uri, experiment, exit_code, said, fix):
    """A sweep SLURM took no job of: one paragraph naming sbatch's words and the fix, the exit
    code, every job listed FAILED as not submitted, the parent run closed FAILED, no child."""
    import csv

    assert proc.returncode == exit_code, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    [paragraph] = [line for line in proc.stderr.splitlines() if line.startswith("lrexp: error:")]
    assert paragraph.startswith("lrexp: error: SLURM took none of the sweep's jobs: ")
    assert f'("{said}"' in paragraph and fix in paragraph and f"Exit code {exit_code}." in paragraph
    [table] = sweep_root.glob("*/*/sweep_summary.csv")
    with open(table) as rows:
        jobs = list(csv.DictReader(rows))
    assert [(row["status"], row["error"]) for row in jobs] == \
        [("FAILED", f"not submitted to SLURM: {said}")] * 2
    client = MlflowClient(uri)
    [parent] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert parent.info.status == "FAILED" and parent.info.run_id in paragraph


@pytest.mark.slow
def test_a_sweep_without_slurms_commands_ends_in_one_paragraph_exit_69_and_a_failed_parent(
        tmp_path, shared_sqlite_uri, experiment_name):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="needs the [submitit] extra")
    import sys
    from pathlib import Path

    from sweep_checks import lrexp_cli

    # PATH: the Python running the tests, and nothing of SLURM's
    proc = lrexp_cli("-m", "hydra/launcher=lrexp_slurm", "net=mlp,simple_cnn", "num_iter=5",
                     f"tracking.uri={shared_sqlite_uri}", f"tracking.experiment={experiment_name}",
                     cwd=tmp_path, env_extra={"PATH": str(Path(sys.executable).parent)})
    check_not_submitted(proc, tmp_path / "outputs" / "multirun", shared_sqlite_uri,
                        experiment_name, slurm.EXIT_CLUSTER_UNAVAILABLE, "srun: command not found",
                        "run the sweep on the cluster's login node")


@pytest.mark.parametrize(("filename", "missing"), [("sbatch", "sbatch"), ("/usr/bin/srun", "srun"),
                                                   ("/tmp/sweep/config.yaml", None)])
def test_only_a_missing_slurm_command_reads_as_slurm_absent(filename, missing):
    pytest.importorskip("submitit")
    error = FileNotFoundError(2, "No such file or directory", filename)
    why = slurm.not_submitted(error)
    if missing is None:  # another missing file is not SLURM's absence: its own error stands
        assert why is None
    else:
        assert why.exit_code == slurm.EXIT_CLUSTER_UNAVAILABLE
        assert why.said == f"{missing}: command not found"


@pytest.mark.parametrize("closed", [None, "FAILED"])
def test_the_paragraph_says_the_parent_is_closed_only_when_the_sweep_closed_it(
        tmp_path, capsys, closed):
    import json

    from lrexp.run.files import PARENT_CLOSED_FILE, PARENT_RUN_FILE

    why = slurm.NotSubmitted("sbatch refused the sweep's jobs as configured", "Invalid gres",
                             "set gpus_per_node to null", 2)
    (tmp_path / slurm.NOT_SUBMITTED_FILE).write_text(json.dumps(why.__dict__))
    (tmp_path / PARENT_RUN_FILE).write_text("abc123")
    if closed:  # the sweep's end closed the parent run
        (tmp_path / PARENT_CLOSED_FILE).write_text(closed)
    with pytest.raises(SystemExit) as exit_:
        slurm.report_not_submitted(tmp_path, {"partition": "debug"})
    assert exit_.value.code == 2
    paragraph = capsys.readouterr().err
    said = ("the sweep's MLflow run abc123 is closed FAILED" if closed else
            "the sweep's MLflow run abc123 could not be closed")
    assert said in paragraph and ("closed FAILED" in paragraph) == bool(closed)


def test_what_lrexp_changes_in_submitit_is_still_where_it_was():
    """submitit offers no hook for a lost job's result or for its watcher: lrexp replaces
    ``SlurmJob.results`` and ``SlurmJob.watcher`` while it waits (slurm.waiting_for_jobs).
    This fails loudly when a submitit or plugin release moves either."""
    import inspect

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

    assert ".results()" in inspect.getsource(BaseSubmititLauncher.launch)
    assert isinstance(SlurmJob.watcher, SlurmInfoWatcher)
    for name in ("_make_command", "read_info", "get_state"):
        assert callable(getattr(SlurmInfoWatcher, name))
    assert {"_registered", "_finished"} <= set(vars(SlurmInfoWatcher(delay_s=1)))
    original = SlurmJob.results, SlurmJob.watcher
    job = SlurmJob.__new__(SlurmJob)  # a job whose results() raises (it has no folder)
    with slurm.waiting_for_jobs(lambda lost, error: ("recorded", lost)):
        assert job.results() == [("recorded", job)]
    assert (SlurmJob.results, SlurmJob.watcher) == original
