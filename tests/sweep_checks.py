"""Checks shared by the tracking and sweep tests: what a run or a sweep must have left in MLflow."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from app_runs import poll_until, training_started

from lrexp.engine.result import RangeTestResult


def default_signals() -> None:
    """For ``preexec_fn``: a child starts with Ctrl-C's default action even when this process
    ignores SIGINT (a shell's background job does; the ignore would be inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def lrexp_process(*args, cwd, **popen) -> subprocess.Popen:
    """A real ``python -m lrexp progress=false ARGS`` process (the hermetic fixture cleared
    MLFLOW_* settings from the environment it inherits)."""
    return subprocess.Popen([sys.executable, "-m", "lrexp", "progress=false", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=default_signals, **popen)


def lrexp_cli(*args, cwd, env_extra=None, timeout=300):
    env = {**os.environ, "MPLBACKEND": "Agg", **(env_extra or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    flags = [a for a in args if a.startswith("-")]  # Hydra wants -m before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run([sys.executable, "-m", "lrexp", *flags, "progress=false", *overrides],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def runs_of(client, experiment="lrexp"):
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def assert_child_matches_its_run_dir(client, run, run_dir: Path):
    """Every recorded step is in MLflow exactly once, equal to the CSV; params, tags, files."""
    curve = RangeTestResult.from_csv(run_dir / "curve.csv")
    for key, values in (("lr", curve.lrs), ("loss", curve.losses),
                        ("loss_smooth", curve.smoothed)):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(len(curve))), key
        np.testing.assert_allclose([m.value for m in history], values, rtol=1e-12)
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary["suggested_lr"] is None:  # confidence "none": no number, only the reason
        assert "suggested_lr" not in run.data.metrics
    else:
        assert run.data.metrics["suggested_lr"] == pytest.approx(summary["suggested_lr"])
    assert run.data.tags["confidence"] == summary["confidence"]
    assert run.data.tags["confidence_reason"] == summary["confidence_reason"]
    assert run.data.metrics["suggestion_confidence"] == \
        {"none": 0, "low": 1, "high": 2}[summary["confidence"]]
    assert run.data.metrics["min_loss"] == pytest.approx(summary["min_loss"])
    assert run.data.params["net.name"] == summary["net"]
    assert run.data.params["min_lr"] == "1e-07"
    for tag in ("net", "dataset", "optimizer", "device", "status", "hydra_overrides"):
        assert tag in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plot.png", "curve.csv", "config.yaml", ".hydra", "lrexp.log"} <= artifacts


def check_sweep(client, sweep_root: Path, nets: list[str], experiment: str = "lrexp"):
    runs = runs_of(client, experiment)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["net"] for r in children) == sorted(nets)
    names = [r.info.run_name for r in children]
    assert len(set(names)) == len(names), f"children that share a name: {names}"
    statuses = {r.info.run_id: (r.data.tags["net"], r.info.status) for r in children}
    assert all(status == "FINISHED" for _, status in statuses.values()), statuses
    assert parent.info.status == "FINISHED"
    [sweep_dir] = sweep_root.glob("*/*")
    for child in children:
        job_dir = Path(child.data.tags["run_dir"])
        assert job_dir.parent == sweep_dir.resolve()
        assert_child_matches_its_run_dir(client, child, job_dir)
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_summary.csv", "sweep_overlay.png", "sweep_summary.json"} <= parent_files
    summary = (sweep_dir / "sweep_summary.csv").read_text()
    assert all(net in summary for net in nets)
    return parent, children


def wait_until_training(run_dir: Path, timeout_s: float = 120) -> None:
    """Block until the job in ``run_dir`` has started its range test (the runner logs it)."""
    poll_until(lambda: training_started(run_dir), f"a range test started in {run_dir}",
               timeout_s)
