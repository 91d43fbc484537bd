"""Faults against the real app: signals to real processes, a real full or read-only
filesystem (a small tmpfs, where this machine lets the tests mount one), a real SQLite store.
Each test states what must be kept; no MLflow run may stay RUNNING after any of them."""

import contextlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from app_runs import (
    compose_config,
    curve_rows,
    lrexp_main,
    poll_until,
    run_config,
    signal_this_process_when,
)
from mlflow.tracking import MlflowClient
from sweep_checks import lrexp_process, runs_of, wait_until_training

from lrexp.engine.result import RangeTestResult
from lrexp.tracking.mlflow_tracker import MlflowTracker


def _wait_for_rows(curve: Path, rows: int) -> None:
    poll_until(lambda: curve_rows(curve) >= rows, f"{rows} rows flushed to {curve}")


def _store(tmp_path):
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _loss_steps(client, run) -> int:
    return len(client.get_metric_history(run.info.run_id, "loss"))


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# A long, slow ramp: the range test is still running when the signal arrives.
LONG_RUN = ("num_iter=100000", "max_lr=1e-3", "hydra.run.dir=run")


@pytest.mark.parametrize("signum,exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl_c", "sigterm"])
def test_a_stop_signal_keeps_the_partial_curve_closes_the_run_killed_and_sets_the_exit_code(
        tmp_path, caplog, shared_sqlite_uri, experiment_name, signum, exit_code):
    # The signal goes to this process while the runner trains in it; a real `python -m lrexp`
    # gets one in the slow tests (test_cli, and SIGTERM below)
    cfg = compose_config("tracking=mlflow", f"tracking.uri={shared_sqlite_uri}",
                         f"tracking.experiment={experiment_name}", "net=mlp", *LONG_RUN[:2],
                         out_dir=tmp_path / "run")
    curve = tmp_path / "run" / "curve.csv"
    with signal_this_process_when(lambda: curve_rows(curve) >= 10, signum) as problems:
        code = run_config(cfg)
    assert not problems, problems
    assert code == exit_code, caplog.text
    assert "Traceback" not in caplog.text
    _assert_stopped_and_recorded(tmp_path / "run", MlflowClient(shared_sqlite_uri),
                                 experiment_name, rows=10)


def _long_run_recording(tmp_path: Path, rows: int):
    """A real ``python -m lrexp`` of a long run, once ``rows`` points reached its curve.csv."""
    proc = lrexp_process(*LONG_RUN, cwd=tmp_path)
    wait_until_training(tmp_path / "run")
    _wait_for_rows(tmp_path / "run" / "curve.csv", rows)
    return proc


def _assert_stopped_and_recorded(run_dir: Path, client, experiment: str, rows: int) -> None:
    """The stopped run's curve, summary and MLflow run agree: interrupted, KILLED, every step."""
    result = RangeTestResult.from_csv(run_dir / "curve.csv")
    assert result.stop_reason == "interrupted" and len(result) >= rows
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == len(result)
    [run] = runs_of(client, experiment)
    assert run.info.status == "KILLED"
    assert _loss_steps(client, run) == len(result)


@pytest.mark.slow
def test_sigterm_records_the_partial_curve_closes_the_run_killed_and_exits_143(tmp_path,
                                                                              default_store):
    proc = _long_run_recording(tmp_path, rows=12)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "Traceback" not in out
    _assert_stopped_and_recorded(tmp_path / "run", _store(tmp_path), "lrexp", rows=12)


@pytest.mark.slow
def test_kill_9_keeps_the_flushed_curve_and_the_sidecar_closes_the_run_killed(tmp_path,
                                                                             default_store):
    # The tracker runs in a sidecar process (tracking.sidecar=auto in a fresh process): it
    # outlives the kill, reads EOF on its commands and closes the run itself, with every step
    # it received. (In-process, the run stayed RUNNING until a later run closed the orphan:
    # test_an_orphaned_run_is_closed_by_the_next_run.)
    proc = _long_run_recording(tmp_path, rows=25)
    # the tracker logs once its MLflow run is open; a kill before that leaves no run at all
    poll_until(lambda: proc.poll() is not None or "MLflow run" in
               (tmp_path / "run" / "lrexp.log").read_text(), "the MLflow run opened")
    proc.kill()
    out, _ = proc.communicate(timeout=60)  # until the sidecar, which shares its output, is done
    curve = RangeTestResult.from_csv(tmp_path / "run" / "curve.csv")
    assert curve.stop_reason == "interrupted" and len(curve) >= 25  # what was flushed stays
    assert (tmp_path / "run" / "config.yaml").exists()
    client = _store(tmp_path)
    poll_until(lambda: runs_of(client)[0].info.status != "RUNNING", "the sidecar closed the run")
    [run] = runs_of(client)
    assert run.info.status == "KILLED" and run.data.tags["status"] == "KILLED", out
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
    # every step the sidecar got: at least those flushed to curve.csv before the kill; the pipe
    # carries each step at once while the file flushes every 10 rows (CurveWriter), so MLflow
    # may hold up to 9 steps the killed file never got (and, killed between the two, the file
    # one the pipe did not carry yet)
    assert steps == list(range(len(steps))) and len(curve) - 1 <= len(steps) < len(curve) + 10
    assert len(steps) >= 25


