"""Sweeps through a real SLURM cluster with the lrexp_slurm launcher: sbatch job arrays made by
hydra-submitit-launcher, a time limit, scancel, SLURM's SIGUSR2 notice, requeue, into a real
``mlflow server``. The cluster is scripts/slurm_local.sh's one node (2 CPUs here, KillWait=30 s);
.ci/run starts it and sets LREXP_TEST_SLURM=1."""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from app_runs import curve_rows, poll_until
from mlflow.tracking import MlflowClient
from sweep_checks import assert_child_matches_its_run_dir, check_sweep, default_signals, lrexp_cli
from test_slurm_rules import check_not_submitted

from lrexp.engine.result import RangeTestResult
from lrexp.sweep.slurm import EXIT_CLUSTER_UNAVAILABLE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("LREXP_TEST_SLURM"),
                       reason="set LREXP_TEST_SLURM=1 with a SLURM cluster running "
                              "(scripts/slurm_local.sh start; .ci/run does both)"),
]

# Jobs that fit the local node: no GPU, one CPU each, 1 GB
LAUNCHER = ("hydra/launcher=lrexp_slurm", "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1")


def tracking(uri: str, experiment: str) -> tuple[str, str]:
    return f"tracking.uri={uri}", f"tracking.experiment={experiment}"


def slurm(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True,
                          timeout=30).stdout


def job_state(slurm_id: str) -> dict[str, str]:
    """``scontrol show job`` as {field: value} (finished jobs stay listed for MinJobAge); {}
    for a job SLURM does not know."""
    shown = subprocess.run(["scontrol", "show", "job", "--oneliner", slurm_id],
                           capture_output=True, text=True, timeout=30).stdout
    return dict(word.split("=", 1) for word in shown.split() if "=" in word)


def slurm_ids(sweep_dir_glob: Path, jobs: int) -> dict[int, str]:
    """The SLURM ids (``<array>_<task>``) of a sweep's jobs by job number, once submitted:
    submitit names its folders after them (``.submitit/<array>_<task>``)."""
    found: dict[int, str] = {}

    def submitted() -> bool:
        for folder in Path().glob(f"{sweep_dir_glob}/.submitit/*_*"):
            if re.fullmatch(r"\d+_\d+", folder.name):
                found[int(folder.name.split("_")[1])] = folder.name
        return len(found) == jobs

    poll_until(submitted, f"{jobs} jobs submitted", 60)
    return found


def recording(job_dir: Path, rows: int = 10) -> bool:
    return curve_rows(job_dir / "curve.csv") >= rows


def release_when_requeued(slurm_id: str) -> None:
    """SLURM holds a requeued job back for about two minutes (its BeginTime); let it start
    now, as an administrator may."""
    poll_until(lambda: job_state(slurm_id).get("Reason") == "BeginTime",
               f"{slurm_id} requeued", 60)
    slurm("scontrol", "update", f"JobId={slurm_id}", "StartTime=now")


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "sweep_summary.csv") as table:
        return list(csv.DictReader(table))


def start_sweep(*overrides: str, cwd: Path) -> subprocess.Popen:
    """A real ``python -m lrexp -m`` sweep process, left running while the test acts on its jobs."""
    return subprocess.Popen([sys.executable, "-m", "lrexp", "-m", "progress=false", *overrides],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=default_signals)


def finish(sweep: subprocess.Popen, timeout: float = 240) -> str:
    try:
        output, _ = sweep.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        sweep.kill()
        output, _ = sweep.communicate()
        pytest.fail(f"the sweep did not end within {timeout} s:\n{output[-5000:]}")
    assert sweep.returncode == 0, output[-5000:]
    assert "Traceback" not in output, output[-5000:]
    return output


