"""Where results go besides the run dir: MLflow, or nowhere (``tracking.enabled=false``).

``MlflowTracker`` talks to MLflow through ``MlflowClient`` only (no global active run, so it is
safe in joblib/submitit workers and never exports MLFLOW_RUN_ID). Steps are buffered in memory
and sent in ``log_batch`` chunks at the end (and every ``flush_every`` steps when asked), so the
training loop never waits on the store. Store calls are retried with backoff (SQLite writers of
a parallel sweep wait on each other's lock); a store that cannot be reached turns into a warning,
never a failed test: the run dir keeps everything, and
``python -m lrexp.tracking.import_run <dir>`` sends it later.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = ["MlflowTracker", "NullTracker", "Tracker", "flatten", "make_tracker", "redact",
           "redact_file",
           "resolve_tracking_uri"]

log = logging.getLogger(__name__)

# MLflow's limits for one log_batch call and for param values (mlflow.utils.validation).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE_LENGTH = 6000
TRUNCATION_MARKER = "...[truncated]"
PARENT_RUN_FILE = "mlflow_parent_run_id"  # written into a sweep dir by lrexp.sweep.callbacks
CONFIDENCE_SCORES = {"none": 0, "low": 1, "high": 2}  # the metric suggestion_confidence
# Which process owns a run, so a later lrexp run on the same host can close it if that
# process died without closing it (see MlflowTracker._close_orphans).
OWNER_HOST_TAG, OWNER_PID_TAG = "lrexp.host", "lrexp.pid"

T = TypeVar("T")


class Tracker(Protocol):
    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        ...

    def log_step(self, step: int, lr: float, loss: float) -> None:
        ...

    def finish(self, *, status: str, result: Any = None, summary: Mapping[str, Any] | None = None,
               files: Mapping[str, Path] | None = None, out_dir: Path | None = None) -> None:
        ...


class NullTracker:
    """Records nothing; the run dir still holds the curve, plot and config."""

    def start(self, run_name, params, tags) -> None:
        pass

    def log_step(self, step, lr, loss) -> None:
        pass

    def finish(self, *, status, result=None, summary=None, files=None, out_dir=None) -> None:
        pass


def resolve_tracking_uri(uri: str | None, base_dir: Path | None = None) -> str:
    """``uri``, else MLFLOW_TRACKING_URI, else MLflow's default store (sqlite:///mlflow.db),
    with a relative SQLite path made absolute so every job of a sweep writes the same file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = (base_dir or Path.cwd()) / uri[len(prefix):]
        uri = prefix + str(path.resolve())
    return uri


def make_tracker(settings: Any, parent_run_id: str | None = None) -> Tracker:
    """A tracker for the ``tracking`` config (enabled, uri, experiment, flush_every, timeout_s)."""
    if not settings.enabled:
        return NullTracker()
    return MlflowTracker(
        uri=resolve_tracking_uri(settings.uri),
        experiment=settings.experiment,
        flush_every=settings.flush_every,
        timeout_s=settings.timeout_s,
        parent_run_id=parent_run_id,
    )


# scheme://user:password@host -> scheme://***@host
# the whole authority up to its last @ (a password may hold one), stopping where a URI ends
_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s\"'@]*(?:@[^/?#\s\"'@]*)*@")