@pytest.mark.slow
def test_an_orphaned_run_is_closed_by_the_next_run(tmp_path, default_store):
    # a run whose process died without closing it (an in-process tracker killed outright)
    proc = lrexp_process(*LONG_RUN, "tracking.sidecar=false", cwd=tmp_path)
    wait_until_training(tmp_path / "run")
    poll_until(lambda: proc.poll() is not None or "MLflow run" in
               (tmp_path / "run" / "lrexp.log").read_text(), "the MLflow run opened")
    proc.kill()
    proc.communicate(timeout=60)
    client = _store(tmp_path)
    [orphan] = runs_of(client)
    assert orphan.info.status == "RUNNING"  # nobody could close it yet

    later = lrexp_main("num_iter=5", "net=mlp", "hydra.run.dir=later")  # any later run
    assert later.returncode == 0, later.output
    statuses = {r.data.tags["run_dir"]: r.info.status for r in runs_of(client)}
    assert statuses[str((tmp_path / "run").resolve())] == "KILLED"
    assert statuses[str((tmp_path / "later").resolve())] == "FINISHED"


@pytest.mark.slow  # the portable failure while writing results (plot.png a folder) is fast
def test_a_full_disk_while_writing_results_keeps_the_curve_and_closes_the_run_failed(
        tmp_path, shared_sqlite_uri, experiment_name):
    # 48 kB hold Hydra's files, the config, the curve and the summary, not the plots
    with _tmpfs(tmp_path / "small", "size=48k") as small:
        finished = lrexp_main("num_iter=60", "net=mlp", f"hydra.run.dir={small / 'run'}",
                              f"tracking.uri={shared_sqlite_uri}",
                              f"tracking.experiment={experiment_name}")
        out = finished.output
        assert finished.returncode == 1, out
        assert "Traceback" not in out and "No space left on device" in out
        assert "Free space on that disk" in out and "curve.csv" in out
        curve = RangeTestResult.from_csv(small / "run" / "curve.csv")
        summary = json.loads((small / "run" / "summary.json").read_text())
    assert summary["status"] == "FAILED" and "No space left" in summary["error"]
    assert summary["steps"] == len(curve) and "suggestions" in summary  # the real summary
    client = MlflowClient(shared_sqlite_uri)
    [run] = runs_of(client, experiment_name)
    assert run.info.status == "FAILED" and _loss_steps(client, run) == len(curve)


def test_a_read_only_run_dir_is_refused_in_one_paragraph_before_any_work(tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        finished = lrexp_main("num_iter=5", "tracking=none", f"hydra.run.dir={read_only / 'run'}")
    out = finished.output
    assert finished.returncode == 2, out
    assert "Traceback" not in out and "cannot be written" in out and "hydra.run.dir=" in out
    assert "Starting the LR range test" not in out


def _unusable_store(path: Path, kind: str) -> None:
    if kind == "a folder":
        path.mkdir()
    else:
        path.write_bytes(b"not a database at all, just junk bytes")


@pytest.mark.parametrize("kind", ["a folder", "a corrupt file"])
def test_an_unusable_sqlite_store_is_given_up_at_once_with_one_warning(tmp_path, caplog, kind):
    _unusable_store(tmp_path / "mlflow.db", kind)
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    started = time.monotonic()
    with caplog.at_level("WARNING"):
        tracker.start("run", params={"a": 1}, tags={})
        tracker.log_step(0, 1e-3, 2.0)
        tracker.finish(status="FINISHED")
    assert time.monotonic() - started < 5  # MLflow alone retried for 1 min 42 s on a folder
    assert not tracker.usable and tracker.run_id is None
    [warning] = [r.getMessage() for r in caplog.records if "Tracking disabled" in r.getMessage()]
    assert "mlflow.db" in warning


@pytest.mark.slow  # the tracker's part is the test above; the run's, test_tracking's unreachable
def test_a_run_on_an_unusable_store_costs_one_warning_not_minutes(tmp_path):
    _unusable_store(tmp_path / "mlflow.db", "a corrupt file")
    started = time.monotonic()
    finished = lrexp_main("num_iter=5", "net=mlp", "hydra.run.dir=run")
    out = finished.output
    assert finished.returncode == 0, out
    assert time.monotonic() - started < 40
    [warning] = [line for line in out.splitlines() if "Tracking disabled" in line]
    assert "mlflow.db" in warning and "Traceback" not in out
    assert (tmp_path / "run" / "curve.csv").exists()


@pytest.mark.slow
def test_two_first_runs_at_once_both_track_into_the_new_store(tmp_path):
    procs = [lrexp_process("num_iter=5", f"hydra.run.dir=run{i}", cwd=tmp_path) for i in range(2)]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert not any("Tracking disabled" in out for out in outputs), outputs
    runs = runs_of(_store(tmp_path))
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]


