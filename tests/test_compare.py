"""``python -m lrexp.tracking.compare`` on bad input, against real stores: a SQLite file, a port
nothing listens on, a server that never answers. Every refusal is one paragraph (no traceback)
with exit status 2, and changes no store and writes no plot.

Its good path (a sweep over a real ``mlflow server``): test_tracking.
"""

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow_server import free_port

from lrexp.tracking.compare import main as compare_runs


def _curve(client, run_id: str, steps: int = 5) -> None:
    for step in range(steps):
        client.log_metric(run_id, "lr", 10.0 ** (step - 5), step=step)
        client.log_metric(run_id, "loss", 2.0 - 0.1 * step, step=step)


@pytest.fixture(scope="module")
def sweep(shared_sqlite_uri):
    """A sweep's parent with two children, and a run outside the sweep tagged foo=y, in an
    experiment of its own in the session's store: made once, since the tests only read it."""
    uri, experiment_name = shared_sqlite_uri, f"compare-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(uri)
    experiment = client.create_experiment(experiment_name)
    parent = client.create_run(experiment, run_name="sweep", tags={"lrexp.sweep": "1"})
    children = [client.create_run(experiment, run_name=f"job{index}",
                                  tags={"mlflow.parentRunId": parent.info.run_id})
                for index in range(2)]
    stranger = client.create_run(experiment, run_name="stranger", tags={"foo": "y"})
    for run in (*children, stranger):
        _curve(client, run.info.run_id)
        client.set_terminated(run.info.run_id)
    return uri, parent.info.run_id, experiment_name


def _refused(capsys, argv: list[str], *words: str) -> str:
    """compare refuses ``argv``: exit 2, one paragraph on stderr naming ``words``, no plot."""
    assert compare_runs(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and out == ""
    assert err.startswith("python -m lrexp.tracking.compare: error: ")
    assert err.strip().count("\n") == 0, err  # one paragraph
    for word in words:
        assert word in err, err
    assert not Path("compare_runs.png").exists()
    return err


def test_the_children_of_a_sweep_are_compared(sweep, capsys):
    uri, parent, _ = sweep
    assert compare_runs(["--parent", parent, "--uri", uri]) == 0
    table = capsys.readouterr().out
    assert len([line for line in table.splitlines() if line.strip()]) >= 3  # header + 2
    assert Path("compare_runs.png").stat().st_size > 0


def test_an_unknown_parent_run_is_refused_naming_it_and_how_to_list_runs(sweep, capsys):
    uri, _, _ = sweep
    _refused(capsys, ["--parent", "deadbeef", "--uri", uri],
             "no run with id 'deadbeef'", "mlflow runs list", "first 8 of 32")


@pytest.mark.parametrize("parent", ["x' OR tags.foo = 'y", "' OR '1' = '1", "abc;", "g" * 32,
                                    "a" * 33, ""])
def test_a_parent_that_is_not_a_run_id_is_refused_before_any_filter_is_built(
        sweep, capsys, parent):
    uri, _, _ = sweep
    err = _refused(capsys, ["--parent", parent, "--uri", uri], "is not an MLflow run id",
                   "32 hexadecimal digits", repr(parent))
    assert "stranger" not in err


def test_a_parent_id_in_capitals_is_the_same_run(sweep, capsys):
    uri, parent, _ = sweep
    assert compare_runs(["--parent", parent.upper(), "--uri", uri]) == 0


def test_an_unknown_experiment_is_refused(sweep, capsys):
    uri, _, _ = sweep
    _refused(capsys, ["--experiment", "no-such-experiment", "--uri", uri],
             "no experiment named 'no-such-experiment'", "mlflow experiments search")


def test_a_closed_port_is_refused_within_the_timeout(capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    _refused(capsys, ["--experiment", "lrexp", "--uri", uri, "--timeout-s", "1"],
             uri, "did not answer within 1 s", "mlflow server")
    assert time.monotonic() - started < 10


def test_a_server_that_never_answers_is_given_up_after_the_timeout(capsys):
    with socket.socket() as silent:  # the kernel accepts connections; nobody ever replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        _refused(capsys, ["--experiment", "lrexp", "--uri", uri, "--timeout-s", "1"],
                 "did not answer within 1 s", "--timeout-s")
        assert 0.9 < time.monotonic() - started < 10


def test_a_missing_sqlite_store_is_refused_and_not_created(tmp_path, capsys):
    store = tmp_path / "no" / "such" / "dir" / "x.db"
    _refused(capsys, ["--experiment", "lrexp", "--uri", f"sqlite:///{store}"],
             f"no SQLite store at {store}", "only reads")
    assert not (tmp_path / "no").exists()


def test_the_default_store_when_absent_is_refused_and_not_created(tmp_path, capsys):
    _refused(capsys, ["--experiment", "lrexp"], f"no SQLite store at {tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("content,words", [(b"name,lr\n1,2\n" * 10, "not an SQLite database"),
                                           (b"", "is empty")], ids=["csv", "empty"])
