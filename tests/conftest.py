"""Fixtures for every test: a hermetic environment, and one real ``mlflow server`` per session.

The README's ``python -m pytest -q`` is the fast loop (pyproject's addopts deselect the tests
marked slow); ``python -m pytest -q -m slow`` runs the slow end-to-end tests.
"""

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # tests never need a display
# One torch thread here and in the processes tests start: on 2 cores shared with an mlflow
# server and other jobs, OpenMP's spinning threads oversubscribe them (an MLP range test of 66
# steps took 11 s with 2 threads under load, 0.4 s with 1). Nothing tested depends on it.
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # noqa: E402 - after OMP_NUM_THREADS

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
# What the app and MLflow write into a working dir (.gitignore lists them): a test that ran with
# the repository as its working dir leaves them there.
APP_LEFTOVERS = ("outputs", "mlflow.db", "mlflow.db.lock", "mlruns", "mlartifacts", "result.jpg",
                 "compare_runs.png")
FROM_THE_SHELL = re.compile(r"^(MLFLOW_|HYDRA_)")  # settings of the caller's, not the test's


def _app_leftovers() -> set[str]:
    found = set()
    for name in APP_LEFTOVERS:
        path = ROOT / name
        found |= {str(p.relative_to(ROOT)) for p in [path, *(path.rglob("*") if path.is_dir()
                                                               else [])] if p.exists()}
    return found


@pytest.fixture(scope="session", autouse=True)
def _repo_stays_clean():
    before = _app_leftovers()
    yield
    written = sorted(_app_leftovers() - before)
    assert not written, f"tests wrote into the repository: {written[:10]}"


@pytest.fixture(autouse=True)
def hermetic(tmp_path):
    """Each test runs in its tmp_path (Hydra's outputs/ and MLflow's default store land there),
    without MLFLOW_* or HYDRA_* settings from the shell, and leaves no process-wide state
    behind: environment variables the code under test set, signal handlers, root log handlers,
    torch's thread count, Hydra's singletons, lrexp's per-process flags."""
    from app_runs import reset_process_state

    environ = dict(os.environ)
    for name in list(os.environ):
        if FROM_THE_SHELL.match(name):
            del os.environ[name]
    os.environ["MPLBACKEND"] = "Agg"  # also for subprocesses
    started_in = os.getcwd()
    os.chdir(tmp_path)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    reset_process_state()
    yield
    reset_process_state()
    torch.set_num_threads(threads)  # the runner sets it under the joblib launcher
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    root = logging.getLogger()
    for handler in root.handlers[:]:  # pytest's own handlers come and go with each phase
        if not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
            handler.close()
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(started_in)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


# -- one mlflow server and one SQLite store for the session -------------------------------------
# Both take seconds to create (imports, schema migrations): once the selection is known, any the
# selected tests need are started in processes of their own while the first tests run. The
# store is migrated once: the server's backend starts as a copy of it (MLflow migrates an empty
# database from scratch, about 2.5 s of CPU, and only checks the schema of a migrated one).
SERVER_FIXTURE, STORE_FIXTURE = "mlflow_server_uri", "shared_sqlite_uri"
PRISTINE = "pristine.db"  # the shared store as made, for tests that want a fresh default store
_server = None
_server_starting: threading.Thread | None = None
_store: tuple[Path, subprocess.Popen] | None = None
# argv: the store to make, then the copies to leave of it before any test writes to it
MAKE_STORE = "import shutil, sys; from mlflow.tracking import MlflowClient; " \
             "MlflowClient(f'sqlite:///{sys.argv[1]}').search_experiments(); " \
             "[shutil.copy(sys.argv[1], copy) for copy in sys.argv[2:]]"


def pytest_collection_modifyitems(session, config, items):
    # tests that use the session's store or server run last: by then the processes that make
    # them in the background (below) are done, and no test waits for them
    items.sort(key=lambda item: bool({SERVER_FIXTURE, STORE_FIXTURE}
                                     & set(getattr(item, "fixturenames", ()))))


