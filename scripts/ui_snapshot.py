"""Screenshot the MLflow UI's comparison of a 3-net sweep, in headless Chromium.

    python scripts/ui_snapshot.py                          # runs the sweep in a temp dir
    python scripts/ui_snapshot.py --out outputs/ui_snapshot/compare_runs.png

1. runs ``python -m lrexp -m net=mlp,simple_cnn,vgg11`` into a fresh SQLite store;
2. starts ``mlflow ui`` on 127.0.0.1 (a free port) on that store;
3. opens the run comparison of the sweep's children in Debian's chromium
   (``apt-get install chromium``; its own ``--screenshot``, no driver needed) and saves a PNG;
4. stops the UI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

NETS = "mlp,simple_cnn,vgg11"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(uri: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("ui_snapshot: mlflow ui exited early; see its log.")
        try:
            with urllib.request.urlopen(uri + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("ui_snapshot: mlflow ui did not start in time.")


def screenshot(chromium: str, url: str, out: Path, profile: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                    "--window-size=1500,1100", "--virtual-time-budget=15000",
                    f"--screenshot={out.resolve()}", url],
                   check=True, capture_output=True, timeout=120)
    print(f"saved {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/ui_snapshot/compare_runs.png"))
    parser.add_argument("--num-iter", type=int, default=60)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("ui_snapshot: chromium not found; install it with apt-get install chromium.",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lrexp-ui-"))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run([sys.executable, "-m", "lrexp", "-m", f"net={NETS}",
                    f"num_iter={args.num_iter}", "progress=false"], cwd=work, env=env, check=True,
                   capture_output=True)
    store = f"sqlite:///{work / 'mlflow.db'}"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port",
                           str(port), "--backend-store-uri", store], cwd=work,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(uri, ui)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("lrexp")
        runs = client.search_runs([experiment.experiment_id])
        children = [r.info.run_id for r in runs if "mlflow.parentRunId" in r.data.tags]
        ids = urllib.parse.quote(json.dumps(children))
        experiments = urllib.parse.quote(json.dumps([experiment.experiment_id]))
        screenshot(chromium, f"{uri}/#/compare-runs?runs={ids}&experiments={experiments}",
                   args.out, work / "profile")
    finally:
        ui.terminate()
        ui.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
