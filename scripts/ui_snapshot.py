"""What a user sees in the MLflow UI after a 3-net sweep, as screenshots from headless Chromium.

    python scripts/ui_snapshot.py                          # into outputs/ui_snapshot/
    python scripts/ui_snapshot.py --out DIR --num-iter 60 --nets mlp,simple_cnn

1. makes a fresh SQLite store and starts ``mlflow ui`` on it (127.0.0.1, a free port) and
   headless Chromium, which come up while
2. ``python -m lrexp -m net=mlp,simple_cnn,vgg11`` runs into that store;
3. drives Debian's ``chromium`` (``apt-get install chromium``) over the DevTools protocol (the
   websocket client is aiohttp's, which MLflow already requires) and saves:
   ``runs.png`` the run list with the sweep's parent expanded, ``charts.png`` the chart view
   with every child's curve image side by side, ``parent.png`` the parent's summary table;
4. writes ``pages.json``: the text of each page, and whether every run name appears in it;
5. stops the UI and the browser. Exit code 1 when a page misses a run name.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

IMAGE_KEY = "lr_range_test"  # each run's curve image (lrexp.tracking.mlflow_tracker)
LOADED_CURVE_IMAGES = ("[...document.images].filter(i => i.src.includes('lr_range_test')"
                       " && i.complete && i.naturalWidth > 0).length")
EXPAND_PARENT = ("document.querySelector('button[data-component-id*=\"runnamecellrenderer\"]')"
                 "?.click()")
CLOSE_ASSISTANT = "document.querySelector('button[aria-label=\"Close\"]')?.click()"


def by_text(text: str) -> str:
    """JavaScript for the innermost element whose own text is ``text``."""
    return (f"document.evaluate(\"//*[text()='{text}']\", document, null, "
            "XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue")


_STARTED = time.monotonic()


def say(what: str) -> None:
    print(f"[{time.monotonic() - _STARTED:5.1f} s] {what}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_json(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 120) -> Any:
    """GET ``url`` until it answers with JSON (polling; the process must stay alive)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ui_snapshot: {what} exited early (code {proc.returncode}).")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read()
                return json.loads(body) if body.strip().startswith((b"{", b"[")) else body
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"ui_snapshot: {what} did not answer in {timeout_s:.0f} s.")


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process and everything it started; SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


