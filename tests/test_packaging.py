"""pip install . into a fresh venv; the configs ship in the wheel and the app runs anywhere."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_wheel_runs_from_an_unrelated_directory(tmp_path):
    venv = tmp_path / "venv"
    # system site packages provide torch & co.; the venv's own lrexp (from the wheel) wins
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    python = venv / "bin" / "python"
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True)
    [wheel] = wheels.glob("lrexp-*.whl")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MPLBACKEND": "Agg"}
    where = subprocess.run([str(python), "-c", "import lrexp, sys; print(lrexp.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert str(venv) in where.stdout  # the installed copy, not the checkout

    for command in ([str(python), "-m", "lrexp"], [str(venv / "bin" / "lrexp")]):
        proc = subprocess.run([*command, "num_iter=20", "tracking=none", "progress=false"],
                              cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list(elsewhere.glob("outputs/*/*/curve.csv"))) == 2
