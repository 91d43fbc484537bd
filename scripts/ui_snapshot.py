"""A new user's way in the MLflow UI, from ``mlflow ui``'s landing page to a sweep's curves
side by side, clicked in headless Chromium with a fresh profile; a screenshot after each click.

    python scripts/ui_snapshot.py                          # into outputs/ui_snapshot/
    python scripts/ui_snapshot.py --out DIR --num-iter 60 --nets mlp,simple_cnn

1. makes a fresh SQLite store and starts ``mlflow ui`` on it (127.0.0.1, a free port) and
   headless Chromium with a new profile, which come up while
2. ``python -m lrexp -m net=mlp,simple_cnn,vgg11`` runs into that store;
3. drives Debian's ``chromium`` (``apt-get install chromium``) over the DevTools protocol (the
   websocket client is aiohttp's, which MLflow already requires): opens the landing page
   (``0_landing.png``) and makes the clicks of ``CLICKS`` with the mouse, each followed by a
   screenshot (``1_model_training.png`` ... ``4_sweep_overlay.png``);
4. writes ``path.json``: each click, whether it found its element and led where it should, the
   URL after it, and the full-size ``sweep_overlay`` image shown at the end;
5. stops the UI and the browser. Exit code 1 when a click fails or the sweep parent's overlay
   (every child's loss against LR in one chart) is not shown at the end.
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


# The clicks a new user makes from ``mlflow ui``'s landing page (MLflow 3.17, a fresh
# browser profile: the GenAI home page) to every child's curve in one chart: what each click
# targets (JavaScript for the element) and what the page must show after it.
CLICKS = [
    ("Model training", "[...document.querySelectorAll('div[role=button]')]"
                       ".find(e => e.innerText.trim() === 'Model training')", "Recent Experiments"),
    ("lrexp", "document.querySelector('a[title=\"lrexp\"]')", "Run Name"),
    ("Chart view", "document.querySelector('input[value=CHART]')?.closest('label')",
     "sweep_overlay"),
    ("sweep_overlay", "[...document.images].find(i => i.src.includes('sweep_overlay'))",
     "sweep_overlay"),
]
SHOWN_OVERLAY = ("[...document.images].filter(i => i.src.includes('sweep_overlay') && "
                 "!i.src.includes('compressed') && i.complete && i.naturalWidth > 0)"
                 ".map(i => [i.src, i.naturalWidth, i.naturalHeight])")


async def click(page: Page, locate: str) -> bool:
    """A real mouse click (pressed, released) at the middle of the element ``locate`` finds."""
    found = await page.call("Runtime.evaluate", returnByValue=True, expression=(
        f"(() => {{ const e = {locate}; if (!e) return null; e.scrollIntoView({{block: "
        "'center'}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, "
        "r.y + r.height / 2]; })()"))
    point = found.get("result", {}).get("value")
    if not point:
        return False
    for kind in ("mousePressed", "mouseReleased"):
        await page.call("Input.dispatchMouseEvent", type=kind, x=point[0], y=point[1],
                        button="left", clickCount=1)
    return True


async def snapshot(browser_port: int, ui: str, out: Path) -> dict[str, Any]:
    """From the landing page, the clicks in ``CLICKS``, a screenshot after each; then which
    full-size sweep_overlay image the page shows."""
    import aiohttp

    [tab] = [t for t in json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{browser_port}/json/list").read()) if t["type"] == "page"][:1]
    steps: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        page = Page(ws)
        await page.call("Page.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000,
                        deviceScaleFactor=1, mobile=False)
        await page.open(f"{ui}/", ["Welcome to MLflow", "lrexp"])
        await page.screenshot(out / "0_landing.png")
        for number, (name, locate, then_shows) in enumerate(CLICKS, 1):
            clicked = await click(page, locate)
            text = await page.wait_for([then_shows], timeout_s=60) if clicked else ""
            if name == "Chart view":  # the overlay's card draws after the chart's text
                await page.wait_until("[...document.images].filter(i => i.src.includes("
                                      "'sweep_overlay') && i.complete).length", 1)
            shot = out / f"{number}_{name.lower().replace(' ', '_')}.png"
            await page.screenshot(shot)
            url = await page.call("Runtime.evaluate", expression="location.href",
                                  returnByValue=True)
            steps.append({"click": name, "clicked": clicked, "shows": then_shows in text,
                          "url": url["result"]["value"], "screenshot": shot.name})
        await page.wait_until(f"({SHOWN_OVERLAY}).length", 1, timeout_s=30)
        shown = await page.call("Runtime.evaluate", expression=SHOWN_OVERLAY,
                                returnByValue=True)
    return {"steps": steps, "overlay_shown": shown.get("result", {}).get("value") or []}


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
                                "--disable-component-update", "--disable-sync",
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
        [parent] = [r for r in client.search_runs([experiment.experiment_id])
                    if "lrexp.sweep" in r.data.tags]
        report = asyncio.run(snapshot(browser_port, ui_url, args.out))
        report["parent_run_id"] = parent.info.run_id
        report["problems"] = problems(report, parent.info.run_id)
    finally:
        for proc in (browser, ui):
            stop_group(proc)
        shutil.rmtree(work, ignore_errors=True)
    (args.out / "path.json").write_text(json.dumps(report, indent=1))
    if report["problems"]:
        print(f"ui_snapshot: the click path failed: {report['problems']}", file=sys.stderr)
        return 1
    print(f"{len(report['steps'])} clicks from the landing page to the sweep's overlay")
    return 0


def problems(report: dict[str, Any], parent_id: str) -> list[str]:
    """What is wrong with the path: a click that found nothing or did not lead where it
    should, or no full-size sweep_overlay image of the sweep's parent run at the end."""
    found = [f"click {number} ({step['click']}): "
             + ("no such element" if not step["clicked"] else "the page did not change")
             for number, step in enumerate(report["steps"], 1)
             if not (step["clicked"] and step["shows"])]
    if not any(f"run_uuid={parent_id}" in src for src, *_ in report["overlay_shown"]):
        found.append("no full-size sweep_overlay image of the sweep's parent run")
    return found


if __name__ == "__main__":
    sys.exit(main())
