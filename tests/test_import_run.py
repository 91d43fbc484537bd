"""import_run: a run dir goes to MLflow later, and the run dir is untrusted input.

One real SQLite store serves the session (conftest.shared_sqlite_uri: creating one costs seconds);
each test imports into its own experiment, whose artifacts live under the test's tmp_path. The
conftest's hermetic fixture runs each test in its tmp_path without MLFLOW_* settings.
"""

import json
import math
import os
import uuid

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from lrexp.engine.result import RangeTestResult
from lrexp.tracking.import_run import main

CONFIG_YAML = """\
net:
  _target_: lrexp.app.models.zoo_net
  name: simple_cnn
  num_classes: 10
  in_channels: 1
  input_size: 32
dataset:
  _target_: lrexp.app.data.digits
  image_size: 32
optimizer:
  _target_: torch.optim.SGD
  _partial_: true
  momentum: 0.9
tracking:
  enabled: true
  uri: null
  experiment: lrexp
  flush_every: 0
  timeout_s: 1.0
min_lr: 1.0e-07
max_lr: 10.0
num_iter: 6
seed: 0
device: auto
amp: null
"""
LOSSES = [2.31, 2.2, 1.9, 1.7, 2.6, math.nan]  # a diverged run ends on a non-finite loss
SUMMARY = {
    "net": "simple_cnn", "dataset": "digits", "optimizer": "SGD", "device": "cpu",
    "status": "diverged", "steps": len(LOSSES), "seconds": 1.5, "suggested_lr": 0.001,
    "default_method": "edge", "confidence": "low", "confidence_reason": "a short curve",
    "interval": [1e-4, 1e-2], "suggestions": {"default": 0.001, "minimum": 0.01, "steepest": None},
    "min_loss": 1.7, "lr_at_min_loss": 0.01, "diverged_lr": 1.0, "verification": None,
}
CURVE_HEADER = "step,lr,loss,loss_smooth\r\n"


# -- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture
def store(shared_sqlite_uri):
    return shared_sqlite_uri, MlflowClient(shared_sqlite_uri)


@pytest.fixture
def experiment(store, tmp_path):
    """A fresh experiment in the shared store; its name."""
    name = f"import-{uuid.uuid4().hex[:10]}"
    store[1].create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
    return name


def curve() -> RangeTestResult:
    lrs = np.geomspace(1e-4, 1.0, len(LOSSES))
    smoothed = [2.31, 2.25, 2.12, 1.98, 2.1, math.nan]
    return RangeTestResult(lrs, LOSSES, smoothed, stop_reason="diverged")


def make_run_dir(tmp_path, summary=True, config=CONFIG_YAML):
    """A run dir as lrexp.app.runner leaves it: config, summary, curve, plots, .hydra, log."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config)
    if summary:
        (run_dir / "summary.json").write_text(json.dumps(SUMMARY, indent=1))
    curve().to_csv(run_dir / "curve.csv")
    for name in ("plot.png", "lr_vs_iteration.png"):
        (run_dir / name).write_bytes(b"\x89PNG\r\n\x1a\n not really a plot")
    (run_dir / ".hydra" / "config.yaml").write_text(config)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- num_iter=6\n")
    (run_dir / "lrexp.log").write_text("[INFO] Starting the LR range test\n")
    return run_dir


def import_into(store, experiment, run_dir, *flags):
    return main([str(run_dir), "--uri", store[0], "--experiment", experiment, *flags])


def the_run(store, experiment):
    client = store[1]
    [run] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def history(client, run, key):
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key),
                                    key=lambda m: m.step)]


def artifact_paths(client, run, folder=None):
    return {item.path for item in client.list_artifacts(run.info.run_id, folder)}


def assert_refused(capsys, store, run_dir, code, names_file):
    """Exit 2 with one error paragraph naming the file; nothing reached the store."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    prog = "lrexp.tracking.import_run:"
    [paragraph] = [line for line in err.splitlines() if line.startswith(prog)]
    assert names_file in paragraph, paragraph
    client = store[1]
    everywhere = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(everywhere, f"tags.imported_from = '{run_dir.resolve()}'") == []


