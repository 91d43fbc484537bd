"""README "Your own project", followed as written: its files are written into a folder outside
the checkout and its commands run there through the real CLI, in their own processes, into a
real MLflow store; then the store and the run dirs are read back."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrexp.engine.result import RangeTestResult

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
_FILE = re.compile(r"<!-- file: (?P<path>\S+) -->\s*(?:<!-- readme-test: skip[^>]*-->\s*)?"
                   r"```\w*\n(?P<body>.*?)```", re.S)
_COMMANDS = re.compile(r"<!-- own-project: commands -->\s*```bash\n(?P<body>.*?)```", re.S)


def example_files() -> dict[str, str]:
    return {match["path"]: match["body"] for match in _FILE.finditer(README)}


def example_commands() -> list[str]:
    match = _COMMANDS.search(README)
    assert match, "README: the own-project commands block"
    return [line for line in match["body"].splitlines() if line.strip()]


def test_the_readme_example_has_its_files_and_commands():
    files = example_files()
    assert {"myproj/mymodels.py", "myproj/mydata.py", "myproj/conf/net/tabnet.yaml",
            "myproj/conf/dataset/wine.yaml", "myproj/pretrain.py"} <= set(files)
    commands = example_commands()
    assert any("checkpoint=" in line for line in commands)
    assert any(" -m " in line and "," in line for line in commands)


def _runs(project: Path) -> list:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lrexp")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])


def _run_dirs(project: Path) -> list[Path]:
    return sorted(path.parent for path in project.glob("outputs/**/summary.json")
                  if "multirun" not in path.parts)


@pytest.mark.slow
def test_the_readme_example_runs_outside_the_checkout(tmp_path):
    for relative, body in example_files().items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    project = tmp_path / "myproj"
    script = "set -e\n" + "\n".join(example_commands()) + "\n"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MLFLOW_", "PYTHONPATH"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # this interpreter's python
    proc = subprocess.run(["bash", "-c", script], cwd=project, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    runs = _runs(project)
    parents = [run for run in runs if run.data.tags.get("lrexp.sweep") == "true"]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    singles = [run for run in runs if run not in parents and run not in children]
    assert len(parents) == 1 and len(children) == 2 and len(singles) == 2
    assert all(run.info.status == "FINISHED" for run in runs)
    # the sweep's children tell themselves apart by the setting their siblings do not share
    assert sorted(run.info.run_name for run in children) == \
        ["TabNet-wine-SGD net.depth=1", "TabNet-wine-SGD net.depth=4"]

    fresh, tuned = singles
    assert fresh.data.tags["weights"] == "none" and fresh.data.params["loss._target_"] == \
        "torch.nn.CrossEntropyLoss" and fresh.data.params["loss.label_smoothing"] == "0.1"
    assert tuned.data.tags["weights"] == f"checkpoint: {(project / 'tabnet.pt').resolve()}"
    assert tuned.data.params["weights"] == tuned.data.tags["weights"]
    # the checkpoint's weights are in the net: the curve starts at the trained loss; an
    # untrained net starts near ln 3 (and the label smoothing of the first run only raises it)
    fresh_dir, tuned_dir = _run_dirs(project)
    fresh_curve = RangeTestResult.from_csv(fresh_dir / "curve.csv")
    tuned_curve = RangeTestResult.from_csv(tuned_dir / "curve.csv")
    assert fresh_curve.losses[0] > 0.8 and tuned_curve.losses[0] < 0.2
    summary = json.loads((tuned_dir / "summary.json").read_text())
    assert summary["weights"] == tuned.data.tags["weights"]
    assert summary["regime"] == tuned.data.tags["regime"] == "fine-tuning"
    # a fine-tuning run verifies (verify=auto): the probes' choice is the suggestion
    assert summary["default_method"] == "verified" and summary["verification"] is not None
    assert "verified by short probe trainings (verify=auto" in proc.stdout + proc.stderr
    assert json.loads((fresh_dir / "summary.json").read_text())["regime"] == "from scratch"
    assert "assumed: fine-tuning (weights: checkpoint: " in proc.stdout + proc.stderr
    assert (project / "compare_runs.png").is_file()  # compare read every run back
