"""The tracking sidecar: MLflow in a child process, driven by the training process.

A real ``python -m lrexp`` uses it by default (tracking.sidecar=auto and no MLflow imported
there): the slow tests of test_cli, test_faults and test_tracking run through it. Here, where
pytest has imported MLflow already (auto means in-process), ``tracking.sidecar=true`` forces it.
"""

import logging
import os
import signal
import sys

import pytest
from app_runs import compose_config, curve_rows, lrexp_main, run_config, signal_this_process_when
from mlflow.tracking import MlflowClient
from mlflow_server import free_port
from omegaconf import OmegaConf
from sweep_checks import assert_child_matches_its_run_dir, runs_of

from lrexp.engine.result import RangeTestResult
from lrexp.tracking.build import build_tracker, use_sidecar
from lrexp.tracking.mlflow_tracker import MlflowTracker, NullTracker
from lrexp.tracking.sidecar import SidecarTracker


def _sidecar(uri, experiment, wait_s=120.0) -> SidecarTracker:
    return SidecarTracker("lrexp.tracking.mlflow_tracker.MlflowTracker",
                          {"uri": uri, "experiment": experiment}, wait_s)


def _warnings(caplog, needle):
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and needle in r.getMessage()]


def test_the_sidecar_is_chosen_in_one_place():
    tracking = OmegaConf.create({"_target_": "lrexp.tracking.mlflow_tracker.MlflowTracker",
                                 "enabled": True, "uri": "sqlite:///x.db", "sidecar": "auto"})
    assert "mlflow" in sys.modules  # this test session imported it: auto means in-process
    assert isinstance(build_tracker(tracking), MlflowTracker)
    assert use_sidecar(True, "x.MlflowTracker") and not use_sidecar(False, "x.MlflowTracker")
    assert not use_sidecar("auto", "lrexp.tracking.mlflow_tracker.NullTracker")
    tracking.enabled = False
    assert isinstance(build_tracker(tracking), NullTracker)


def test_a_run_through_the_sidecar_records_every_step_param_tag_and_file(
        tmp_path, shared_sqlite_uri, experiment_name):
    finished = lrexp_main("num_iter=12", "net=mlp", "tracking.sidecar=true",
                          f"tracking.uri={shared_sqlite_uri}",
                          f"tracking.experiment={experiment_name}", "hydra.run.dir=run")
    assert finished.returncode == 0, finished.output
    client = MlflowClient(shared_sqlite_uri)
    [run] = runs_of(client, experiment_name)
    assert run.info.status == "FINISHED"
    assert_child_matches_its_run_dir(client, run, tmp_path / "run")
    # the child's records reach this process's log file
    assert "MLflow run" in (tmp_path / "run" / "lrexp.log").read_text()
    assert "images" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_the_sidecars_warnings_reach_this_processs_log(tmp_path, caplog):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = compose_config("tracking=mlflow", "tracking.sidecar=true", f"tracking.uri={uri}",
                         "tracking.timeout_s=1", "num_iter=5", "net=mlp",
                         out_dir=tmp_path / "run")
    assert run_config(cfg) == 0
    [warning] = _warnings(caplog, "Tracking disabled")
    assert "did not answer" in warning
    assert _warnings(caplog, "python -m lrexp.tracking.import_run")
    assert (tmp_path / "run" / "curve.csv").exists()


@pytest.mark.slow  # a real process's Ctrl-C through the sidecar: test_cli's
def test_ctrl_c_through_the_sidecar_closes_the_run_killed_with_every_step(
        tmp_path, caplog, shared_sqlite_uri, experiment_name):
    cfg = compose_config("tracking=mlflow", "tracking.sidecar=true",
                         f"tracking.uri={shared_sqlite_uri}",
                         f"tracking.experiment={experiment_name}", "net=mlp",
                         "num_iter=100000", "max_lr=1e-3", out_dir=tmp_path / "run")
    curve = tmp_path / "run" / "curve.csv"
    with signal_this_process_when(lambda: curve_rows(curve) >= 10) as problems:
        code = run_config(cfg)
    assert not problems, problems
    assert code == 130, caplog.text
    result = RangeTestResult.from_csv(curve)
    client = MlflowClient(shared_sqlite_uri)
    [run] = runs_of(client, experiment_name)
    assert run.info.status == "KILLED" and run.data.tags["status"] == "interrupted"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == len(result)


