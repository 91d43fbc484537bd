"""The MLflow UI shows what the README says: scripts/ui_snapshot.py drives a real mlflow ui in
headless Chromium; every page it captures names every run of the sweep."""

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
def test_the_ui_pages_render_every_run_name(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path),
                           "--num-iter", "12", "--nets", "mlp,simple_cnn"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    pages = json.loads((tmp_path / "pages.json").read_text())
    assert set(pages) == {"runs", "charts", "parent"}
    for name, page in pages.items():
        assert page["shows_every_run"] and not page["missing"], name
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "sweep " in pages["runs"]["text"]  # the parent, expanded above its children
