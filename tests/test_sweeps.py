"""Sweeps through real Hydra launchers (basic, joblib, submitit_local) into real stores."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from app_runs import compose_config, curve_rows, lrexp_main, poll_until, signal_this_process_when
from hydra.errors import ConfigCompositionException
from mlflow.tracking import MlflowClient
from mlflow_server import mlflow_server
from omegaconf import OmegaConf
from sweep_checks import check_sweep, default_signals, lrexp_cli, runs_of

from lrexp.app import models
from lrexp.app.build import torch_threads
from lrexp.engine.result import RangeTestResult
from lrexp.run.sweep_dir import job_overrides, swept_settings
from lrexp.sweep.callbacks import lowest_minimum
from lrexp.sweep.launchers import runs_parallel_loky_workers
from lrexp.sweep.warm_workers import PRELOAD

NETS_X3_SEEDS = ["net=mlp,simple_cnn", "seed=0,1,2"]  # 6 jobs


def test_archs_sweep_covers_every_cifar_style_net():
    params = compose_config("sweep=archs").hydra.sweeper.params
    assert set(params.net.split(",")) == set(models.available()) - {"mlp", "simple_cnn"}


@pytest.mark.parametrize("preset,key", [("optimizers", "optimizer"), ("seeds", "seed"),
                                        ("lr_bounds", "max_lr")])
def test_other_sweep_presets_sweep_their_key(preset, key):
    params = compose_config(f"sweep={preset}").hydra.sweeper.params
    assert len(str(params[key]).split(",")) >= 2


# The keys the README says SLURM users change, each overridden to a value the preset does not hold
SLURM_SETTINGS = {"partition": "gpu", "gpus_per_node": 2, "cpus_per_task": 4, "mem_gb": 64,
                  "timeout_min": 30, "array_parallelism": 4}


def test_slurm_preset_reaches_the_submitit_launcher_with_the_users_settings():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = compose_config("hydra/launcher=lrexp_slurm", *(
        f"hydra.launcher.{key}={value}" for key, value in SLURM_SETTINGS.items())).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert {key: launcher[key] for key in SLURM_SETTINGS} == SLURM_SETTINGS


@pytest.mark.parametrize("choice", ["lrexp_slurm", "submitit_slurm"])
def test_the_slurm_launcher_hydra_instantiates_is_lrexps(choice):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra.core.plugins import Plugins

    from lrexp.sweep.launchers import register_lrexp_launcher

    launcher = compose_config(f"hydra/launcher={choice}").hydra.launcher
    register_lrexp_launcher(launcher)
    # submitit's own SLURM launcher runs as lrexp's, with the user's settings
    assert launcher._target_ == "hydra_plugins.lrexp_slurm_launcher.LrexpSlurmLauncher"
    assert Plugins.instance().class_name_to_class[launcher._target_].__name__ == \
        "LrexpSlurmLauncher"


def test_a_misspelled_slurm_setting_is_refused_not_ignored():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with pytest.raises(ConfigCompositionException, match="partiton"):
        compose_config("hydra/launcher=lrexp_slurm", "hydra.launcher.partiton=gpu")


@pytest.mark.slow
def test_joblib_6_jobs_3_at_a_time_into_the_default_sqlite_store(tmp_path, default_store):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = lrexp_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3", *NETS_X3_SEEDS,
                     "num_iter=15", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Sweep summary" in proc.stdout + proc.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_sweep(client, tmp_path / "outputs" / "multirun", ["mlp", "simple_cnn"] * 3)


@pytest.mark.slow
def test_joblib_jobs_with_dataloader_workers_into_a_local_server(
        tmp_path, mlflow_server_uri, experiment_name):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    # a worker's own DataLoader workers (processes of a loky process); the 6-job test above
    # shows the pool running more jobs than it has workers
    proc = lrexp_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "net=mlp,simple_cnn", "num_iter=15", "loader.num_workers=1",
                     f"tracking.uri={mlflow_server_uri}",
                     f"tracking.experiment={experiment_name}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_sweep(MlflowClient(mlflow_server_uri), tmp_path / "outputs" / "multirun",
                ["mlp", "simple_cnn"], experiment=experiment_name)


@pytest.mark.slow
def test_submitit_local_runs_jobs_in_other_processes_under_one_parent(tmp_path, default_store):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = lrexp_cli("-m", "hydra/launcher=submitit_local", "net=mlp,simple_cnn",
                     "num_iter=15", "hydra.launcher.timeout_min=10", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    _, children = check_sweep(client, tmp_path / "outputs" / "multirun", ["mlp", "simple_cnn"])
    assert len({c.data.tags["run_dir"] for c in children}) == 2


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LREXP_TEST_POSTGRES_URI"),
                    reason="set LREXP_TEST_POSTGRES_URI (.ci/run starts PostgreSQL and sets it)")
def test_postgresql_backed_server_with_a_joblib_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    experiment = f"pg-{uuid.uuid4().hex[:8]}"  # the database may outlive one test session
    with mlflow_server(tmp_path, backend_uri=os.environ["LREXP_TEST_POSTGRES_URI"]) as uri:
        proc = lrexp_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                         "net=mlp,simple_cnn", "num_iter=12", "batch_size=16",
                         "tracking=server", f"tracking.uri={uri}",
                         f"tracking.experiment={experiment}",
                         cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        check_sweep(MlflowClient(uri), tmp_path / "outputs" / "multirun",
                    ["mlp", "simple_cnn"], experiment=experiment)


JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


@pytest.mark.parametrize("launcher,warm", [
    ({"_target_": JOBLIB_LAUNCHER, "n_jobs": 2, "backend": None, "prefer": "processes"}, True),
    ({"_target_": JOBLIB_LAUNCHER, "n_jobs": -1, "backend": "loky", "prefer": "processes"}, True),
    ({"_target_": JOBLIB_LAUNCHER, "n_jobs": 1, "backend": None, "prefer": "processes"}, False),
    ({"_target_": JOBLIB_LAUNCHER, "n_jobs": 2, "backend": "threading"}, False),
    ({"_target_": JOBLIB_LAUNCHER, "n_jobs": 2, "backend": None, "prefer": "threads"}, False),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, False),
])
def test_warm_start_applies_only_to_parallel_loky_processes(launcher, warm):
    assert runs_parallel_loky_workers(OmegaConf.create(launcher)) is warm


def test_every_preloaded_module_exists():
    # The forkserver skips a module it cannot import, silently: a typo would cost the warm start.
    assert all(importlib.util.find_spec(name) is not None for name in PRELOAD)


# Runs the callback, then asks real loky workers whether torch was imported before their job:
# a function pickled from __main__ imports nothing, so only a preload can have put it there.
WORKER_PROBE = """
import sys
from joblib import Parallel, delayed
from omegaconf import OmegaConf
from lrexp.sweep.warm_workers import WarmJoblibWorkers