class Page:
    """One browser tab, driven by DevTools protocol commands over a websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:  # events arrive in between; the answer carries our id
            message = await self.ws.receive_json()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def text(self) -> str:
        result = await self.call("Runtime.evaluate", expression="document.body.innerText",
                                 returnByValue=True)
        return str(result.get("result", {}).get("value", ""))

    async def open(self, url: str, wanted: list[str], timeout_s: float = 60) -> str:
        """Navigate and wait (polling the page's text) until every wanted string shows."""
        await self.call("Page.navigate", url=url)
        return await self.wait_for(wanted, timeout_s)

    async def wait_for(self, wanted: list[str], timeout_s: float = 60) -> str:
        deadline = time.time() + timeout_s
        text = ""
        while time.time() < deadline:
            text = await self.text()
            if all(name in text for name in wanted):
                break
            await asyncio.sleep(0.5)
        return text

    async def wait_until(self, count_script: str, at_least: int, timeout_s: float = 60) -> int:
        """Poll a script that counts something on the page until it reaches ``at_least``."""
        deadline, count = time.time() + timeout_s, 0
        while time.time() < deadline:
            result = await self.call("Runtime.evaluate", expression=count_script,
                                     returnByValue=True)
            count = int(result.get("result", {}).get("value") or 0)
            if count >= at_least:
                break
            await asyncio.sleep(0.5)
        return count

    async def run(self, script: str) -> None:
        await self.call("Runtime.evaluate", expression=script)

    async def screenshot(self, path: Path) -> None:
        await asyncio.sleep(1.5)  # charts and images finish drawing after the text is there
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        say(f"saved {path}")


async def snapshot(browser_port: int, ui: str, experiment_id: str, parent: dict[str, str],
                   children: list[str], nets: list[str], out: Path) -> dict[str, Any]:
    import aiohttp

    [tab] = [t for t in json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{browser_port}/json/list").read()) if t["type"] == "page"][:1]
    pages: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        page = Page(ws)
        await page.call("Page.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000,
                        deviceScaleFactor=1, mobile=False)
        runs = f"{ui}/#/experiments/{experiment_id}/runs"
        everyone = [parent["name"], *children]

        await page.open(runs, [parent["name"]])
        await page.run(CLOSE_ASSISTANT)
        await page.run(EXPAND_PARENT)
        pages["runs"] = await page.wait_for(everyone)
        await page.screenshot(out / "runs.png")

        pages["charts"] = await page.open(f"{runs}?compareRunsMode=CHART", [parent["name"]])
        await page.run(CLOSE_ASSISTANT)
        shown = await page.text()
        if not all(child in shown for child in children):
            await page.run(EXPAND_PARENT)  # hidden children show no charts
        pages["charts"] = await page.wait_for(children)
        # the chart search box keeps only the curve images: one tile per run
        await page.run("document.querySelector('input[placeholder=\"Search metric charts\"]')"
                       "?.focus()")
        await page.call("Input.insertText", text=IMAGE_KEY)
        await page.wait_until(LOADED_CURVE_IMAGES, 1)
        await page.screenshot(out / "charts.png")

        artifact = f"{ui}/#/experiments/{experiment_id}/runs/{parent['id']}/artifacts"
        pages["parent"] = await page.open(artifact, ["sweep_summary.csv"])
        await page.run(f"{by_text('sweep_summary.csv')}?.click()")
        pages["parent"] = await page.wait_for(nets)
        await page.screenshot(out / "parent.png")
    wanted = {"runs": everyone, "charts": children, "parent": nets}
    return {name: {"shows_every_run": all(w in text for w in wanted[name]),
                   "missing": [w for w in wanted[name] if w not in text], "text": text}
            for name, text in pages.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/ui_snapshot"))
    parser.add_argument("--num-iter", type=int, default=60)
    parser.add_argument("--nets", default="mlp,simple_cnn,vgg11",
                        help="the sweep's nets, comma-separated (default: %(default)s)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("ui_snapshot: chromium not found; install it with apt-get install chromium.",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lrexp-ui-"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env["MPLBACKEND"] = "Agg"
    store = f"sqlite:///{work / 'mlflow.db'}"
    ui_port, browser_port = free_port(), free_port()
    ui_url = f"http://127.0.0.1:{ui_port}"
    # the browser and the UI start while the sweep runs: the UI on a store made here first,
    # so that it and the sweep never both create (migrate) the same new file
    browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                "--no-first-run", "--disable-background-networking",
                                "--hide-scrollbars", f"--remote-debugging-port={browser_port}",
                                f"--user-data-dir={work / 'profile'}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # chromium's renderers go with it
    say(f"making the store {store}")
    from mlflow.tracking import MlflowClient

    MlflowClient(store).search_experiments()
    ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port",
                           str(ui_port), "--backend-store-uri", store],
                          cwd=work, env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)  # its uvicorn workers go with it (killpg)
    try:
        say(f"running python -m lrexp -m net={args.nets} num_iter={args.num_iter} in {work}")
        subprocess.run([sys.executable, "-m", "lrexp", "-m", f"net={args.nets}",
                        f"num_iter={args.num_iter}", "progress=false"], cwd=work, env=env,
                       check=True, capture_output=True)
        say("sweep done; waiting for mlflow ui and chromium")
        wait_for_json(f"{ui_url}/health", ui, "mlflow ui")
        wait_for_json(f"http://127.0.0.1:{browser_port}/json/version", browser, "chromium")
        say("both answer; capturing the pages")
        client = MlflowClient(ui_url)
        experiment = client.get_experiment_by_name("lrexp")
        runs = client.search_runs([experiment.experiment_id])
        [parent] = [r for r in runs if "lrexp.sweep" in r.data.tags]
        children = [r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags]
        report = asyncio.run(snapshot(
            browser_port, ui_url, experiment.experiment_id,
            {"id": parent.info.run_id, "name": parent.info.run_name}, children,
            args.nets.split(","), args.out))
    finally:
        for proc in (browser, ui):
            stop_group(proc)
        shutil.rmtree(work, ignore_errors=True)
    (args.out / "pages.json").write_text(json.dumps(report, indent=1))
    missing = {name: page["missing"] for name, page in report.items() if page["missing"]}
    if missing:
        print(f"ui_snapshot: run names missing from pages: {missing}", file=sys.stderr)
        return 1
    print("every page shows every run name")
    return 0


if __name__ == "__main__":
    sys.exit(main())