# -- a good run dir -------------------------------------------------------------------------------
def test_a_run_dir_arrives_with_every_step_its_params_and_artifacts(tmp_path, store, experiment,
                                                                   capsys):
    run_dir = make_run_dir(tmp_path)
    assert import_into(store, experiment, run_dir) == 0, capsys.readouterr().err
    client, run = store[1], the_run(store, experiment)
    recorded = RangeTestResult.from_csv(run_dir / "curve.csv")
    np.testing.assert_array_equal(history(client, run, "loss"), recorded.losses)
    np.testing.assert_array_equal(history(client, run, "lr"), recorded.lrs)
    assert run.info.status == "FINISHED" and run.info.run_name == "simple_cnn-digits-SGD"
    assert run.data.params["net.name"] == "simple_cnn"
    assert run.data.metrics["suggested_lr"] == SUMMARY["suggested_lr"]
    assert {"config.yaml", "summary.json", "curve.csv", "plot.png", "lr_vs_iteration.png",
            "lrexp.log", ".hydra"} <= artifact_paths(client, run)
    assert artifact_paths(client, run, ".hydra") == {".hydra/config.yaml", ".hydra/overrides.yaml"}


def test_a_run_dir_is_imported_once_unless_asked_again(tmp_path, store, experiment, capsys):
    run_dir = make_run_dir(tmp_path)
    assert import_into(store, experiment, run_dir) == 0, capsys.readouterr().err
    first = the_run(store, experiment).info.run_id
    capsys.readouterr()
    assert import_into(store, experiment, run_dir) == 2
    err = capsys.readouterr().err
    assert f"already in MLflow experiment {experiment!r}" in err and first in err
    assert "--again" in err and "Traceback" not in err
    assert the_run(store, experiment).info.run_id == first  # still the one run
    assert import_into(store, experiment, run_dir, "--again") == 0
    client = store[1]
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 2


def test_a_run_dir_the_runner_recorded_is_not_imported_again(tmp_path, store, experiment,
                                                             capsys):
    run_dir = make_run_dir(tmp_path)
    client = store[1]
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    recorded = client.create_run(experiment_id, tags={"run_dir": str(run_dir.resolve())})
    assert import_into(store, experiment, run_dir) == 2
    assert recorded.info.run_id in capsys.readouterr().err


def test_a_repeated_run_arrives_with_each_repeats_curve_the_median_and_its_band(
        tmp_path, store, experiment, capsys):
    run_dir = make_run_dir(tmp_path)
    lrs = np.geomspace(1e-4, 1.0, 8)
    repeats = [RangeTestResult(lrs[:length], losses, losses) for length, losses in
               [(8, np.linspace(2.3, 1.0, 8)), (6, np.linspace(2.4, 1.4, 6)),
                (8, np.linspace(2.2, 0.8, 8))]]
    RangeTestResult.of_repeats(repeats).to_csv(run_dir / "curve.csv")
    assert import_into(store, experiment, run_dir) == 0, capsys.readouterr().err
    client, run = store[1], the_run(store, experiment)
    for index, repeat in enumerate(repeats):
        np.testing.assert_allclose(history(client, run, f"loss_repeat_{index}"), repeat.losses)
    np.testing.assert_allclose(history(client, run, "lr"), lrs)
    # at each LR the median and quartiles of the repeats there (2 of them at the last 2 LRs)
    reached = [[r.losses[i] for r in repeats if i < len(r)] for i in range(8)]
    np.testing.assert_allclose(history(client, run, "loss"), [np.median(r) for r in reached])
    np.testing.assert_allclose(history(client, run, "loss_q75"),
                               [np.quantile(r, 0.75) for r in reached])
    assert "curve_repeats.csv" in artifact_paths(client, run)


def test_the_training_schedules_bounds_arrive_as_metrics(tmp_path, store, experiment):
    run_dir = make_run_dir(tmp_path)
    bounds = {"onecycle": {"max_lr": 0.05, "div_factor": 40.0},
              "cyclic": {"base_lr": 0.00125, "max_lr": 0.05}}
    (run_dir / "summary.json").write_text(json.dumps({**SUMMARY, **bounds}))
    assert import_into(store, experiment, run_dir) == 0
    metrics = the_run(store, experiment).data.metrics
    assert (metrics["onecycle_max_lr"], metrics["onecycle_div_factor"]) == (0.05, 40.0)
    assert (metrics["cyclic_base_lr"], metrics["cyclic_max_lr"]) == (0.00125, 0.05)


