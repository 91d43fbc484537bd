"""Tracking faults against the real app, real stores and a real ``mlflow server``: a disk that
fills up under the run dir and the store, a server that stalls, a tracking process killed, a
database server that is down. Each test checks what the console says against what is on disk
and in the store (the oracle), and the exit code; no MLflow run may stay RUNNING unsaid."""

import contextlib
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from app_runs import (
    compose_config,
    curve_rows,
    lrexp_main,
    run_config,
    when_ready,
)
from mlflow.tracking import MlflowClient
from mlflow_server import MlflowServer, free_port
from sweep_checks import runs_of
from test_faults import _tmpfs

from lrexp.run.summary import RunSummary
from lrexp.tracking.import_run import main as import_run
from lrexp.tracking.mlflow_tracker import MlflowTracker

# A slow ramp that does not diverge: every one of the 400 steps is recorded.
STEADY = ("net=mlp", "num_iter=400", "max_lr=1e-3")


def _fill(folder: Path) -> None:
    """Write zeros into ``folder`` until its filesystem is full."""
    with contextlib.suppress(OSError), (folder / "filler").open("wb") as filler:
        while True:
            filler.write(bytes(1 << 16))
            filler.flush()


def _loss_steps(client, run) -> int:
    return len(client.get_metric_history(run.info.run_id, "loss"))


def _kept_rows(text: str) -> int:
    """The rows the failure message says curve.csv holds."""
    found = re.search(r"curve\.csv with (?:all (\d+)|(\d+) of \d+) steps", text)
    assert found, text
    return int(found.group(1) or found.group(2))


def _summary_whole_or_absent(run_dir: Path) -> None:
    """summary.json is never left empty or cut: valid JSON, or no file at all."""
    path = run_dir / "summary.json"
    if path.exists():
        RunSummary.read(path)
    assert not list(run_dir.glob(".summary.json.*")), "a temporary file was left behind"


@pytest.mark.slow
def test_a_full_disk_under_the_run_dir_and_the_store_says_what_was_kept_and_exits_1(
        tmp_path, caplog):
    with _tmpfs(tmp_path / "small", "size=2m") as small:
        run_dir = small / "run"
        cfg = compose_config("tracking=mlflow", f"tracking.uri=sqlite:///{small}/mlflow.db",
                             *STEADY, out_dir=run_dir)
        with when_ready(lambda: curve_rows(run_dir / "curve.csv") >= 20,
                        lambda: _fill(small)) as problems:
            code = run_config(cfg)
        assert not problems, problems
        assert code == 1, caplog.text
        text = caplog.text
        rows = curve_rows(run_dir / "curve.csv")
        _summary_whole_or_absent(run_dir)
        (small / "filler").unlink()  # room to read the store
        runs = runs_of(MlflowClient(f"sqlite:///{small}/mlflow.db"), "lrexp")
    assert "Traceback" not in text and "No space left on device" in text
    assert "closed FAILED with every recorded step" not in text  # the old claim
    assert _kept_rows(text) == rows < 400
    [run] = runs  # opened before the disk filled; nothing after that could reach it
    assert run.info.status == "RUNNING"
    assert f"MLflow run {run.info.run_id}" in text and "stays RUNNING with 0 of 400 steps" in text
    assert f"{400 - rows} of the 400 steps are kept nowhere" in text


@pytest.mark.slow
def test_a_full_run_dir_with_the_store_elsewhere_names_the_partial_curve_and_the_complete_run(
        tmp_path, caplog, shared_sqlite_uri, experiment_name):
    with _tmpfs(tmp_path / "small", "size=2m") as small:
        run_dir = small / "run"
        cfg = compose_config("tracking=mlflow", f"tracking.uri={shared_sqlite_uri}",
                             f"tracking.experiment={experiment_name}", *STEADY, out_dir=run_dir)
        with when_ready(lambda: curve_rows(run_dir / "curve.csv") >= 20,
                        lambda: _fill(small)) as problems:
            code = run_config(cfg)
        assert not problems, problems
        text, rows = caplog.text, curve_rows(run_dir / "curve.csv")
        _summary_whole_or_absent(run_dir)
        (small / "filler").unlink()
        # the run dir imports (as KILLED, with the rows it holds) instead of being refused
        assert import_run([str(run_dir), "--uri", f"sqlite:///{tmp_path / 'later.db'}"]) == 0
    assert code == 1, text
    assert _kept_rows(text) == rows and "(partial)" in text
    client = MlflowClient(shared_sqlite_uri)
    [run] = runs_of(client, experiment_name)
    assert run.info.status == "FAILED" and _loss_steps(client, run) == 400
    assert f"MLflow run {run.info.run_id}" in text and "holds all 400 steps, closed FAILED" in text
    assert "kept nowhere" not in text


