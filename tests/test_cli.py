"""The command line: exit codes, messages and the run dir of ``python -m lrexp``.

Most tests run the real command line in this process (``app_runs.lrexp_main``); what only a
process shows (its exit status, its imports, a signal to it) is checked on a real
``python -m lrexp``. What a stop signal keeps, in this process: test_faults.
"""

import signal
import subprocess
import sys

import pytest
import torch
from app_runs import curve_rows, lrexp_main, poll_until
from mlflow.tracking import MlflowClient
from sweep_checks import (
    assert_child_matches_its_run_dir,
    lrexp_cli,
    lrexp_process,
    runs_of,
)

from lrexp.engine.result import RangeTestResult


def lrexp(*args):
    return lrexp_main("tracking=none", *args)


def assert_user_error(finished, *needles):
    assert finished.returncode == 2, finished.output
    assert "Traceback" not in finished.output, finished.output
    for needle in needles:
        assert needle in finished.output, finished.output


def test_an_optimizer_without_momentum_is_said_written_and_tracked(tmp_path, default_store):
    """optimizer=rmsprop keeps no momentum: the console's method, curve.csv's settings line
    and the tracked run agree; so does the header curve.csv starts with, which is all a run
    killed outright leaves of its settings."""
    import json

    import torch

    from lrexp.app.runner import _curve_header

    settings = {"val_loader": None, "schedule": "exp", "beta": 0.98, "diverge_th": 4.0,
                "min_lr": 1e-7, "max_lr": 10.0, "num_iter": 40, "steps_per_lr": 1,
                "pretrained": False}
    optimizer = torch.optim.RMSprop([torch.nn.Parameter(torch.zeros(1))])
    assert _curve_header(settings, {}, optimizer).momentum is False

    finished = lrexp_main("optimizer=rmsprop", "num_iter=40")
    assert finished.returncode == 0, finished.output
    [run_dir] = [p.parent for p in (tmp_path / "outputs").glob("*/*/curve.csv")]
    head = (run_dir / "curve.csv").read_text().split("\n", 1)[0]
    assert json.loads(head[len("# lrexp "):])["momentum"] is False
    curve = RangeTestResult.from_csv(run_dir / "curve.csv", strict=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["suggested_lr"] == pytest.approx(curve.suggest().lr)
    assert summary["default_method"] == "default (descent, no momentum)"
    assert summary["momentum"] is False
    assert "suggested LR (default (descent, no momentum))" in finished.output
    assert "assumed: from scratch" in finished.output
    assert "; the optimizer keeps no momentum" in finished.output
    [run] = runs_of(MlflowClient(f"sqlite:///{default_store}"))
    assert run.data.tags["default_method"] == summary["default_method"]
    assert run.data.tags["momentum"] == "false"


def test_default_run_writes_under_outputs_and_tracks_into_the_default_store(tmp_path,
                                                                            default_store):
    finished = lrexp_main("num_iter=10")  # the README's `python -m lrexp`, a shorter ramp
    assert finished.returncode == 0, finished.output
    [run_dir] = [p.parent for p in (tmp_path / "outputs").glob("*/*/curve.csv")]
    assert (run_dir / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert len(RangeTestResult.from_csv(run_dir / "curve.csv")) <= 10
    assert (run_dir / "config.yaml").exists() and (run_dir / ".hydra").is_dir()
    assert "Starting the LR range test" in (run_dir / "lrexp.log").read_text()
    assert "suggested LR" in finished.output and str(run_dir) in finished.output
    client = MlflowClient(f"sqlite:///{default_store}")
    [run] = runs_of(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "simple_cnn-digits-SGD"
    assert_child_matches_its_run_dir(client, run, run_dir)


def test_unknown_net_lists_the_available_nets():
    assert_user_error(lrexp("net=vgg17"), "net/vgg17", "vgg16", "resnet18")


def test_unknown_zoo_name_lists_the_registered_nets():
    assert_user_error(lrexp("net.name=vgg17"), "vgg17", "Registered nets", "densenet121")


def test_non_numeric_max_lr_is_refused():
    assert_user_error(lrexp("max_lr=abc"), "max_lr", "abc")


@pytest.mark.parametrize("override, kind", [
    ("max_lr=abc", "a number"), ("num_iter=1.5", "a whole number"),
    ("num_iter=1e2", "a whole number"), ("num_iter=100.0", "a whole number"),
    ("max_lr=null", "a number"), ("batch_size=true", "a whole number"),
    ("min_lr=1e-6,tiny", "a number")])
def test_a_word_for_a_number_is_one_paragraph_with_the_fix(override, kind, capsys):
    from lrexp.app.main import _refuse_words_for_numbers

    with pytest.raises(SystemExit) as exit_:
        _refuse_words_for_numbers([override, "tracking=none"])
    assert exit_.value.code == 2
    message = capsys.readouterr().err
    assert f"Invalid setting {override}:" in message and f"takes {kind}" in message
    assert message.count("\n") == 1 and "nothing was run" in message


@pytest.mark.parametrize("override, closest", [
    ("max_lrr=1", "max_lr"), ("nett=mlp", "net"), ("optimiser.lr=1", "optimizer"),
    ("zzz=1", None)])
def test_an_unknown_setting_names_the_closest_one(override, closest, capsys):
    from lrexp.app.main import _refuse_unknown_settings

    with pytest.raises(SystemExit) as exit_:
        _refuse_unknown_settings([override])
    assert exit_.value.code == 2
    message = capsys.readouterr().err
    assert f"Unknown setting {override}:" in message and message.count("\n") == 1
    assert (f"did you mean {closest}?" in message) if closest else "did you mean" not in message


def test_a_group_of_the_users_own_config_dir_is_a_setting(tmp_path):
    from lrexp.app.main import _refuse_unknown_settings

    (tmp_path / "mygroup").mkdir()
    (tmp_path / "mygroup" / "a.yaml").write_text("x: 1\n")
    _refuse_unknown_settings(["--config-dir", str(tmp_path), "mygroup=a"])  # no SystemExit
    _refuse_unknown_settings([f"--config-dir={tmp_path}", "mygroup=a"])
    _refuse_unknown_settings(["--config-name", "mine", "anything=1"])  # the user's own schema
    _refuse_unknown_settings([f"hydra.searchpath=[file://{tmp_path}]", "mygroup=a"])
    _refuse_unknown_settings(["--config-dir", "pkg://somewhere", "mygroup=a"])
    with pytest.raises(SystemExit):
        _refuse_unknown_settings(["mygroup=a"])  # without the folder it is unknown


@pytest.mark.parametrize("overrides, where, closest", [
    (["net.num_clases=3"], "net", "num_classes"),
    (["optimizer.momentun=0.5"], "optimizer", "momentum"),
    (["net=vgg16", "net.zzz=1"], "net (with net=vgg16)", None),
    # a sweep: the key must be in each net it names (the default net has width, mlp has not)
    (["-m", "net=simple_cnn,mlp", "net.width=8"], "net (with net=mlp)", None)])
def test_an_unknown_key_inside_a_group_names_the_closest_key(overrides, where, closest,
                                                              capsys):
    from lrexp.app.main import _refuse_unknown_settings

    with pytest.raises(SystemExit) as exit_:
        _refuse_unknown_settings(overrides)
    assert exit_.value.code == 2
    message = capsys.readouterr().err
    assert f": {where} has no key" in message and message.count("\n") == 1
    assert (f"did you mean {closest}?" in message) if closest else "did you mean" not in message
    assert f"+{overrides[-1]}" in message  # how to add it, where the user meant to


@pytest.mark.parametrize("override", ["experiment.foo=1", "sweep.foo=1"])
def test_a_key_under_a_preset_group_is_left_to_hydra(override):
    from lrexp.app.main import _refuse_unknown_settings

    _refuse_unknown_settings([override])  # not in the composed config: no half-empty paragraph


def test_a_key_of_the_users_own_net_is_checked_in_their_config_dir(tmp_path):
    from lrexp.app.main import _refuse_unknown_settings

    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "mine.yaml").write_text(
        "_target_: torch.nn.Linear\nin_features: 64\nout_features: 10\n")
    _refuse_unknown_settings(["--config-dir", str(tmp_path), "net=mine", "net.in_features=8"])
    with pytest.raises(SystemExit, match="2"):
        _refuse_unknown_settings(["--config-dir", str(tmp_path), "net=mine",
                                  "net.in_feature=8"])


@pytest.mark.parametrize("override", [
    "max_lr=1", "net=mlp", "net.width=8", "+net.extra=1", "++seed=3", "~checkpoint",
    "hydra/launcher=joblib", "hydra.run.dir=x", "tracking.timeout_s=2", "experiment=sine_mlp"])
def test_every_known_setting_group_and_hydra_key_passes(override):
    from lrexp.app.main import _refuse_unknown_settings

    _refuse_unknown_settings([override])  # no SystemExit


@pytest.mark.parametrize("override", [
    "max_lr=1e-2", "max_lr=.5", "max_lr='2'", "min_lr=-1", "num_iter=50", "num_iter='50'",
    "max_lr=1,10", "num_iter=range(10,30,10)", "max_lr=interval(1,10)",
    "seed=${oc.env:SEED,0}", "net=mlp", "+optimizer.foo=bar"])
def test_numbers_sweeps_and_interpolations_pass_the_check(override):
    from lrexp.app.main import _refuse_words_for_numbers

    _refuse_words_for_numbers([override])  # no SystemExit


@pytest.mark.parametrize("value", ["1" + "0" * 400, "-" + "9" * 400, "2" + "0" * 308,
                                   "1" * 5000], ids=["1e400", "-1e400", "2e308", "5000 digits"])
def test_a_number_past_a_floats_range_is_one_paragraph(value):
    # OmegaConf's float() overflows inside Hydra's compose, which prints a traceback
    digits = len(value.lstrip("-"))
    assert_user_error(lrexp(f"max_lr={value}"), "max_lr=", f"{digits} digits", "1.8e+308")


def test_an_lr_past_what_optimizers_take_is_refused_before_the_first_step():
    # torch refuses an SGD step scaled by 1e300 (float32 overflow) mid-step
    assert_user_error(lrexp("max_lr=1e300"), "max_lr=1e+300", "<= 1e+30")


def test_verify_takes_auto_true_or_false():
    assert_user_error(lrexp("verify=sometimes"), "verify=sometimes",
                      "auto (verify when fine-tuning)")


def test_a_key_the_tracker_does_not_take_is_refused():
    # it reached MlflowTracker's __init__ as a TypeError and turned tracking off
    assert_user_error(lrexp("+tracking.foo=1"), "tracking.foo=1", "timeout_s")


def test_an_experiment_name_longer_than_mlflow_takes_is_refused():
    from mlflow.utils.validation import MAX_EXPERIMENT_NAME_LENGTH

    from lrexp.app.schema import MAX_EXPERIMENT_NAME_LENGTH as lrexps_limit

    assert lrexps_limit == MAX_EXPERIMENT_NAME_LENGTH  # fails loudly when MLflow changes it
    name = "e" * (MAX_EXPERIMENT_NAME_LENGTH + 1)
    assert_user_error(lrexp(f"tracking.experiment={name}"), "501 characters", "at most 500")
    assert lrexp("num_iter=3", f"tracking.experiment={name[:-1]}").returncode == 0


def test_joblib_n_jobs_0_is_refused_before_the_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    finished = lrexp("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", "num_iter=3")
    assert_user_error(finished, "hydra.launcher.n_jobs=0", "-1 for one per core")
    assert not list((tmp_path / "sweep").glob("*/curve.csv"))


@pytest.mark.parametrize("option,extra", [("hydra/launcher=lrexp_slurm", "submitit"),
                                          ("hydra/launcher=joblib", "joblib")])
def test_a_launcher_without_its_extra_names_the_extra(tmp_path, option, extra):
    # the plugin module made unimportable, as in a checkout installed with only .[dev]
    plugin = {"submitit": "hydra_plugins.hydra_submitit_launcher",
              "joblib": "hydra_plugins.hydra_joblib_launcher"}[extra]
    code = (f"import sys; sys.modules[{plugin!r}] = None; "
            f"sys.argv = ['lrexp', '-m', {option!r}, 'tracking=none']; "
            "from lrexp.app.main import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"pip install 'lrexp[{extra}]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_inverted_lr_range_is_refused_before_any_work(tmp_path):
    finished = lrexp("min_lr=1", "max_lr=0.1")
    assert_user_error(finished, "min_lr=1.0 and max_lr=0.1", "0 < min_lr < max_lr")
    assert not list(tmp_path.glob("outputs/*/*/curve.csv"))


def test_missing_dataset_files_name_the_folder_and_the_fix(tmp_path):
    finished = lrexp("dataset=cifar10", f"dataset.root={tmp_path / 'nowhere'}")
    assert_user_error(finished, str(tmp_path / "nowhere"), "dataset.root=",
                      "dataset.download=true")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error():
    assert_user_error(lrexp("device=cuda"), "device='cuda'", "device='cpu'")


def test_a_bad_override_exits_2_from_a_real_process(tmp_path):
    # Hydra refuses the override before lrexp imports torch: a process that costs little
    proc = lrexp_cli("tracking=none", "max_lr=abc", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "max_lr" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_help_into_a_pipe_that_closed_ends_quietly(tmp_path):
    # `python -m lrexp --help | head -1`: the reader is gone before the help is written
    proc = subprocess.Popen([sys.executable, "-m", "lrexp", "--help"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == ""


def test_help_lists_groups_without_importing_torch_or_mlflow(tmp_path):
    code = ("import runpy, sys; sys.argv = ['lrexp', '--help']\n"
            "try:\n    runpy.run_module('lrexp', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'torchvision', 'mlflow') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    for group in ("net:", "dataset:", "optimizer:", "experiment:", "tracking:"):
        assert group in proc.stdout
    assert "cifar100_vgg16" in proc.stdout and "vgg16" in proc.stdout


# A long, slow ramp: the range test is still running when the signal arrives.
LONG_RUN = ("num_iter=100000", "max_lr=1e-3", "hydra.run.dir=run")


@pytest.mark.slow
def test_ctrl_c_keeps_the_partial_curve_and_exits_130_as_a_real_process(tmp_path, default_store):
    proc = lrexp_process(*LONG_RUN, cwd=tmp_path)
    curve = tmp_path / "run" / "curve.csv"
    try:
        poll_until(lambda: curve_rows(curve) >= 10 or proc.poll() is not None,
                   "10 rows flushed")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()  # a failed test leaves no 100000-step run behind (a no-op once it exited)
    assert proc.returncode == 130, out
    result = RangeTestResult.from_csv(curve)
    assert result.stop_reason == "interrupted" and len(result) >= 10
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = runs_of(client)
    assert run.info.status == "KILLED"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == len(result)