def torch_already_imported(_):
    return "torch" in sys.modules

launcher = {"_target_": sys.argv[2], "n_jobs": 2, "backend": None, "prefer": "processes"}
config = OmegaConf.create({"hydra": {"launcher": launcher}})
WarmJoblibWorkers(enabled=sys.argv[1] == "on").on_multirun_start(config)
print(Parallel(n_jobs=2)(delayed(torch_already_imported)(i) for i in range(4)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("enabled,expected", [("on", [True] * 4), ("off", [False] * 4)])
def test_warm_workers_have_torch_imported_before_their_first_job(enabled, expected):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = subprocess.run([sys.executable, "-c", WORKER_PROBE, enabled, JOBLIB_LAUNCHER],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(expected)


LONG_SWEEP = ("seed=0,1,2", "num_iter=100000", "max_lr=1e-3")  # 3 jobs that never end alone


def jobs_have_recorded(tmp_path: Path, running: int, rows: int = 10) -> bool:
    """``running`` jobs of the sweep under ``tmp_path`` have flushed ``rows`` points each."""
    curves = tmp_path.glob("outputs/multirun/*/*/*/curve.csv")
    return sum(curve_rows(curve) >= rows for curve in curves) >= running


def interrupt_sweep_once_running(tmp_path, running: int, *launcher, signum=signal.SIGINT):
    """Start a 3-job sweep as a real process, send ``signum`` to its process group (Ctrl-C in a
    terminal does; SLURM and `docker stop` of a process group send SIGTERM) once ``running``
    jobs have recorded points; returns (exit code, output, sweep dir)."""
    sweep = subprocess.Popen(
        [sys.executable, "-m", "lrexp", "-m", *launcher, *LONG_SWEEP, "progress=false"],
        cwd=tmp_path, start_new_session=True, preexec_fn=default_signals,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        poll_until(lambda: jobs_have_recorded(tmp_path, running) or sweep.poll() is not None,
                   f"{running} jobs recording")
        os.killpg(sweep.pid, signum)
        output, _ = sweep.communicate(timeout=120)
    except (subprocess.TimeoutExpired, TimeoutError):
        os.killpg(sweep.pid, signal.SIGKILL)  # leave no stray workers behind a failed test
        raise
    [sweep_dir] = tmp_path.glob("outputs/multirun/*/*")
    return sweep.returncode, output, sweep_dir


def check_interrupted_sweep(client, sweep_dir: Path, running: int, experiment: str = "lrexp",
                            jobs: int = 3, net: str = "simple_cnn"):
    runs = runs_of(client, experiment)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "KILLED"
    assert len(children) == running  # the skipped jobs never opened a run
    for child in children:  # what a running job had recorded is all there
        curve = RangeTestResult.from_csv(Path(child.data.tags["run_dir"]) / "curve.csv")
        history = client.get_metric_history(child.info.run_id, "loss")
        assert child.info.status == "KILLED" and curve.stop_reason == "interrupted"
        assert len(history) == len(curve) > 0
    statuses = [json.loads((sweep_dir / f"{n}_{net}" / "summary.json").read_text())["status"]
                for n in range(jobs)]
    assert statuses == ["interrupted"] * running + ["SKIPPED"] * (jobs - running)
    with open(sweep_dir / "sweep_summary.csv") as table:
        assert [row["status"] for row in csv.DictReader(table)] == statuses


STOP_SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]  # Ctrl-C; SLURM, docker stop


@pytest.mark.parametrize("signum,exit_code", [
    (signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)],
    ids=["ctrl_c", "sigterm"])
def test_a_stop_signal_ends_a_serial_sweep_and_keeps_the_running_jobs_curve(
        tmp_path, shared_sqlite_uri, experiment_name, signum, exit_code):
    # the basic launcher runs the jobs in the sweep's own process: this one; two jobs show
    # both fates (the running one records, the next is skipped)
    with signal_this_process_when(lambda: jobs_have_recorded(tmp_path, 1), signum) as problems:
        finished = lrexp_main("-m", "seed=0,1", "net=mlp", *LONG_SWEEP[1:],
                              f"tracking.uri={shared_sqlite_uri}",
                              f"tracking.experiment={experiment_name}")
    assert not problems, problems
    assert finished.returncode == exit_code, finished.output
    assert "Traceback" not in finished.output
    [sweep_dir] = tmp_path.glob("outputs/multirun/*/*")
    check_interrupted_sweep(MlflowClient(shared_sqlite_uri), sweep_dir, 1, experiment_name,
                            jobs=2, net="mlp")


@pytest.mark.slow
def test_sigterm_to_a_serial_sweeps_process_group_ends_it_with_143(tmp_path, default_store):
    # Ctrl-C, and SIGTERM to the process itself: the in-process test above; joblib's group below
    code, output, sweep_dir = interrupt_sweep_once_running(tmp_path, 1, signum=signal.SIGTERM)
    assert code == 143, output
    assert "Traceback" not in output
    check_interrupted_sweep(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), sweep_dir, 1)


@pytest.mark.slow
@pytest.mark.parametrize("signum,exit_code", STOP_SIGNALS, ids=["ctrl_c", "sigterm"])
def test_a_stop_signal_ends_a_joblib_sweep_after_its_workers_record(tmp_path, default_store, signum,
                                                                   exit_code):
    # joblib alone would kill its workers at once, before they record anything.
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    code, output, sweep_dir = interrupt_sweep_once_running(
        tmp_path, 2, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", signum=signum)
    assert code == exit_code, output
    assert "Traceback" not in output
    check_interrupted_sweep(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), sweep_dir, 2)


@pytest.mark.parametrize("threads,n_jobs,cores,expected", [
    (0, None, 2, None),  # not joblib: torch's own default
    (0, 1, 8, None),
    (0, 2, 2, 1),        # the README's rule: cores // n_jobs
    (0, 3, 8, 2),
    (0, 8, 2, 1),        # more jobs than cores: at least one thread each
    (0, -1, 4, 1),       # n_jobs=-1: one job per core
    (3, 2, 2, 3),        # threads=K wins
])
def test_thread_rule_under_joblib(threads, n_jobs, cores, expected):
    assert torch_threads(threads, n_jobs, cores) == expected


# -- LR x weight decay: the sweep's summary names the setting that trains best ---------------
def test_a_weight_decay_sweep_names_the_decay_that_reaches_the_lowest_loss(
        tmp_path, shared_sqlite_uri, experiment_name):
    # a constructed case: SGD's weight decay of 30 pulls the weights back harder than any LR
    # can move them forward, so its curve never falls below its start while 0 trains
    finished = lrexp_main("-m", "sweep=weight_decay", "net=mlp", "optimizer.weight_decay=0,30",
                          "num_iter=30", f"tracking.uri={shared_sqlite_uri}",
                          f"tracking.experiment={experiment_name}")
    assert finished.returncode == 0, finished.output
    assert "Lowest minimum loss: job 0_mlp (optimizer.weight_decay=0)" in finished.output
    [sweep_dir] = tmp_path.glob("outputs/multirun/*/*")
    with open(sweep_dir / "sweep_summary.csv") as table:
        rows = list(csv.DictReader(table))
    assert [row["swept"] for row in rows] == ["optimizer.weight_decay=0",
                                              "optimizer.weight_decay=30"]
    assert float(rows[0]["min_loss"]) < float(rows[1]["min_loss"])
    client = MlflowClient(shared_sqlite_uri)
    [parent] = [r for r in runs_of(client, experiment_name)
                if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["best_swept"] == "optimizer.weight_decay=0"
    assert parent.data.metrics["best_min_loss"] == pytest.approx(float(rows[0]["min_loss"]))
    assert parent.data.metrics["best_suggested_lr"] == pytest.approx(
        float(rows[0]["suggested_lr"]))


def _job_dir(sweep_dir: Path, name: str, overrides: list[str]) -> Path:
    job = sweep_dir / name / ".hydra"
    job.mkdir(parents=True)
    (job / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    return job.parent


def test_swept_settings_are_the_overrides_the_jobs_do_not_share(tmp_path):
    jobs = [_job_dir(tmp_path, f"{n}_mlp", ["net=mlp", f"optimizer.weight_decay={wd}", "seed=1"])
            for n, wd in enumerate(["0", "1e-4"])]
    no_record = tmp_path / "2_mlp"
    no_record.mkdir()  # hydra.output_subdir=null: Hydra wrote no overrides
    assert swept_settings(job_overrides([*jobs, no_record])) == {
        "0_mlp": "optimizer.weight_decay=0", "1_mlp": "optimizer.weight_decay=1e-4",
        "2_mlp": ""}
    assert swept_settings(job_overrides(jobs[:1])) == {"0_mlp": ""}  # one job: nothing varies


def test_the_lowest_minimum_skips_jobs_without_a_suggestion_or_a_loss():
    rows = [{"job": "0", "status": "diverged", "min_loss": 1.0, "suggested_lr": 0.1},
            {"job": "1", "status": "completed", "min_loss": 0.5, "suggested_lr": None},  # flat
            {"job": "2", "status": "non-finite", "min_loss": float("nan"), "suggested_lr": 0.1},
            {"job": "3", "status": "FAILED", "min_loss": None, "suggested_lr": None},
            {"job": "4", "status": "completed", "min_loss": 0.8, "suggested_lr": 0.01},
            # stopped early: its minimum is not comparable with the others'
            {"job": "5", "status": "interrupted", "min_loss": 0.1, "suggested_lr": 0.01}]
    assert lowest_minimum(rows, {})[0]["job"] == "4"
    assert lowest_minimum(rows[1:4], {}) == (None, None)


def test_minima_closer_than_the_curves_noise_name_no_winner():
    # the weight-decay sweep that named a "lowest minimum" among these four
    minima = {"0": 1.81894, "1": 1.81893, "2": 1.81898, "3": 1.82000}
    rows = [{"job": job, "status": "completed", "min_loss": loss, "suggested_lr": 0.01}
            for job, loss in minima.items()]
    best, why = lowest_minimum(rows, dict.fromkeys(minima, 0.02))
    assert best is None
    assert "No clear winner" in why and "1.81893 (1)" in why and "1.81894 (0)" in why
    # the same minima from nearly noiseless curves: the lowest one leads
    best, why = lowest_minimum(rows, dict.fromkeys(minima, 1e-6))
    assert (best["job"], why) == ("1", None)
    # one curve's noise is enough to blur the lead
    assert lowest_minimum(rows, {"1": 0.0, "0": 2e-5})[0] is None


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1])
def test_a_curves_loss_noise_is_the_minibatch_noise_it_was_made_with(sigma):
    lrs = np.geomspace(1e-5, 1, 200)
    clean = 1 + 0.5 * (np.log10(lrs) + 1.5) ** 2
    noisy = clean + np.random.default_rng(0).normal(0, sigma, lrs.size)
    assert RangeTestResult(lrs, noisy, clean).loss_noise == pytest.approx(sigma, rel=0.2)