def test_summary_json_is_written_whole_or_not_at_all(tmp_path):
    with _tmpfs(tmp_path / "small", "size=64k") as small:
        earlier = RunSummary(net="earlier").write(small / "summary.json")
        _fill(small)
        with pytest.raises(OSError):
            RunSummary(net="later", confidence_reason="x" * 200_000).write(earlier)
        assert RunSummary.read(earlier).net == "earlier"  # as it was
        assert sorted(p.name for p in small.iterdir()) == ["filler", "summary.json"]


def test_a_postgresql_server_that_is_down_is_given_up_within_timeout_s(tmp_path, caplog):
    uri = f"postgresql://u:s3cret@127.0.0.1:{free_port()}/db"  # nothing listens there
    cfg = compose_config("tracking=mlflow", f"tracking.uri={uri}", "tracking.timeout_s=2",
                         "num_iter=5", "net=mlp", out_dir=tmp_path / "run")
    started = time.monotonic()
    assert run_config(cfg) == 0  # the run dir has everything: import_run sends it later
    assert time.monotonic() - started < 15  # MLflow alone retried for a minute
    [warning] = [r.getMessage() for r in caplog.records if "Tracking disabled" in r.getMessage()]
    assert "did not answer within 2 s" in warning and "s3cret" not in caplog.text
    assert "python -m lrexp.tracking.import_run" in caplog.text


def test_every_store_kind_is_given_up_within_timeout_s_when_it_does_not_answer(tmp_path):
    # SQLite in a folder that cannot be made, HTTP and PostgreSQL on a closed port
    port = free_port()
    for uri in (f"http://127.0.0.1:{port}", f"postgresql://u:p@127.0.0.1:{port}/db",
                f"sqlite:///{tmp_path}/file/mlflow.db"):
        if uri.startswith("sqlite"):
            (tmp_path / "file").write_text("a file where the store's folder should be")
        tracker = MlflowTracker(uri, timeout_s=1)
        started = time.monotonic()
        tracker.start("down", params={}, tags={})
        tracker.finish(status="FINISHED")
        assert time.monotonic() - started < 5, uri
        outcome = tracker.outcome()
        assert not tracker.usable and outcome.run_id is None and outcome.problem, uri


def _stall(server: MlflowServer, seconds: float) -> None:
    """SIGSTOP the server's processes (the watchdog's group) for ``seconds``."""
    os.killpg(server.proc.pid, signal.SIGSTOP)
    threading.Timer(seconds, os.killpg, (server.proc.pid, signal.SIGCONT)).start()


@pytest.mark.slow
def test_a_stalled_server_is_retried_and_gets_every_step_of_the_finished_run(tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    uri = server.wait_ready()
    try:
        # the server stalls once the tracking process opened the run (a stall before that is
        # an unreachable store: given up within timeout_s, test_tracking's unreachable) and
        # answers again 4 s later, within the retries' 6 x 2 s
        log = tmp_path / "run" / "lrexp.log"
        with when_ready(lambda: log.exists() and "MLflow run" in log.read_text(),
                        lambda: _stall(server, 4)) as problems:
            finished = lrexp_main(f"tracking.uri={uri}", "tracking.timeout_s=2",
                                  "tracking.sidecar=true", "net=mlp", "num_iter=200",
                                  "max_lr=1e-3", "hydra.run.dir=run")
        assert not problems, problems
        out = finished.output
        assert finished.returncode == 0, out
        assert "retry 1 in" in (tmp_path / "run" / "lrexp.log").read_text()
        assert "Tracking disabled" not in out
        client = MlflowClient(uri)
        [run] = runs_of(client, "lrexp")
        assert run.info.status == "FINISHED" and _loss_steps(client, run) == 200
    finally:
        os.killpg(server.proc.pid, signal.SIGCONT)
        server.stop()


def _sidecar_pid() -> int | None:
    """The tracking sidecar this process started."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
            parent = int(re.search(r"PPid:\s+(\d+)", status).group(1))
            if b"lrexp.tracking.sidecar" in cmdline and parent == os.getpid():
                return int(entry.name)
    return None


def _kill_sidecar() -> None:
    os.kill(_sidecar_pid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_tracking_process_is_replaced_and_the_run_completed_with_every_step(
        tmp_path, mlflow_server_uri, experiment_name):
    log = tmp_path / "run" / "lrexp.log"
    with when_ready(lambda: log.exists() and "MLflow run" in log.read_text(),
                    _kill_sidecar) as problems:
        finished = lrexp_main(f"tracking.uri={mlflow_server_uri}", "tracking.sidecar=true",
                              f"tracking.experiment={experiment_name}", "net=mlp",
                              "num_iter=200", "max_lr=1e-3", "hydra.run.dir=run")
    assert not problems, problems
    out = finished.output
    assert finished.returncode == 0, out
    client = MlflowClient(mlflow_server_uri)
    [run] = runs_of(client, experiment_name)
    assert run.info.status == "FINISHED" and _loss_steps(client, run) == 200
    assert "The MLflow process of this run stopped" in out  # and how, where it was reaped
    assert (f"The new MLflow process completed the run: MLflow run {run.info.run_id}" in out
            and "holds all 200 steps, closed FINISHED" in out)