def test_a_run_dir_given_through_a_symlink_is_imported(tmp_path, store, experiment, capsys):
    link = tmp_path / "latest"
    link.symlink_to(make_run_dir(tmp_path))
    assert import_into(store, experiment, link) == 0, capsys.readouterr().err
    assert the_run(store, experiment).info.status == "FINISHED"


@pytest.mark.parametrize("status, expected", [("FAILED", "FAILED"), ("interrupted", "KILLED"),
                                              ("KILLED", "KILLED"), ("completed", "FINISHED")])
def test_the_run_status_follows_the_summary(tmp_path, store, experiment, status, expected):
    run_dir = make_run_dir(tmp_path)
    (run_dir / "summary.json").write_text(json.dumps({**SUMMARY, "status": status}))
    assert import_into(store, experiment, run_dir) == 0
    assert the_run(store, experiment).info.status == expected


# -- the trust boundary ---------------------------------------------------------------------------
def test_symlinked_files_are_not_uploaded(tmp_path, store, experiment, caplog):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text("token: hunter2\n")
    run_dir = make_run_dir(tmp_path)
    (run_dir / "passwd.csv").symlink_to("/etc/passwd")
    hydra = run_dir / ".hydra"
    os.rename(hydra, tmp_path / "real_hydra")
    hydra.symlink_to(outside)
    assert import_into(store, experiment, run_dir) == 0
    client, run = store[1], the_run(store, experiment)
    uploaded = artifact_paths(client, run)
    assert "passwd.csv" not in uploaded and ".hydra" not in uploaded
    assert "curve.csv" in uploaded
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("passwd.csv" in message for message in warned)
    assert any(".hydra" in message for message in warned)


def test_symlinks_inside_hydra_are_not_uploaded(tmp_path, store, experiment, caplog):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text("token: hunter2\n")
    run_dir = make_run_dir(tmp_path)
    (run_dir / ".hydra" / "hydra.yaml").symlink_to(outside / "secret.yaml")
    (run_dir / ".hydra" / "more").symlink_to(outside)
    assert import_into(store, experiment, run_dir) == 0
    client, run = store[1], the_run(store, experiment)
    assert artifact_paths(client, run, ".hydra") == {".hydra/config.yaml", ".hydra/overrides.yaml"}
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "hydra.yaml" in warned and "more" in warned


def test_a_symlinked_summary_is_refused_unread(tmp_path, store, capsys):
    run_dir = make_run_dir(tmp_path, summary=False)
    (tmp_path / "elsewhere.json").write_text(json.dumps(SUMMARY))
    (run_dir / "summary.json").symlink_to(tmp_path / "elsewhere.json")
    code = import_into(store, "never-created", run_dir)
    assert_refused(capsys, store, run_dir, code, "summary.json")


def test_interpolations_in_the_config_are_never_resolved(tmp_path, store, experiment,
                                                         monkeypatch):
    monkeypatch.setenv("SOME_SECRET", "hunter2-do-not-leak")
    config = CONFIG_YAML + "leak: ${oc.env:SOME_SECRET}\nnested:\n  also: ${oc.env:SOME_SECRET}\n"
    run_dir = make_run_dir(tmp_path, config=config)
    assert import_into(store, experiment, run_dir) == 0
    run = the_run(store, experiment)
    assert run.data.params["leak"] == "${oc.env:SOME_SECRET}"
    assert not any("hunter2" in value for value in run.data.params.values())
    assert not any("hunter2" in value for value in run.data.tags.values())


def test_the_run_dirs_tracking_uri_is_ignored(tmp_path, store, experiment, monkeypatch, capsys):
    other = tmp_path / "other.db"
    config = CONFIG_YAML.replace("uri: null", f"uri: sqlite:///{other}")
    run_dir = make_run_dir(tmp_path, config=config)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])  # the store the importer chose
    assert main([str(run_dir), "--experiment", experiment]) == 0, capsys.readouterr().err
    assert not other.exists()
    assert the_run(store, experiment).info.status == "FINISHED"


def test_use_run_dir_uri_sends_to_the_store_the_run_names(tmp_path, store, experiment, capsys):
    # the run dir names the shared store; without the flag the run would go to MLflow's
    # default, sqlite:///mlflow.db in the working dir
    config = CONFIG_YAML.replace("uri: null", f"uri: {store[0]}")
    run_dir = make_run_dir(tmp_path, config=config)
    code = main([str(run_dir), "--use-run-dir-uri", "--experiment", experiment])
    assert code == 0, capsys.readouterr().err
    assert the_run(store, experiment).info.status == "FINISHED"
    assert not (tmp_path / "mlflow.db").exists()