@pytest.mark.slow
def test_a_read_only_store_costs_one_warning_line(tmp_path):
    made = tmp_path / "mlflow.db"  # a store with lrexp's experiment, as an earlier run leaves it
    MlflowClient(f"sqlite:///{made}").create_experiment("lrexp")
    with _tmpfs(tmp_path / "store", "size=8m") as store:
        shutil.copy(made, store / "mlflow.db")  # this process keeps the original open
        subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True)
        finished = lrexp_main("num_iter=5", "net=mlp", f"tracking.uri=sqlite:///{store}/mlflow.db",
                              "hydra.run.dir=run")
    out = finished.output
    assert finished.returncode == 0 and "Traceback" not in out, out
    assert len([line for line in out.splitlines() if "Tracking disabled" in line]) == 1
    assert len(out.splitlines()) < 20  # no SQLAlchemy essay


def test_a_password_in_the_tracking_uri_works_and_is_written_nowhere(
        tmp_path, mlflow_server_uri, experiment_name):
    secret = "s3cret-pa55"
    uri = mlflow_server_uri
    with_password = uri.replace("http://", f"http://alice:{secret}@")
    finished = lrexp_main("num_iter=8", "net=mlp", f"tracking.uri={with_password}",
                          f"tracking.experiment={experiment_name}", "hydra.run.dir=run")
    out = finished.output
    assert finished.returncode == 0, out
    assert "Tracking disabled" not in out  # the health probe got through
    client = MlflowClient(uri)
    [run] = runs_of(client, experiment_name)
    assert run.info.status == "FINISHED"
    recorded = [*run.data.params.values(), *run.data.tags.values()]
    assert run.data.params["tracking.uri"] == uri.replace("http://", "http://***@")
    assert not any(secret in str(value) for value in recorded)
    assert secret not in out
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def test_a_password_in_a_sweeps_tracking_uri_is_written_nowhere(
        tmp_path, mlflow_server_uri, experiment_name):
    # Hydra records a job's overrides with their colons escaped (http\://alice\:pw@...): in
    # each job's .hydra files, its log, the hydra_overrides tag and its console line
    secret = "sw33p-pa55"
    with_password = mlflow_server_uri.replace("http://", f"http://alice:{secret}@")
    finished = lrexp_main("-m", "net=mlp,simple_cnn", "num_iter=6",
                          f"tracking.uri={with_password}",
                          f"tracking.experiment={experiment_name}")
    assert finished.returncode == 0, finished.output
    assert secret not in finished.output
    runs = runs_of(MlflowClient(mlflow_server_uri), experiment_name)
    assert len(runs) == 3  # the parent and its two children
    for run in runs:
        recorded = [*run.data.params.values(), *run.data.tags.values(), run.info.run_name]
        assert not any(secret in str(value) for value in recorded), run.info.run_name
    written = [path for path in (tmp_path / "outputs").rglob("*") if path.is_file()
               and secret in path.read_text(errors="replace")]
    assert not written


def test_a_failure_while_saving_the_plot_keeps_the_real_summary_and_closes_the_run_failed(
        tmp_path, caplog, shared_sqlite_uri, experiment_name):
    """A folder where plot.png should go makes saving fail after the range test (as a full
    disk does, on any machine): the run must not be left RUNNING nor its summary lost."""
    out_dir = tmp_path / "run"
    (out_dir / "plot.png").mkdir(parents=True)
    cfg = compose_config("tracking=mlflow", f"tracking.uri={shared_sqlite_uri}",
                         f"tracking.experiment={experiment_name}", "num_iter=30",
                         out_dir=out_dir)
    assert run_config(cfg) == 1
    summary = json.loads((out_dir / "summary.json").read_text())
    curve = RangeTestResult.from_csv(out_dir / "curve.csv")
    assert summary["status"] == "FAILED" and "IsADirectoryError" in summary["error"]
    assert summary["steps"] == len(curve) > 0 and "confidence" in summary
    assert "Kept in" in caplog.text and "Traceback" not in caplog.text
    client = MlflowClient(shared_sqlite_uri)
    [run] = runs_of(client, experiment_name)
    assert run.info.status == "FAILED" and _loss_steps(client, run) == len(curve)
