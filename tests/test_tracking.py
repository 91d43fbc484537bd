"""MLflow tracking against real stores: a SQLite file and a real ``mlflow server``."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient
from mlflow_server import free_port, mlflow_server
from sweep_checks import (
    assert_child_matches_its_run_dir,
    check_sweep,
    lrexp_cli,
    runs_of,
    wait_until_training,
)

from lrexp.engine.result import RangeTestResult
from lrexp.tracking.mlflow_tracker import MAX_PARAM_VALUE_LENGTH, TRUNCATION_MARKER, MlflowTracker
from lrexp.tracking.store import with_retries

MLFLOW_SQLITE_BUSY_TIMEOUT_S = 20  # mlflow/store/db/utils.py sets it on every session


def test_single_run_goes_to_the_default_sqlite_store(tmp_path):
    proc = lrexp_cli("num_iter=25", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "mlflow.db").exists()  # MLflow's default store, in the working dir
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = runs_of(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "simple_cnn-digits-SGD"
    assert_child_matches_its_run_dir(client, run, tmp_path / "run")


def test_tracking_none_writes_no_store(tmp_path):
    proc = lrexp_cli("num_iter=10", "tracking=none", cwd=tmp_path)
    assert proc.returncode == 0
    assert not (tmp_path / "mlflow.db").exists()


def test_sweep_on_sqlite_has_one_parent_and_a_child_per_job(tmp_path):
    proc = lrexp_cli("-m", "net=mlp,simple_cnn", "num_iter=15", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent, _ = check_sweep(client, tmp_path / "outputs" / "multirun", ["mlp", "simple_cnn"])
    assert "Sweep summary" in proc.stdout + proc.stderr

    compare = subprocess.run(
        [sys.executable, "-m", "lrexp.tracking.compare", "--parent", parent.info.run_id,
         "--uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(tmp_path / "cmp.png")],
        capture_output=True, text=True, timeout=120)
    assert compare.returncode == 0, compare.stderr
    assert "mlp" in compare.stdout and "simple_cnn" in compare.stdout
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_sweep_against_a_real_server_over_http(tmp_path):
    with mlflow_server(tmp_path) as uri:
        proc = lrexp_cli("-m", "net=mlp,simple_cnn", "num_iter=15", f"tracking.uri={uri}",
                         cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        check_sweep(MlflowClient(uri), tmp_path / "outputs" / "multirun", ["mlp", "simple_cnn"])


@pytest.mark.slow
def test_unreachable_server_costs_seconds_and_keeps_everything_local(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.time()
    proc = lrexp_cli("num_iter=10", f"tracking.uri={uri}", "tracking.timeout_s=2",
                     "hydra.run.dir=run", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert time.time() - started < 60
    assert "did not answer" in output and "python -m lrexp.tracking.import_run" in output
    assert (tmp_path / "run" / "curve.csv").exists()


@pytest.mark.slow
def test_server_stopped_mid_run_loses_nothing_and_import_run_sends_it_later(tmp_path):
    port = free_port()
    env = {**os.environ, "MPLBACKEND": "Agg"}
    with mlflow_server(tmp_path, port=port) as uri:
        job = subprocess.Popen(
            [sys.executable, "-m", "lrexp", "progress=false", f"tracking.uri={uri}",
             "tracking.timeout_s=2", "num_iter=60", "net=mlp", "hydra.run.dir=run"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until_training(tmp_path / "run")
    # the server is gone now, while the job trains
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 0, output
    assert "python -m lrexp.tracking.import_run" in output
    curve = RangeTestResult.from_csv(tmp_path / "run" / "curve.csv")
    assert len(curve) > 10

    with mlflow_server(tmp_path, port=port) as uri:  # the same store, back again
        imported = subprocess.run([sys.executable, "-m", "lrexp.tracking.import_run", "run",
                                   "--uri", uri], cwd=tmp_path, capture_output=True, text=True,
                                  timeout=120)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        client = MlflowClient(uri)
        finished = [r for r in runs_of(client) if r.info.status == "FINISHED"]
        assert len(finished) == 1
        history = client.get_metric_history(finished[0].info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(len(curve)))


def test_ctrl_c_marks_the_run_killed_with_the_partial_curve(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    job = subprocess.Popen([sys.executable, "-m", "lrexp", "progress=false", "num_iter=100000",
                            "max_lr=1e-3", "hydra.run.dir=run"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until_training(tmp_path / "run")
    time.sleep(2)
    job.send_signal(signal.SIGINT)
    output, _ = job.communicate(timeout=120)
    assert job.returncode == 130, output
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = runs_of(client)
    curve = RangeTestResult.from_csv(tmp_path / "run" / "curve.csv")
    assert run.info.status == "KILLED" and curve.stop_reason == "interrupted"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == len(curve) > 0


def test_long_params_are_truncated_with_a_marker_not_refused(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    tracker = MlflowTracker(uri)
    tracker.start("long", params={"note": "x" * 10_000, "ok": 1}, tags={"net": "n"})
    tracker.log_step(0, 1e-3, 2.0)
    tracker.finish(status="FINISHED")
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.data.params["note"].endswith(TRUNCATION_MARKER)
    assert len(run.data.params["note"]) == MAX_PARAM_VALUE_LENGTH
    assert run.info.status == "FINISHED"


def test_more_steps_than_one_batch_holds_arrive_complete(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    tracker = MlflowTracker(uri, flush_every=700)  # live flushes plus the final one
    tracker.start("many", params={}, tags={})
    for step in range(2500):
        tracker.log_step(step, 1e-6 * 1.01**step, 3.0 - step / 1000)
    tracker.finish(status="FINISHED")
    history = MlflowClient(uri).get_metric_history(tracker.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(2500))


@pytest.mark.slow
def test_a_write_locked_sqlite_store_is_waited_out_not_lost(tmp_path, caplog):
    # Another connection holds SQLite's write lock longer than MLflow's own wait for it
    # (PRAGMA busy_timeout = 20 s): the first log_batch fails "database is locked", and the
    # retry lands once the lock is gone.
    import sqlite3
    import threading

    from mlflow.entities import Metric

    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    run_id = client.create_run(client.create_experiment("locked")).info.run_id
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(MLFLOW_SQLITE_BUSY_TIMEOUT_S + 1.5, lambda: holder.execute("COMMIT"))
    release.start()
    metric = Metric("loss", 1.5, timestamp=0, step=0)
    with caplog.at_level("INFO", logger="lrexp.tracking.store"):
        with_retries(lambda: client.log_batch(run_id, metrics=[metric]), "log_batch")
    release.join()
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.5]
    assert "retry 1 of 5" in caplog.text and "retry 2 of 5" not in caplog.text


def test_retries_back_off_exponentially_and_give_up_on_a_lasting_error(monkeypatch):
    waits = []
    monkeypatch.setattr("lrexp.tracking.store.time.sleep", waits.append)
    failures = iter(["database is locked"] * 3)

    def flaky():
        message = next(failures, None)
        if message:
            raise RuntimeError(message)
        return "stored"

    assert with_retries(flaky, "call") == "stored"
    assert waits == [0.2, 0.4, 0.8]
    with pytest.raises(RuntimeError, match="locked"):
        with_retries(lambda: (_ for _ in ()).throw(RuntimeError("database is locked")), "call")
    assert waits[3:] == [0.2, 0.4, 0.8, 1.6, 3.2]  # five retries, then the error propagates


def test_a_mistake_is_not_retried():
    calls = []

    def wrong():
        calls.append(1)
        raise ValueError("no such run")

    with pytest.raises(ValueError):
        with_retries(wrong, "call")
    assert len(calls) == 1
