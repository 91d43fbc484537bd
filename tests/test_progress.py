"""Sweep progress: the job count Hydra's basic sweeper will make, and the estimate of the rest."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from lrexp.app.schema import register
from lrexp.sweep.progress import count_jobs, progress_line

CONF = str(Path(__file__).resolve().parents[1] / "conf")
register()


def _hydra_config(*task_overrides, preset=None):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[f"sweep={preset}"] if preset else [],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = list(task_overrides)
    return cfg


@pytest.mark.parametrize(("task", "preset", "jobs"), [
    (["net=mlp,simple_cnn"], None, 2),
    (["net=mlp,simple_cnn", "optimizer=sgd,adam,adamw"], None, 6),
    (["max_lr=1"], None, 1),
    ([], "archs", 9),  # the preset's hydra.sweeper.params: 9 nets
    (["optimizer=sgd,adam"], "archs", 18),
    (["net=mlp,simple_cnn"], "archs", 2),  # the command line overrides the preset's nets
])
def test_counts_the_jobs_the_basic_sweeper_makes(task, preset, jobs):
    cfg = _hydra_config(*task, preset=preset)
    assert count_jobs(cfg) == jobs
    assert _hydra_count(cfg) == jobs  # fails loudly when Hydra's sweeper counts otherwise


def _hydra_count(cfg):
    """The jobs Hydra's own basic sweeper splits the same arguments into (its private
    split_arguments: the oracle count_jobs must match, with public API only)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = cfg.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(cfg.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))


def test_another_sweeper_is_not_guessed():
    cfg = _hydra_config("net=mlp,simple_cnn")
    with open_dict(cfg):
        cfg.hydra.sweeper = {"_target_": "hydra_plugins.optuna.OptunaSweeper"}
    assert count_jobs(cfg) is None


def test_the_estimate_is_the_mean_job_time_times_the_jobs_left():
    # 2 jobs took 100 s: 50 s each, 7 left -> 350 s
    assert progress_line(3, 9, 2, 100.0) == \
        "Sweep: job 3 of 9 starting; 2 done in 1m40s, about 5m50s left"
    assert progress_line(1, 9, 0, 4.0) == "Sweep: job 1 of 9 starting; 0 done in 4s"
    assert progress_line(2, None, 1, 3700.0) == "Sweep: job 2 starting; 1 done in 1h01m"