# -- bad run dirs: exit 2, one paragraph, nothing in the store -----------------------------------
REPEATS_HEADER = "repeat,step,lr,loss,loss_smooth\n"


def _repeats_text(repeats, lr_scale=1.0, loss_shift=0.0):
    """Repeats with curve()'s length: equal copies of its curve (so their median is the
    curve), on a grid scaled by ``lr_scale``, losses moved by ``loss_shift``."""
    base = curve()
    return REPEATS_HEADER + "".join(
        f"{index},{step},{float(lr * lr_scale)!r},{float(loss + loss_shift)!r},"
        f"{float(loss + loss_shift)!r}\n"
        for index in repeats for step, (lr, loss) in enumerate(zip(base.lrs, base.losses)))


BAD_FILES = {
    "junk summary": ("summary.json", "{not json at all"),
    "list summary": ("summary.json", "[1, 2, 3]"),
    "null summary": ("summary.json", "null"),
    "string steps": ("summary.json", json.dumps({**SUMMARY, "steps": "6"})),
    "list suggestions": ("summary.json", json.dumps({**SUMMARY, "suggestions": [0.1]})),
    "boolean lr": ("summary.json", json.dumps({**SUMMARY, "suggested_lr": True})),
    "bad bounds": ("summary.json", json.dumps({**SUMMARY, "cyclic": {"base_lr": "low"}})),
    "junk config": ("config.yaml", "net: [unclosed\n  : : {\n"),
    "list config": ("config.yaml", "- net\n- dataset\n"),
    "empty config": ("config.yaml", ""),
    "aliased config": ("config.yaml", "a: &x [1, 2]\nb: [*x, *x]\n"),
    "bad param name": ("config.yaml", CONFIG_YAML + "'../escape': 1\n"),
    "empty curve": ("curve.csv", ""),
    "header-only curve": ("curve.csv", CURVE_HEADER),
    "junk curve": ("curve.csv", "\x00\x01 this is no curve\nat all\n"),
    "bad middle row": ("curve.csv", CURVE_HEADER + "0,0.1,2.3,2.3\r\n1,oops,2.2,2.2\r\n"
                       "2,0.3,2.1,2.1\r\n"),
    "negative lr": ("curve.csv", CURVE_HEADER + "0,-0.1,2.3,2.3\r\n1,0.2,2.2,2.2\r\n"),
    "empty repeats": ("curve_repeats.csv", ""),
    "junk repeats": ("curve_repeats.csv", "step,lr,loss\n0,0.1,2.3\n"),
    "header-only repeats": ("curve_repeats.csv", REPEATS_HEADER),
    "bad repeat row": ("curve_repeats.csv", REPEATS_HEADER + "first,0,0.1,2.3,2.3\n"),
    "unsorted repeat steps": ("curve_repeats.csv", REPEATS_HEADER + "0,1,0.2,2.2,2.2\n"
                              "0,0,0.1,2.3,2.3\n"),
    "a step missing": ("curve_repeats.csv", REPEATS_HEADER + "0,0,0.1,2.3,2.3\n"
                       "0,2,0.3,2.1,2.1\n"),
    "a repeat missing": ("curve_repeats.csv", _repeats_text([0, 2])),
    "repeats of another curve": ("curve_repeats.csv", REPEATS_HEADER + "0,0,0.1,2.3,2.3\n"
                                 "1,0,0.1,2.2,2.2\n"),
    "repeats on another grid": ("curve_repeats.csv", _repeats_text([0, 1], lr_scale=2.0)),
    "repeats of other losses": ("curve_repeats.csv", _repeats_text([0, 1], loss_shift=0.5)),
}


@pytest.mark.parametrize("name, content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_refused_before_anything_reaches_the_store(tmp_path, store, capsys, name,
                                                                 content):
    run_dir = make_run_dir(tmp_path)
    (run_dir / name).write_text(content)
    code = import_into(store, "never-created", run_dir)
    assert_refused(capsys, store, run_dir, code, name)
    assert store[1].get_experiment_by_name("never-created") is None


