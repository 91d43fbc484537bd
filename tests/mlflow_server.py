"""A real ``mlflow server`` on 127.0.0.1 for tests: started as a subprocess, stopped after.

One server serves a whole test session (``conftest.mlflow_server_uri``; tests keep apart by
experiment name); a test that stops or restarts a server, or needs another backend, starts its
own with ``mlflow_server``.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The server runs under this watchdog, the leader of its own process group: if the test process
# dies without stopping it (killed by a timeout, say), the whole group goes down within a second.
WATCHDOG = """
import os, signal, subprocess, sys, time
server = subprocess.Popen(sys.argv[2:])
while server.poll() is None and os.getppid() == int(sys.argv[1]):
    time.sleep(1)
os.killpg(0, signal.SIGTERM)
"""


class MlflowServer:
    """``start`` returns at once (the server imports for seconds); ``wait_ready`` polls its
    health endpoint until it answers; the backend defaults to a SQLite file in ``workdir``."""

    def __init__(self, workdir: Path, backend_uri: str | None = None, port: int | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.backend_uri = backend_uri or f"sqlite:///{self.workdir / 'server.db'}"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MlflowServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # the huey job runner (for GenAI jobs) is nothing these tests use: fewer processes
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", WATCHDOG, str(os.getpid()),
                 sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
                 str(self.port), "--backend-store-uri", self.backend_uri, "--workers", "1"],
                cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # stop() ends the group: watchdog, server, its uvicorn
        return self

    def wait_ready(self, timeout_s: float = 180) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=1) as response:
                    if response.status == 200:
                        return self.uri
            except OSError:
                pass
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"mlflow server did not start; its log:\n{log[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        import signal

        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextmanager
def mlflow_server(workdir: Path, backend_uri: str | None = None, port: int | None = None):
    """A server of the test's own; yields its URI once it answers."""
    server = MlflowServer(workdir, backend_uri, port).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()