def redact(text: str) -> str:
    """``text`` with the credentials of every URI in it replaced by ``***``: for anything lrexp
    writes (console, log, config.yaml, MLflow params and tags)."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def redact_file(path: Path) -> None:
    """Rewrite a text file lrexp did not write itself (Hydra's records) with ``redact``."""
    text = path.read_text()
    if redact(text) != text:
        path.write_text(redact(text))


class RedactingFilter(logging.Filter):
    """Redacts URI credentials in every record a handler writes, whoever logged it (Hydra's
    launchers log each job's overrides, a tracking.uri with a password among them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if redact(message) != message:
            record.msg, record.args = redact(message), None
        return True


def redact_logs() -> None:
    """Put a RedactingFilter on the root logger's handlers (those Hydra set up)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def server_reachable(uri: str, timeout_s: float) -> bool:
    """For http(s) stores: does the server answer its health endpoint within ``timeout_s``?
    Credentials in the URI (or MLFLOW_TRACKING_USERNAME / _PASSWORD) go as basic auth, as
    MLflow's own client sends them; urllib would not accept them inside the URL."""
    if not uri.startswith(("http://", "https://")):
        return True
    parts = urllib.parse.urlsplit(uri)
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


def sqlite_store_problem(uri: str) -> str | None:
    """Why a SQLite store cannot be used, found in microseconds (MLflow itself would retry
    for minutes on a folder or a corrupt file), or None."""
    path = _sqlite_path(uri)
    if path is None or not path.exists():
        return None
    if not path.is_file():
        return (f"the SQLite store {path} is not a file (a folder?); move it away or set "
                "tracking.uri")
    with path.open("rb") as handle:
        header = handle.read(16)
    if header and header != b"SQLite format 3\x00":
        return (f"the SQLite store {path} is not an SQLite database (corrupt or another kind of "
                "file); move it away or set tracking.uri")
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
    call: Callable[[], T], what: str, attempts: int = 6, first_wait_s: float = 0.2
) -> T:
    """Run a store call, retrying with exponential backoff on errors that may pass (a locked
    SQLite file, a busy server); the last error propagates."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - MLflow raises many types for a busy store
            transient = "locked" in str(error).lower() or "busy" in str(error).lower() or \
                isinstance(error, (ConnectionError, TimeoutError))
            if not transient or attempt == attempts - 1:
                raise
            wait = first_wait_s * 2**attempt
            # INFO, not DEBUG: how often a busy store makes jobs wait is worth seeing in the log
            log.info("MLflow store busy during %s (%s); retry %d of %d in %.1f s",
                     what, error, attempt + 1, attempts - 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def git_commit(directory: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
                             text=True, timeout=2, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"net": {"name": "vgg16"}} -> {"net.name": "vgg16"}: MLflow params are flat."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def truncate_param(value: Any) -> str:
    text = str(value)
    if len(text) <= MAX_PARAM_VALUE_LENGTH:
        return text
    return text[: MAX_PARAM_VALUE_LENGTH - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def _summary_metrics(summary: Mapping[str, Any]) -> list:
    """The run's summary metrics; the verify probes as series over the probe index."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    values = {
        "suggested_lr": summary.get("suggested_lr"),
        "min_loss": summary.get("min_loss"),
        "lr_at_min_loss": summary.get("lr_at_min_loss"),
        "diverged_lr": summary.get("diverged_lr"),
        **{f"suggested_lr_{name}": lr for name, lr in summary.get("suggestions", {}).items()
           if name != "default"},
        # a number, so the UI can chart and sort runs by it
        "suggestion_confidence": CONFIDENCE_SCORES.get(summary.get("confidence")),
    }
    if summary.get("interval"):
        values["suggested_lr_low"], values["suggested_lr_high"] = summary["interval"]
    verification = summary.get("verification") or {}
    values["verify_seconds"] = verification.get("seconds")
    metrics = [Metric(key, float(value), stamp, 0) for key, value in values.items()
               if value is not None and math.isfinite(value)]
    for index, probe in enumerate(verification.get("probes", [])):
        metrics.append(Metric("verify_probe_lr", float(probe["lr"]), stamp, index))
        if probe["loss"] is not None:
            metrics.append(Metric("verify_probe_loss", float(probe["loss"]), stamp, index))
    return metrics


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class MlflowTracker:
    """One MLflow run per range test; see the module docstring."""

    def __init__(self, uri: str, experiment: str = "lrexp", flush_every: int = 0,
                 timeout_s: float = 5.0, parent_run_id: str | None = None) -> None:
        self.uri = uri
        self.experiment = experiment
        self.flush_every = flush_every
        self.timeout_s = timeout_s
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None
        self.usable = True  # False once the store proved unreachable: keep going, locally
        self._steps: list[tuple[int, float, float, int]] = []  # step, lr, loss, timestamp ms
        self._sent = 0
        self._client = None
        self._experiment_id: str | None = None

    # -- life cycle --------------------------------------------------------------------------
    def _connect(self) -> bool:
        """Client and experiment, once; False (with one warning) when the store is unusable."""
        if self._client is not None:
            return True
        if not self.usable:
            return False
        if not server_reachable(self.uri, self.timeout_s):
            self._give_up(f"the tracking server {self.uri} did not answer within "
                          f"{self.timeout_s:g} s")
            return False
        problem = sqlite_store_problem(self.uri)
        if problem:
            self._give_up(problem)
            return False
        # Fail fast on a server that goes away mid-run instead of MLflow's minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(self.timeout_s))))
        from mlflow.tracking import MlflowClient

        # MLflow creates and migrates a new SQLite store on first use; two runs doing that at
        # once collide ("table _alembic_tmp_experiments already exists"), so one at a time.
        with sqlite_creation_lock(self.uri):
            client = MlflowClient(tracking_uri=self.uri)
            self._client = client
            self._experiment_id = with_retries(self._get_or_create_experiment,
                                               "get experiment")
        return True

    def _create_run(self, run_name: str, tags: Mapping[str, Any]) -> str:
        self._close_orphans()
        owner = {OWNER_HOST_TAG: socket.gethostname(), OWNER_PID_TAG: str(os.getpid())}
        run = with_retries(lambda: self._client.create_run(
            self._experiment_id, run_name=run_name,
            tags={**owner, **{key: redact(str(value)) for key, value in tags.items()}}),
            "create run")
        return run.info.run_id

    def _end_run(self, run_id: str, status: str) -> None:
        """set_terminated; MLflow then prints links to the run built from the URI, so with
        credentials in the URI that printout is redacted on its way to the console."""
        if redact(self.uri) == self.uri:
            self._client.set_terminated(run_id, status)
            return
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                self._client.set_terminated(run_id, status)
        finally:
            sys.stdout.write(redact(printed.getvalue()))

    def _close_orphans(self) -> None:
        """Close (KILLED) this host's RUNNING runs whose lrexp process is gone: a process
        killed outright (kill -9, out of memory) cannot close its own run. Runs of other hosts
        are left alone: their processes cannot be checked from here."""
        host = socket.gethostname().replace("'", "")
        try:
            running = self._client.search_runs(
                [self._experiment_id], f"attributes.status = 'RUNNING' and "
                f"tags.`{OWNER_HOST_TAG}` = '{host}'", max_results=200)
        except Exception as error:  # noqa: BLE001 - housekeeping must never stop a run
            log.debug("Looking for orphaned runs failed: %s", error)
            return
        for run in running:
            pid = run.data.tags.get(OWNER_PID_TAG, "")
            if not pid.isdigit() or _process_alive(int(pid)):
                continue
            try:
                self._client.set_tag(run.info.run_id, "status", "KILLED")
                self._end_run(run.info.run_id, "KILLED")
                log.info("Closed MLflow run %s (KILLED): its process %s is gone",
                         run.info.run_id, pid)
            except Exception as error:  # noqa: BLE001 - e.g. another user's run on a server
                log.debug("Could not close orphaned run %s: %s", run.info.run_id, error)

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        try:
            if not self._connect():
                return
            from mlflow.entities import Param

            run_tags = {**tags, "status": "RUNNING"}
            if self.parent_run_id:
                run_tags["mlflow.parentRunId"] = self.parent_run_id
            commit = git_commit()
            if commit:
                run_tags["mlflow.source.git.commit"] = commit
            self.run_id = self._create_run(run_name, run_tags)
            param_list = [Param(str(k)[:250], truncate_param(redact(str(v))))
                          for k, v in params.items()]
            for chunk in _chunks(param_list, MAX_PARAMS_PER_BATCH):
                with_retries(lambda c=chunk: self._client.log_batch(self.run_id, params=c),
                             "log params")
        except Exception as error:  # noqa: BLE001 - tracking must never fail the test
            self._give_up(f"MLflow at {self.uri} failed: {error}")

    # -- sweeps: the parent run ------------------------------------------------------------------
    def open_parent(self, run_name: str, tags: Mapping[str, str]) -> str | None:
        """Create a sweep's parent run; its id, or None when the store is unusable."""
        try:
            return self._create_run(run_name, tags) if self._connect() else None
        except Exception as error:  # noqa: BLE001
            self._give_up(f"creating the sweep's parent run at {self.uri} failed: {error}")
            return None

    def close_parent(self, run_id: str, rows: list[dict[str, Any]], files: list[Path],
                     status: str) -> None:
        """Attach the sweep summary (a table and its files) to the parent and end it."""
        try:
            if not self._connect():
                return
            columns = list(rows[0]) if rows else []
            table = {column: [row.get(column) for row in rows] for column in columns}
            with_retries(lambda: self._client.log_table(run_id, table, "sweep_summary.json"),
                         "log table")
            for path in files:
                with_retries(lambda p=path: self._client.log_artifact(run_id, str(p)),
                             "log artifact")
            with_retries(lambda: self._client.set_tag(run_id, "status", status), "tag")
            with_retries(lambda: self._end_run(run_id, status), "end run")
        except Exception as error:  # noqa: BLE001
            self._give_up(f"closing the sweep's parent run at {self.uri} failed: {error}")

    # -- one run's curve -----------------------------------------------------------------------
    def log_step(self, step: int, lr: float, loss: float) -> None:
        self._steps.append((step, lr, loss, int(time.time() * 1000)))
        if self.flush_every and len(self._steps) - self._sent >= self.flush_every:
            self._send_steps()

    def finish(self, *, status: str, result: Any = None,
               summary: Mapping[str, Any] | None = None,
               files: Mapping[str, Path] | None = None, out_dir: Path | None = None) -> None:
        if not self.usable or self.run_id is None:
            self._hint_import(out_dir)
            return
        try:
            self._send_steps()
            if result is not None:
                self._send_smoothed(result)
            self._send_summary(summary or {}, status)
            for path in (files or {}).values():
                if Path(path).exists():
                    with_retries(lambda p=path: self._client.log_artifact(self.run_id, str(p)),
                                 "log artifact")
            if out_dir is not None:
                self._send_run_dir_extras(Path(out_dir))
            with_retries(lambda: self._end_run(self.run_id, status), "end run")
        except KeyboardInterrupt:
            # Ctrl-C while sending: close the run (the steps went first) rather than leave it
            # RUNNING, then let the interrupt go on
            with contextlib.suppress(Exception):
                self._end_run(self.run_id, "KILLED")
            raise
        except Exception as error:  # noqa: BLE001
            self._give_up(f"sending the run to MLflow at {self.uri} failed: {error}")
            self._hint_import(out_dir)

    # -- pieces --------------------------------------------------------------------------------
    def _get_or_create_experiment(self) -> str:
        found = self._client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self._client.create_experiment(self.experiment)
        except Exception:  # noqa: BLE001 - a parallel job may have created it just now
            found = self._client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _log_metrics(self, metrics: list) -> None:
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            with_retries(lambda c=chunk: self._client.log_batch(self.run_id, metrics=c),
                         "log metrics")

    def _send_steps(self) -> None:
        from mlflow.entities import Metric

        pending = self._steps[self._sent:]
        if not pending or self.run_id is None or not self.usable:
            return
        metrics = []
        for step, lr, loss, stamp in pending:
            metrics += [Metric("lr", lr, stamp, step), Metric("loss", loss, stamp, step)]
        self._log_metrics(metrics)
        self._sent = len(self._steps)

    def _send_smoothed(self, result: Any) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._log_metrics([Metric("loss_smooth", float(value), stamp, step)
                           for step, value in enumerate(result.smoothed)])

    def _send_summary(self, summary: Mapping[str, Any], status: str) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag("status", str(summary.get("status", status))),
                RunTag("default_method", str(summary.get("default_method", ""))),
                RunTag("confidence", str(summary.get("confidence"))),
                RunTag("confidence_reason", str(summary.get("confidence_reason", ""))[:5000])]
        metrics = _summary_metrics(summary)
        with_retries(lambda: self._client.log_batch(self.run_id, metrics=metrics, tags=tags),
                     "log summary")

    def _send_run_dir_extras(self, out_dir: Path) -> None:
        hydra_dir = out_dir / ".hydra"
        if hydra_dir.is_dir():
            with_retries(lambda: self._client.log_artifacts(self.run_id, str(hydra_dir),
                                                            ".hydra"), "log .hydra")
        for log_file in out_dir.glob("*.log"):
            with_retries(lambda p=log_file: self._client.log_artifact(self.run_id, str(p)),
                         "log run log")

    def _give_up(self, why: str) -> None:
        if self.usable:
            first_line = redact(str(why)).strip().splitlines()[0]  # not SQLAlchemy's essay
            log.warning("Tracking disabled for this run: %s. The test goes on; its curve, plot "
                        "and config stay in the run dir.", first_line)
        self.usable = False

    def _hint_import(self, out_dir: Path | None) -> None:
        if out_dir is not None and not self.usable:
            log.warning("To send this run to MLflow later: python -m lrexp.tracking.import_run %s",
                        out_dir)
