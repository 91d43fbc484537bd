"""MLflow tracking against real stores: SQLite files and a real ``mlflow server``."""

import time

import pytest
from app_runs import compose_config, lrexp_main, run_config, training_started, when_ready
from mlflow.tracking import MlflowClient
from mlflow_server import MlflowServer, free_port
from sweep_checks import check_sweep, runs_of

from lrexp.engine.result import RangeTestResult
from lrexp.tracking.compare import main as compare_runs
from lrexp.tracking.import_run import main as import_run
from lrexp.tracking.mlflow_tracker import MAX_PARAM_VALUE_LENGTH, TRUNCATION_MARKER, MlflowTracker
from lrexp.tracking.store import with_retries

MLFLOW_SQLITE_BUSY_TIMEOUT_S = 20  # mlflow/store/db/utils.py sets it on every session


# The default run into MLflow's default store (sqlite:///mlflow.db in the working dir):
# test_cli.test_default_run_writes_under_outputs_and_tracks_into_the_default_store


def test_tracking_none_writes_no_store(tmp_path):
    cfg = compose_config("tracking=none", "num_iter=2", "net=mlp", out_dir=tmp_path / "run")
    assert run_config(cfg) == 0
    assert (tmp_path / "run" / "curve.csv").exists()
    assert not list(tmp_path.rglob("mlflow.db")) and not (tmp_path / "mlruns").exists()


def test_sweep_over_http_has_one_parent_and_a_child_per_job_and_compares(
        tmp_path, mlflow_server_uri, experiment_name, capsys):
    finished = lrexp_main("-m", "net=mlp,simple_cnn", "num_iter=10",
                          f"tracking.uri={mlflow_server_uri}",
                          f"tracking.experiment={experiment_name}")
    assert finished.returncode == 0, finished.output
    assert "Sweep summary" in finished.output
    client = MlflowClient(mlflow_server_uri)
    parent, _ = check_sweep(client, tmp_path / "outputs" / "multirun", ["mlp", "simple_cnn"],
                            experiment=experiment_name)

    code = compare_runs(["--parent", parent.info.run_id, "--uri", mlflow_server_uri,
                         "--out", str(tmp_path / "cmp.png")])
    table = capsys.readouterr().out
    assert code == 0
    assert "mlp" in table and "simple_cnn" in table
    assert "net=mlp" in table and "net=simple_cnn" in table  # each child's swept setting
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


def test_unreachable_server_costs_seconds_and_keeps_everything_local(tmp_path, caplog):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = compose_config("tracking=mlflow", f"tracking.uri={uri}", "tracking.timeout_s=2",
                         "num_iter=10", "net=mlp", out_dir=tmp_path / "run")
    started = time.monotonic()
    assert run_config(cfg) == 0
    assert time.monotonic() - started < 30
    assert "did not answer" in caplog.text
    assert "python -m lrexp.tracking.import_run" in caplog.text
    assert (tmp_path / "run" / "curve.csv").exists()


@pytest.mark.slow
def test_server_stopped_mid_run_loses_nothing_and_import_run_sends_it_later(
        tmp_path, mlflow_server_uri, experiment_name):
    server = MlflowServer(tmp_path / "server").start()  # one of its own, to stop
    uri = server.wait_ready()
    try:
        # the runner opens the MLflow run before it starts the range test
        with when_ready(lambda: training_started(tmp_path / "run"), server.stop) as problems:
            finished = lrexp_main(f"tracking.uri={uri}", "tracking.timeout_s=2",
                                  "num_iter=60", "net=mlp", "hydra.run.dir=run")
    finally:
        server.stop()
    assert not problems, problems
    # the server went away while the job trained
    assert finished.returncode == 0, finished.output
    assert "python -m lrexp.tracking.import_run" in finished.output
    curve = RangeTestResult.from_csv(tmp_path / "run" / "curve.csv")
    assert len(curve) > 10

    # later, to a server that answers (the session's)
    assert import_run(["run", "--uri", mlflow_server_uri, "--experiment", experiment_name]) == 0
    client = MlflowClient(mlflow_server_uri)
    [run] = runs_of(client, experiment_name)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(len(curve)))


def test_long_params_are_truncated_with_a_marker_not_refused(shared_sqlite_uri,
                                                            experiment_name):
    uri = shared_sqlite_uri
    tracker = MlflowTracker(uri, experiment=experiment_name)
    tracker.start("long", params={"note": "x" * 10_000, "ok": 1}, tags={"net": "n"})
    tracker.log_step(0, 1e-3, 2.0)
    tracker.finish(status="FINISHED")
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.data.params["note"].endswith(TRUNCATION_MARKER)
    assert len(run.data.params["note"]) == MAX_PARAM_VALUE_LENGTH
    assert run.info.status == "FINISHED"


def test_more_steps_than_one_batch_holds_arrive_complete(shared_sqlite_uri, experiment_name):
    uri = shared_sqlite_uri
    # two live flushes of 1400 metrics (over MLflow's 1000 a batch) and the final one
    steps = 1500
    tracker = MlflowTracker(uri, experiment=experiment_name, flush_every=700)
    tracker.start("many", params={}, tags={})
    for step in range(steps):
        tracker.log_step(step, 1e-6 * 1.01**step, 3.0 - step / 1000)
    tracker.finish(status="FINISHED")
    history = MlflowClient(uri).get_metric_history(tracker.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(steps))


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


def test_a_run_started_and_never_finished_is_closed_killed_with_its_steps(
        shared_sqlite_uri, experiment_name):
    # an error or Ctrl-C between start and finish (the runner's finally calls close)
    tracker = MlflowTracker(uri=shared_sqlite_uri, experiment=experiment_name)
    tracker.start("unfinished", params={"a": 1}, tags={"net": "n"})
    for step in range(7):
        tracker.log_step(step, 1e-3 * (step + 1), 2.0 - step / 10)
    tracker.close()
    client = MlflowClient(shared_sqlite_uri)
    [run] = runs_of(client, experiment_name)
    assert run.info.status == "KILLED" and run.data.tags["status"] == "KILLED"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == \
        pytest.approx([2.0 - step / 10 for step in range(7)])


def test_a_run_whose_artifacts_cannot_be_stored_is_closed_failed_and_can_be_imported_again(
        tmp_path, default_store, monkeypatch, caplog):
    # a new experiment's artifacts go to ./mlruns: a plain file there refuses every upload
    # while the store itself still answers
    from lrexp.tracking.import_run import _StagedTracker
    from lrexp.tracking.mlflow_tracker import INCOMPLETE_TAG

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"\x89PNG")
    tracker = MlflowTracker(uri)
    tracker.start("run", params={"a": 1}, tags={"run_dir": str(tmp_path / "run")})
    for step in range(3):
        tracker.log_step(step, 10.0 ** (step - 5), 2.0 - step / 10)
    with caplog.at_level("WARNING"):
        tracker.finish(status="FINISHED", files={"plot": plot})
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and INCOMPLETE_TAG in run.data.tags  # not RUNNING
    assert len(MlflowClient(uri).get_metric_history(tracker.run_id, "loss")) == 3
    assert "closed FAILED" in caplog.text
    # the import the warning suggests is not refused as a duplicate of this incomplete run
    importer = _StagedTracker(tmp_path, uri=uri, experiment="lrexp", timeout_s=5.0)
    assert importer.runs_of(tmp_path / "run") == []