@pytest.mark.slow  # the fast loop's sidecar runs above cost ~5 s; test_faults's kill -9 also
def test_a_parent_gone_without_finish_gets_its_run_closed_killed_by_the_child(
        shared_sqlite_uri, experiment_name, caplog):
    # what the child sees after kill -9 of the training process: EOF on its commands
    tracker = _sidecar(shared_sqlite_uri, experiment_name)
    tracker.start("gone", params={"a": 1}, tags={"net": "n"})
    for step in range(30):
        tracker.log_step(step, 1e-3 * (step + 1), 2.0 - step / 100)
    tracker.close()
    assert tracker._child.wait(timeout=120) == 0
    tracker._reader.join(timeout=10)
    client = MlflowClient(shared_sqlite_uri)
    [run] = runs_of(client, experiment_name)
    assert run.info.status == "KILLED" and run.data.tags["status"] == "KILLED"
    assert run.data.params["a"] == "1"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(30))
    assert _warnings(caplog, "closing it KILLED with the 30 steps")


@pytest.mark.slow  # the new child imports MLflow (~7 s); test_faults_tracking has the app's
def test_a_child_that_dies_mid_run_is_replaced_and_the_run_completed(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = _sidecar(uri, "x")
    tracker.start("dies", params={}, tags={})
    tracker._child.kill()
    tracker._child.wait(timeout=30)
    for step in range(5):
        tracker.log_step(step, 1e-3, 2.0)
    tracker.finish(status="FINISHED", out_dir=tmp_path)
    assert not _warnings(caplog, "Tracking disabled") and not _warnings(caplog, "import_run")
    [stopped] = _warnings(caplog, "stopped (exit code -9)")
    assert "a new one completes the MLflow run" in stopped
    client = MlflowClient(uri)
    [run] = runs_of(client, "x")
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 5
    assert tracker.outcome().steps == 5 and tracker.outcome().status == "FINISHED"


@pytest.mark.slow  # two children import MLflow (~7 s each)
def test_the_run_belongs_to_the_training_process_so_no_orphan_closer_ends_it(tmp_path):
    import time

    from lrexp.tracking.mlflow_tracker import OWNER_PID_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = _sidecar(uri, "x")
    tracker.start("training", params={}, tags={})
    deadline = time.monotonic() + 120
    while tracker.run_id is None and time.monotonic() < deadline:  # the child opened it
        time.sleep(0.05)
    tracker._child.kill()
    tracker._child.wait(timeout=30)
    # another lrexp run on this host closes the runs whose owner is gone when it opens its own
    other = MlflowTracker(uri=uri, experiment="x")
    other.start("other", params={}, tags={})
    other.finish(status="FINISHED")
    client = MlflowClient(uri)
    assert client.get_run(tracker.run_id).info.status == "RUNNING"  # this process still trains
    tracker.log_step(0, 1e-3, 2.0)
    tracker.finish(status="FINISHED")
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[OWNER_PID_TAG] == str(os.getpid())


def test_a_child_that_cannot_start_costs_one_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    tracker = _sidecar(f"sqlite:///{tmp_path / 'mlflow.db'}", "x")
    tracker.start("never", params={}, tags={})
    tracker.log_step(0, 1e-3, 2.0)
    tracker.finish(status="FINISHED", out_dir=tmp_path)
    [warning] = _warnings(caplog, "Tracking disabled")
    assert "could not start" in warning
    assert _warnings(caplog, "import_run")


def test_the_wait_at_the_end_is_bounded(tmp_path, caplog):
    tracker = _sidecar(f"sqlite:///{tmp_path / 'mlflow.db'}", "x", wait_s=0.01)
    try:
        tracker.start("slow", params={}, tags={})
        tracker.finish(status="FINISHED")  # the child is still importing MLflow
        assert _warnings(caplog, "did not finish within 0.01 s")
    finally:
        tracker._child.kill()
        tracker._child.wait(timeout=30)


@pytest.mark.slow
def test_the_child_ignores_ctrl_c_and_sigterm_and_takes_the_status_from_the_parent(
        shared_sqlite_uri, experiment_name):
    tracker = _sidecar(shared_sqlite_uri, experiment_name)
    tracker.start("signals", params={}, tags={})
    for signum in (signal.SIGINT, signal.SIGTERM):  # as a terminal's Ctrl-C reaches the group
        os.kill(tracker._child.pid, signum)
    tracker.log_step(0, 1e-3, 2.0)
    tracker.finish(status="KILLED")
    assert tracker.usable and tracker.run_id is not None
    run = MlflowClient(shared_sqlite_uri).get_run(tracker.run_id)
    assert run.info.status == "KILLED"