def pytest_collection_finish(session):
    global _server, _server_starting, _store
    if session.config.option.collectonly:
        return
    needed = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if not {STORE_FIXTURE, SERVER_FIXTURE} & needed:
        return
    folder = Path(tempfile.mkdtemp(prefix="lrexp-sqlite-store-"))
    copies = [folder / PRISTINE]
    if SERVER_FIXTURE in needed:
        from mlflow_server import MlflowServer

        workdir = Path(tempfile.mkdtemp(prefix="lrexp-mlflow-server-"))
        copies.append(workdir / "server.db")
        _server = MlflowServer(workdir, backend_uri=f"sqlite:///{workdir / 'server.db'}")
    # cwd: MLflow resolves the store's artifact root (./mlruns) against it
    maker = subprocess.Popen(
        [sys.executable, "-c", MAKE_STORE, str(folder / "mlflow.db"), *map(str, copies)],
        cwd=folder, env={k: v for k, v in os.environ.items() if not FROM_THE_SHELL.match(k)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _store = folder, maker
    if _server is not None:  # started once its database is there (or never, if making failed)
        server = _server
        _server_starting = threading.Thread(
            target=lambda: _wait_for(maker) == 0 and server.start(), daemon=True)
        _server_starting.start()


def _wait_for(process: subprocess.Popen) -> int:
    """``process``'s exit code, polled: the main thread may be reading its output meanwhile."""
    while process.poll() is None:
        time.sleep(0.05)
    return process.returncode


def pytest_sessionfinish(session):
    if _store is not None:  # first: a maker still running holds up the server's start
        _store[1].kill()
        _store[1].wait()
    if _server_starting is not None:
        _server_starting.join()
    if _server is not None:
        _server.stop()
        shutil.rmtree(_server.workdir, ignore_errors=True)
    if _store is not None:
        shutil.rmtree(_store[0], ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server_uri() -> str:
    """A real ``mlflow server`` (SQLite backend, proxied artifacts) shared by the session's
    tests; each test keeps to an experiment of its own (``experiment_name``)."""
    if _server is None or _server_starting is None:  # e.g. requested through getfixturevalue
        pytest.fail("the shared mlflow server was not started at collection")
    _server_starting.join()
    if _server.proc is None:
        _, error = _store[1].communicate()
        pytest.fail(f"making the shared mlflow server's store failed:\n{error}")
    return _server.wait_ready()


@pytest.fixture(scope="session")
def shared_sqlite_uri() -> str:
    """A real SQLite store shared by the session's tests, each in an experiment of its own."""
    if _store is None:
        pytest.fail("the shared SQLite store was not made at collection")
    folder, maker = _store
    _, error = maker.communicate(timeout=180)
    assert maker.returncode == 0, f"making the shared SQLite store failed:\n{error}"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # MLflow keeps one store object per URI in a process, its artifact root resolved against
    # the working dir it was made in: make this process's there too, not in the repository
    from mlflow.tracking import MlflowClient

    started_in = os.getcwd()
    os.chdir(folder)
    try:
        MlflowClient(uri).search_experiments()
    finally:
        os.chdir(started_in)
    return uri


@pytest.fixture
def default_store(tmp_path, shared_sqlite_uri) -> Path:
    """MLflow's default store (``./mlflow.db``) in the test's working dir, migrated but empty, as
    a first run finds it once MLflow made it: a copy of the session's fresh store, made before
    anything was written to it (migrating a new store costs seconds). Tests of a store's first
    creation leave this fixture out."""
    shutil.copy(_store[0] / PRISTINE, tmp_path / "mlflow.db")
    return tmp_path / "mlflow.db"


@pytest.fixture
def experiment_name(request) -> str:
    """An experiment name no other test (nor an earlier session on the same store) uses."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', request.node.name)[:60]}-{uuid.uuid4().hex[:8]}"
