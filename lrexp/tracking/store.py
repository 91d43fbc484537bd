"""The tracking store before MLflow touches it: which URI, whether it answers, whether a SQLite
file is usable, one process at a time creating it, and retries while it is busy."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from lrexp.tracking.redaction import first_line

__all__ = ["resolve_tracking_uri", "server_reachable", "sqlite_creation_lock",
           "sqlite_store_problem", "transient", "with_retries"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri``, else MLFLOW_TRACKING_URI, else MLflow's default store (sqlite:///mlflow.db),
    with a relative SQLite path made absolute so every job of a sweep writes the same file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    path = _sqlite_path(uri)
    return uri if path is None or path.is_absolute() else f"sqlite:///{path.resolve()}"


# Database stores MLflow reaches over the network, by URI scheme, and their default ports.
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def server_reachable(uri: str, timeout_s: float) -> bool:
    """Does an http(s) store's health endpoint answer, or a database server's port accept a
    connection, within ``timeout_s``? (MLflow itself retries for a minute.) Credentials go as
    basic auth, as MLflow's client sends them: urllib would not take them inside the URL."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme not in DATABASE_PORTS and not uri.startswith(("http://", "https://")):
        return True
    parts = urllib.parse.urlsplit(uri)
    if scheme in DATABASE_PORTS:
        try:
            address = (parts.hostname or "localhost", parts.port or DATABASE_PORTS[scheme])
            with socket.create_connection(address, timeout=timeout_s):
                return True
        except (OSError, ValueError):  # refused, unreachable, silent, or a malformed port
            return False
    user = urllib.parse.unquote(parts.username or os.environ.get("MLFLOW_TRACKING_USERNAME", ""))
    password = urllib.parse.unquote(parts.password or
                                    os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    host = parts.netloc.rsplit("@", 1)[-1]
    request = urllib.request.Request(
        urllib.parse.urlunsplit(parts._replace(netloc=host)).rstrip("/") + "/health")
    if user or password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def _sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def sqlite_store_problem(uri: str, reading: bool = False) -> str | None:
    """Why a SQLite store cannot be used (MLflow would retry for minutes on a folder or a
    corrupt file), or None; one only ``reading`` must exist and hold something."""
    path = _sqlite_path(uri)
    if path is None or not (path.exists() or reading):
        return None
    if not path.exists():
        return f"there is no SQLite store at {path}"
    if not path.is_file():
        return f"the SQLite store {path} is not a file (a folder?)"
    with path.open("rb") as handle:
        header = handle.read(16)
    if not header and reading:
        return f"the SQLite store {path} is empty (no runs were ever recorded in it)"
    if header and header != b"SQLite format 3\x00":
        return (f"the SQLite store {path} is not an SQLite database (corrupt, or another kind "
                "of file)")
    return None


@contextlib.contextmanager
def sqlite_creation_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a SQLite store while MLflow opens (creates, migrates) it."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def with_retries(
    call: Callable[[], T], what: str, attempts: int = 6, first_wait_s: float = 0.2,
    window_s: float | None = None,
) -> T:
    """Run a store call, retrying with exponential backoff on errors that may pass (a locked
    SQLite file, a busy server); the last error propagates. With ``window_s``, retries go on
    for that many seconds instead of ``attempts`` times."""
    started = time.monotonic()
    for attempt in range(attempts if window_s is None else 1_000_000):
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - MLflow raises many types for a busy store
            wait = first_wait_s * 2**attempt
            left = None if window_s is None else window_s - (time.monotonic() - started)
            if left is not None:
                wait = min(wait, left)
            last = attempt == attempts - 1 if left is None else left <= 0
            if not transient(error) or last:
                raise
            # INFO: how often a busy store makes jobs wait is worth seeing
            log.info("MLflow store busy during %s (%s); retry %d%s in %.1f s", what,
                     first_line(error)[:300], attempt + 1,
                     f" of {attempts - 1}" if window_s is None else "", wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


# What a store that may answer again says (SQLite, requests and urllib3 as MLflow passes them on)
TRANSIENT_MARKERS = ("locked", "busy", "timed out", "timeout", "connection refused",
                     "connection reset", "connection aborted", "max retries exceeded",
                     "remote end closed", "temporarily unavailable", "error code 502",
                     "error code 503", "error code 504")


def transient(error: BaseException) -> bool:
    """May the store call that raised ``error`` succeed if tried again?"""
    text = str(error).lower()
    return isinstance(error, (ConnectionError, TimeoutError)) or \
        any(marker in text for marker in TRANSIENT_MARKERS)