def test_a_file_that_is_not_a_sqlite_store_is_refused_and_left_as_it_was(
        tmp_path, capsys, content, words):
    store = tmp_path / "runs.db"
    store.write_bytes(content)
    _refused(capsys, ["--experiment", "lrexp", "--uri", f"sqlite:///{store}"], str(store), words)
    assert store.read_bytes() == content


def test_a_folder_as_sqlite_store_is_refused(tmp_path, capsys):
    (tmp_path / "runs.db").mkdir()
    _refused(capsys, ["--experiment", "lrexp", "--uri", f"sqlite:///{tmp_path / 'runs.db'}"],
             "is not a file")


@pytest.mark.parametrize("uri,words", [
    ("http//127.0.0.1:5000", "is not a tracking URI"),
    ("foo://bar", "is not a tracking URI"),
    ("not a uri", "is not a tracking URI"),
    ("http://", "names no host"),
    ("sqlite://x.db", "sqlite:////absolute/path.db"),
])
def test_a_malformed_uri_is_refused_in_one_paragraph(tmp_path, capsys, uri, words):
    _refused(capsys, ["--experiment", "lrexp", "--uri", uri], repr(uri), words)
    assert sorted(tmp_path.iterdir()) == []  # no store, folder or file made


def test_a_password_in_a_refused_uri_is_not_printed(capsys):
    uri = f"http://user:s3cret@127.0.0.1:{free_port()}"
    err = _refused(capsys, ["--experiment", "lrexp", "--uri", uri, "--timeout-s", "1"],
                   "did not answer")
    assert "s3cret" not in err


def test_out_naming_an_existing_folder_is_refused_before_reading_the_store(tmp_path, capsys):
    (tmp_path / "plots").mkdir()
    # the store is missing too: --out is the first thing checked
    _refused(capsys, ["--experiment", "lrexp", "--out", "plots"], "'plots' is an existing folder",
             "plots/compare_runs.png")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plots"]
    assert list((tmp_path / "plots").iterdir()) == []


@pytest.mark.parametrize("out", ["x.nosuchformat", "x"])
def test_out_in_an_unknown_format_is_refused_before_any_table(sweep, capsys, out):
    uri, parent, _ = sweep
    _refused(capsys, ["--parent", parent, "--uri", uri, "--out", out], f"--out '{out}'",
             "png", "pdf", "svg")
    assert not Path(out).exists()


def test_the_cli_exits_2_without_a_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lrexp.tracking.compare", "--parent", "x' OR tags.foo = 'y",
         "--uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "is not an MLflow run id" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_a_summary_read_back_from_its_metrics_gives_the_same_table_row():
    from lrexp.run.summary import RunSummary

    names = {"net": "mlp", "dataset": "digits", "optimizer": "SGD"}
    summary = RunSummary.named(
        names, status="diverged", suggested_lr=0.01, confidence="low", interval=(1e-3, 1e-1),
        suggestions={"default": 0.01, "valley": 0.02, "steepest": None}, min_loss=1.0,
        lr_at_min_loss=0.1, diverged_lr=0.5, repeats=3, suggested_lr_iqr_decades=0.3,
        suggested_lr_range_decades=0.9)
    read = RunSummary.from_metrics(summary.metrics(), names, status="diverged")
    assert read.row("x") == summary.row("x")


@pytest.mark.parametrize("tags, pretrained, momentum", [
    ({"regime": "from scratch", "default_method": "default (descent)", "momentum": "true"},
     False, True),
    ({"regime": "from scratch", "default_method": "default (descent, no momentum)",
      "momentum": "false"}, False, False),
    ({"regime": "from scratch", "default_method": "verified", "momentum": "false"},
     False, False),
    ({"regime": "fine-tuning", "default_method": "default (finetune)", "momentum": "false"},
     True, False),
    ({}, False, True),  # a run recorded before the tags: the rule it was read with
])
def test_the_overlay_reads_each_curve_as_its_run_assumed(shared_sqlite_uri, tags, pretrained,
                                                        momentum):
    """The overlay's curve from a real store suggests what the run did: its regime and its
    optimizer's momentum come from the run's tags."""
    import numpy as np

    from lrexp.engine.suggest import suggest
    from lrexp.tracking.compare import curve_of

    client = MlflowClient(shared_sqlite_uri)
    experiment = client.create_experiment(f"overlay-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment, tags=tags)
    lrs = np.geomspace(1e-6, 1, 80)
    losses = 2.0 - np.tanh(np.log10(lrs) + 3) + np.exp(4 * np.log10(lrs)).clip(max=20)
    for step, (lr, loss) in enumerate(zip(lrs, losses)):
        client.log_metric(run.info.run_id, "lr", float(lr), step=step)
        client.log_metric(run.info.run_id, "loss", float(loss), step=step)
    curve = curve_of(client, client.get_run(run.info.run_id))
    assert (curve.pretrained, curve.momentum) == (pretrained, momentum)
    expected = suggest(lrs, losses, pretrained=pretrained, momentum=momentum)
    assert curve.suggest().lr == pytest.approx(expected.lr)
    assert curve.suggest().method == expected.method