def test_a_three_net_sweep_through_sbatch_ends_with_one_parent_and_three_complete_children(
        tmp_path, mlflow_server_uri, experiment_name):
    nets = ["mlp", "simple_cnn", "resnet18"]
    proc = lrexp_cli("-m", *LAUNCHER, "hydra.launcher.timeout_min=5", f"net={','.join(nets)}",
                     "num_iter=10", "batch_size=8", *tracking(mlflow_server_uri, experiment_name),
                     cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, children = check_sweep(MlflowClient(mlflow_server_uri), tmp_path / "outputs" / "multirun",
                              nets, experiment=experiment_name)
    # each child ran as a task of one sbatch job array, with this checkout's lrexp
    ids = [child.data.tags["slurm.job_id"] for child in children]
    assert len({slurm_id.split("_")[0] for slurm_id in ids}) == 1 and len(set(ids)) == 3
    [sweep_dir] = (tmp_path / "outputs" / "multirun").glob("*/*")
    job_log = next(sweep_dir.glob(".submitit/*_0/*_0_log.out")).read_text()
    assert "Submitted job triggered an exception" not in job_log
    assert all(job_state(slurm_id)["JobState"] == "COMPLETED" for slurm_id in ids)


def test_jobs_slurm_stops_keep_their_curves_and_the_sweep_goes_on(
        tmp_path, mlflow_server_uri, experiment_name):
    # Five jobs, two at a time (the node has 2 CPUs): 0 ends on its own; 1 runs past its
    # 1-minute limit (no early notice: signal_delay_s=0); 2 is scancelled while it records;
    # 3 gets SLURM's early SIGUSR2 (what submitit asks for signal_delay_s before the limit)
    # while it records; 4 is cancelled before it starts.
    sweep = start_sweep(
        *LAUNCHER, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=0",
        "hydra.launcher.array_parallelism=2", "net=mlp", "max_lr=1e-3",
        "num_iter=30,1000001,1000002,1000003,1000004",
        *tracking(mlflow_server_uri, experiment_name), cwd=tmp_path)
    try:
        ids = slurm_ids(Path("outputs/multirun/*/*"), 5)
        slurm("scancel", ids[4])
        [sweep_dir] = (tmp_path / "outputs" / "multirun").glob("*/*")
        poll_until(lambda: recording(sweep_dir / "2_mlp"), "job 2 recording", 120)
        slurm("scancel", ids[2])
        poll_until(lambda: recording(sweep_dir / "3_mlp"), "job 3 recording", 120)
        slurm("scancel", "--signal=USR2", ids[3])
    finally:
        finish(sweep)

    expected = {0: ("completed", "", "COMPLETED"),
                1: ("interrupted", "SLURM time limit", "TIMEOUT"),
                2: ("interrupted", "scancel", "CANCELLED"),
                3: ("interrupted", "SLURM time limit", "COMPLETED"),  # it stopped itself
                4: ("KILLED", "SLURM: gone before it started", None)}
    rows = summary_rows(sweep_dir)
    assert [(row["status"], row["stopped_by"]) for row in rows] == \
        [status[:2] for status in expected.values()]
    # SLURM's own record; a pending task that scancel removed is forgotten at once
    assert [job_state(ids[n]).get("JobState") for n in expected] == \
        [status[2] for status in expected.values()]

    client = MlflowClient(mlflow_server_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment_name).experiment_id])
    [parent] = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert parent.info.status == "FINISHED"
    children = {run.data.tags["slurm.job_id"]: run for run in runs if run is not parent}
    assert sorted(children) == sorted(ids[n] for n in range(4))  # job 4 never ran
    for number in range(4):
        child, job_dir = children[ids[number]], sweep_dir / f"{number}_mlp"
        if number == 0:
            assert child.info.status == "FINISHED"
            assert_child_matches_its_run_dir(client, child, job_dir)
            continue
        curve = RangeTestResult.from_csv(job_dir / "curve.csv")
        history = client.get_metric_history(child.info.run_id, "loss")
        assert child.info.status == "KILLED" and curve.stop_reason == "interrupted"
        assert len(history) == len(curve) >= 10
        assert child.data.tags["stopped_by"] == expected[number][1]


