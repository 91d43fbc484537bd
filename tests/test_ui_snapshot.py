"""A new user's way to a sweep's curves in the MLflow UI: scripts/ui_snapshot.py starts a real
``mlflow ui`` and headless Chromium with a fresh profile and clicks, with the mouse, from the
landing page to the sweep parent's overlay (every child's loss against LR in one chart)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ui_snapshot.py"


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="needs chromium (apt-get install chromium)")
def test_four_clicks_from_the_landing_page_show_every_childs_curve_in_one_chart(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path),
                           "--num-iter", "12", "--nets", "mlp,simple_cnn"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    path = json.loads((tmp_path / "path.json").read_text())
    assert [step["click"] for step in path["steps"]] == \
        ["Model training", "lrexp", "Chart view", "sweep_overlay"]
    assert all(step["clicked"] and step["shows"] for step in path["steps"]), path["steps"]
    assert "workflowType=machine_learning" in path["steps"][1]["url"]  # the training view
    assert "compareRunsMode=CHART" in path["steps"][2]["url"]
    # the full-size overlay the sweep logged on its parent run, decoded by the browser
    [(src, width, height)] = path["overlay_shown"]
    assert f"run_uuid={path['parent_run_id']}" in src and width >= 900 and height >= 500
    for step in ["0_landing", *(Path(s["screenshot"]).stem for s in path["steps"])]:
        assert (tmp_path / f"{step}.png").read_bytes()[:4] == b"\x89PNG"