def test_repeats_that_give_the_curve_are_accepted(tmp_path, store, experiment, capsys):
    # the control for the refusals above: the same builder, true to curve.csv
    run_dir = make_run_dir(tmp_path)
    (run_dir / "curve_repeats.csv").write_text(_repeats_text([0, 1]))
    assert import_into(store, experiment, run_dir) == 0, capsys.readouterr().err
    run = the_run(store, experiment)
    np.testing.assert_array_equal(history(store[1], run, "loss_repeat_1"), curve().losses)


def test_a_binary_curve_is_refused(tmp_path, store, capsys):
    run_dir = make_run_dir(tmp_path)
    (run_dir / "curve.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert_refused(capsys, store, run_dir, import_into(store, "never-created", run_dir),
                   "curve.csv")


@pytest.mark.parametrize("missing", ["config.yaml", "curve.csv"])
def test_a_folder_without_config_or_curve_is_not_a_run_dir(tmp_path, store, capsys, missing):
    run_dir = make_run_dir(tmp_path)
    (run_dir / missing).unlink()
    assert_refused(capsys, store, run_dir, import_into(store, "never-created", run_dir), missing)


def test_a_missing_folder_is_refused(tmp_path, store, capsys):
    code = import_into(store, "never-created", tmp_path / "nowhere")
    err = capsys.readouterr().err
    assert code == 2 and "nowhere" in err and "Traceback" not in err


def test_an_unreachable_store_exits_1(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path)
    # port 9 (discard) on localhost: nothing listens, the connection is refused at once
    assert main([str(run_dir), "--uri", "http://127.0.0.1:9"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_where_the_weights_came_from_arrives_as_a_param_and_a_tag(tmp_path, store, experiment):
    run_dir = make_run_dir(tmp_path)
    weights = "checkpoint: /models/backbone.pt"
    (run_dir / "summary.json").write_text(json.dumps({**SUMMARY, "weights": weights}))
    assert import_into(store, experiment, run_dir) == 0
    run = the_run(store, experiment)
    assert run.data.tags["weights"] == run.data.params["weights"] == weights


# -- partial run dirs: a crash or kill -9 -------------------------------------------------------
def test_a_run_dir_without_summary_imports_as_killed_with_every_step(tmp_path, store,
                                                                     experiment):
    run_dir = make_run_dir(tmp_path, summary=False)
    completed = curve()
    completed.stop_reason = "completed"  # the metadata line does not make a crash a success
    completed.to_csv(run_dir / "curve.csv")
    assert import_into(store, experiment, run_dir) == 0
    client, run = store[1], the_run(store, experiment)
    assert run.info.status == "KILLED" and run.info.run_name == "simple_cnn-digits-SGD"
    assert run.data.tags["optimizer"] == "SGD" and run.data.tags["net"] == "simple_cnn"
    np.testing.assert_array_equal(history(client, run, "loss"), LOSSES)


@pytest.mark.parametrize("cut", ["6,2.0,2.4", "6,2.0\r\n", "6,2.0,2.4x,2.3\r\n"],
                         ids=["no line end", "fewer fields", "unparsable number"])
def test_a_last_line_cut_mid_write_is_dropped_and_the_rest_imported(tmp_path, store, experiment,
                                                                    caplog, cut):
    run_dir = make_run_dir(tmp_path, summary=False)
    with (run_dir / "curve.csv").open("a", newline="") as handle:
        handle.write(cut)
    assert import_into(store, experiment, run_dir) == 0
    client, run = store[1], the_run(store, experiment)
    np.testing.assert_array_equal(history(client, run, "loss"), LOSSES)
    assert run.info.status == "KILLED"
    assert any("cut mid-write" in r.getMessage() for r in caplog.records)


def test_a_curve_whose_only_row_is_cut_is_refused(tmp_path, store, capsys):
    run_dir = make_run_dir(tmp_path, summary=False)
    (run_dir / "curve.csv").write_text(CURVE_HEADER + "0,0.1,2.")
    assert_refused(capsys, store, run_dir, import_into(store, "never-created", run_dir),
                   "curve.csv")


def test_mlflows_own_name_rule_is_reachable_and_refuses_what_it_refuses():
    # MLflow has no public validator: name_refused calls its private one, and this fails
    # loudly when MLflow moves or renames it.
    from lrexp.tracking.mlflow_tracker import name_refused

    assert not name_refused("optimizer.lr", param=True)
    assert not name_refused("suggested_lr_valley", param=False)
    assert name_refused("a/../b", param=True) and name_refused("a/../b", param=False)