def test_a_requeued_job_ends_as_one_complete_run(tmp_path, mlflow_server_uri, experiment_name):
    # job 0: `scontrol requeue` (SIGTERM) while it records; job 1: SLURM's SIGUSR2 notice while
    # it records, and submitit requeues it itself (max_num_timeout=1). Each runs again from
    # the start and ends FINISHED.
    sweep = start_sweep(
        *LAUNCHER, "hydra.launcher.timeout_min=5", "hydra.launcher.max_num_timeout=1",
        "net=mlp", "max_lr=1e-3", "num_iter=5000,5001",
        *tracking(mlflow_server_uri, experiment_name), cwd=tmp_path)
    try:
        ids = slurm_ids(Path("outputs/multirun/*/*"), 2)
        [sweep_dir] = (tmp_path / "outputs" / "multirun").glob("*/*")
        poll_until(lambda: recording(sweep_dir / "0_mlp"), "job 0 recording", 120)
        slurm("scontrol", "requeue", ids[0])
        poll_until(lambda: recording(sweep_dir / "1_mlp"), "job 1 recording", 120)
        slurm("scancel", "--signal=USR2", ids[1])
        for slurm_id in ids.values():
            release_when_requeued(slurm_id)
    finally:
        finish(sweep)

    client = MlflowClient(mlflow_server_uri)
    _, children = check_sweep(client, tmp_path / "outputs" / "multirun", ["mlp", "mlp"],
                              experiment=experiment_name)
    for child in children:  # the second attempt's run, and the first's deleted
        assert child.data.tags["slurm.restarts"] == "1"
        [replaced] = child.data.tags["lrexp.replaces"].split(",")
        first = client.get_run(replaced)
        assert first.info.lifecycle_stage == "deleted" and first.info.status == "KILLED"
        assert first.data.tags["slurm.job_id"] == child.data.tags["slurm.job_id"]
    assert {job_state(slurm_id)["Restarts"] for slurm_id in ids.values()} == {"1"}


def test_a_gpu_job_on_a_cpu_only_cluster_is_refused_in_one_paragraph_with_exit_2(
        tmp_path, shared_sqlite_uri, experiment_name):
    # the local node has no GPU (no gres): sbatch refuses gpus_per_node=1 at submission
    proc = lrexp_cli("-m", *LAUNCHER, "hydra.launcher.gpus_per_node=1", "net=mlp,simple_cnn",
                     "num_iter=5", *tracking(shared_sqlite_uri, experiment_name), cwd=tmp_path)
    check_not_submitted(proc, tmp_path / "outputs" / "multirun", shared_sqlite_uri,
                        experiment_name, 2, "Invalid generic resource (gres) specification",
                        "set it to null")


def test_a_controller_that_does_not_answer_ends_the_sweep_with_exit_69(
        tmp_path, shared_sqlite_uri, experiment_name):
    # this cluster's config with the controller's port moved to one nobody listens on: the
    # real sbatch, the cluster itself left running
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    (tmp_path / "slurm.conf").write_text(re.sub(
        r"^(SlurmctldHost=.*)$", r"\1\nSlurmctldPort=9", conf, count=1, flags=re.M))
    proc = lrexp_cli("-m", *LAUNCHER, "net=mlp,simple_cnn", "num_iter=5",
                     *tracking(shared_sqlite_uri, experiment_name), cwd=tmp_path,
                     env_extra={"SLURM_CONF": str(tmp_path / "slurm.conf")})
    check_not_submitted(proc, tmp_path / "outputs" / "multirun", shared_sqlite_uri,
                        experiment_name, EXIT_CLUSTER_UNAVAILABLE,
                        "Unable to contact slurm controller (connect failure)",
                        "check the cluster with sinfo or scontrol ping")
