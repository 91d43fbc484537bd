"""The command line, run as users run it: a subprocess, checked for exit code and message."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sweep_checks import lrexp_cli, wait_until_training

from lrexp.engine.result import RangeTestResult

ROOT = Path(__file__).resolve().parents[1]


def lrexp(*args, cwd, timeout=180):
    return lrexp_cli("tracking=none", *args, cwd=cwd, timeout=timeout)


def _output(proc):
    return proc.stdout + proc.stderr


def assert_user_error(proc, *needles):
    text = _output(proc)
    assert proc.returncode == 2, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text


def test_default_run_writes_plot_and_curve_under_outputs(tmp_path):
    proc = lrexp("num_iter=30", cwd=tmp_path)
    assert proc.returncode == 0, _output(proc)
    [run_dir] = [p.parent for p in (tmp_path / "outputs").glob("*/*/curve.csv")]
    assert (run_dir / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert len(RangeTestResult.from_csv(run_dir / "curve.csv")) <= 30
    assert (run_dir / "config.yaml").exists() and (run_dir / ".hydra").is_dir()
    assert "suggested LR" in _output(proc) and str(run_dir) in _output(proc)


def test_unknown_net_lists_the_available_nets(tmp_path):
    assert_user_error(lrexp("net=vgg17", cwd=tmp_path), "net/vgg17", "vgg16", "resnet18")


def test_unknown_zoo_name_lists_the_registered_nets(tmp_path):
    assert_user_error(lrexp("net.name=vgg17", cwd=tmp_path), "vgg17", "Registered nets",
                      "densenet121")


def test_non_numeric_max_lr_is_refused(tmp_path):
    assert_user_error(lrexp("max_lr=abc", cwd=tmp_path), "max_lr", "abc")


def test_inverted_lr_range_is_refused_before_any_work(tmp_path):
    proc = lrexp("min_lr=1", "max_lr=0.1", cwd=tmp_path)
    assert_user_error(proc, "min_lr=1.0 and max_lr=0.1", "0 < min_lr < max_lr")
    assert not list(tmp_path.glob("outputs/*/*/curve.csv"))


def test_missing_dataset_files_name_the_folder_and_the_fix(tmp_path):
    proc = lrexp("dataset=cifar10", f"dataset.root={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert_user_error(proc, str(tmp_path / "nowhere"), "dataset.root=", "dataset.download=true")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error(tmp_path):
    assert_user_error(lrexp("device=cuda", cwd=tmp_path), "device='cuda'", "device='cpu'")


def test_help_lists_groups_without_importing_torch_or_mlflow(tmp_path):
    code = ("import runpy, sys; sys.argv = ['lrexp', '--help']\n"
            "try:\n    runpy.run_module('lrexp', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'torchvision', 'mlflow') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, _output(proc)
    for group in ("net:", "dataset:", "optimizer:", "experiment:", "tracking:"):
        assert group in proc.stdout
    assert "cifar100_vgg16" in proc.stdout and "vgg16" in proc.stdout


def test_ctrl_c_keeps_the_partial_curve_and_exits_130(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, "-m", "lrexp", "tracking=none", "progress=false",
                             "num_iter=100000", "max_lr=1e-3", "hydra.run.dir=run"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_until_training(tmp_path / "run")
    time.sleep(2)  # a few steps into the test
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    curve = RangeTestResult.from_csv(tmp_path / "run" / "curve.csv")
    assert curve.stop_reason == "interrupted" and len(curve) > 0
