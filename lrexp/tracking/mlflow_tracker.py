"""Where one run's results go besides the run dir: MLflow (``MlflowTracker``), or nowhere
(``NullTracker``). Only ``MlflowClient`` is used (no global active run: safe in joblib and
submitit workers); steps are buffered and sent in ``log_batch`` chunks; a store that fails costs
one warning, never the test. ``MlflowStore`` serves a run and a sweep's parent run alike.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lrexp.engine.interrupts import released
from lrexp.run.files import PLOT_FILE
from lrexp.run.life import FAILED, KILLED
from lrexp.run.summary import RunSummary
from lrexp.tracking.defaults import DEFAULT_EXPERIMENT, DEFAULT_FLUSH_EVERY, DEFAULT_TIMEOUT_S
from lrexp.tracking.redaction import first_line, redact
from lrexp.tracking.store import (
    resolve_tracking_uri,
    server_reachable,
    sqlite_creation_lock,
    sqlite_store_problem,
    with_retries,
)

__all__ = ["MlflowStore", "MlflowTracker", "NullTracker", "RunLogger", "TrackedOutcome",
           "flatten", "median_band_series", "name_refused", "repeat_loss_key",
           "repeat_loss_series"]

log = logging.getLogger(__name__)

# MLflow's limits for one log_batch call and for param values (mlflow.utils.validation).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE_LENGTH = 6000
TRUNCATION_MARKER = "...[truncated]"
# The process that trains a run (not its sidecar): close_orphans waits until it is gone.
OWNER_HOST_TAG, OWNER_PID_TAG = "lrexp.host", "lrexp.pid"
# A run whose records could not all be sent (its run dir has them): import_run sends it again.
INCOMPLETE_TAG = "lrexp.incomplete"
TRACKING_DISABLED = ("Tracking disabled for this run: %s. The test goes on; its curve, plot and "
                     "config stay in the run dir.")
# MLflow 3's UI opens an experiment in its model-training view with this tag (else GenAI's).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# Images logged under a key appear in the UI's chart view, one tile per selected run.
CURVE_IMAGE_KEY = "lr_range_test"
# How many tracking.timeout_s a store that stops answering mid-run is retried for.
RETRY_TIMEOUTS = 6

T = TypeVar("T")


@dataclass(frozen=True)
class TrackedOutcome:
    """What reached the store: the run (None: none was made), how many steps of the curve it
    holds, how it was closed (None: it is still open), and why tracking stopped, if it did."""

    uri: str
    run_id: str | None
    steps: int | None  # None: not known (a tracking process that never answered)
    status: str | None
    problem: str | None = None

    def describe(self, recorded: int) -> str:
        """One clause for the console: ``recorded`` steps were taken by the test."""
        if self.run_id is None:
            return f"MLflow holds no run ({self.problem or 'none was opened'})"
        held = (f"an unknown number of the {recorded}" if self.steps is None
                else f"all {recorded}" if self.steps >= recorded
                else f"{self.steps} of {recorded}")
        where = f"MLflow run {self.run_id} at {redact(self.uri)}"
        if self.status is None:
            return f"{where} stays RUNNING with {held} steps ({self.problem or 'not closed'})"
        return f"{where} holds {held} steps, closed {self.status}"


class RunLogger:
    """What the runner calls, recording nothing (MlflowTracker and SidecarTracker override it)."""

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        pass

    def log_step(self, step: int, lr: float, loss: float) -> None:
        self.log_values(step, {"lr": lr, "loss": loss})

    def log_values(self, step: int, values: Mapping[str, float]) -> None:
        """Named series besides lr and loss (``repeat_loss_series``, ``median_band_series``)."""

    def finish(self, *, status: str, result: Any = None, summary: RunSummary | None = None,
               files: Mapping[str, Path] | None = None, out_dir: Path | None = None) -> None:
        pass

    def close(self) -> None:
        """Let go of a run that ended before ``finish`` (a config mistake): it ends KILLED."""

    def outcome(self) -> TrackedOutcome | None:
        """What reached the store so far; None where nothing is tracked."""
        return None


class NullTracker(RunLogger):
    """Records nothing; takes (and ignores) the tracking settings, as every logger does."""

    def __init__(self, **settings: Any) -> None:
        pass


def git_commit_tag() -> dict[str, str]:
    """The tag naming the git commit this process runs in; none outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=2, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    commit = out.stdout.strip()
    return {"mlflow.source.git.commit": commit} if commit else {}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"net": {"name": "vgg16"}} -> {"net.name": "vgg16"}: MLflow params are flat."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def name_refused(name: str, param: bool) -> bool:
    """Whether MLflow refuses ``name`` as a param (else a metric) key, by its own (private,
    platform-dependent) rule: tests/test_import_run.py fails loudly when it moves."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name

    try:
        (_validate_param_name if param else _validate_metric_name)(name)
    except MlflowException:
        return True
    return False


def truncate_param(value: Any) -> str:
    text, cut = str(value), MAX_PARAM_VALUE_LENGTH - len(TRUNCATION_MARKER)
    return text if len(text) <= MAX_PARAM_VALUE_LENGTH else text[:cut] + TRUNCATION_MARKER


def repeat_loss_key(repeat: int) -> str:
    """The series of repeat ``repeat``'s own losses in a repeated test's run."""
    return f"loss_repeat_{repeat}"


def repeat_loss_series(result: Any) -> Iterator[tuple[int, dict[str, float]]]:
    """Each repeat's own losses as ``loss_repeat_<i>``, one step per point of the shared LR
    grid, with ``lr`` along the longest repeat (the runner streams the same as the test runs)."""
    grid = max((repeat.lrs for repeat in result.repeats), key=len)
    for step in range(len(grid)):
        yield step, {"lr": float(grid[step]), **{
            repeat_loss_key(index): float(repeat.losses[step])
            for index, repeat in enumerate(result.repeats) if step < len(repeat)}}


def median_band_series(result: Any) -> Iterator[tuple[int, dict[str, float]]]:
    """A repeated test's median curve as ``loss`` with its band ``loss_q25``/``loss_q75``; a
    quartile that is not finite is left out (interpolated, and it would flatten the chart)."""
    band = result.band
    for step, loss in enumerate(result.losses):
        quartiles = {"loss_q25": float(band.q25[step]), "loss_q75": float(band.q75[step])}
        yield step, {"loss": float(loss), **{name: value for name, value in quartiles.items()
                                             if math.isfinite(value)}}


def _summary_points(summary: RunSummary) -> list[tuple[str, float, int]]:
    """The run's summary metrics; the verify probes as series over the probe index."""
    points = [(key, value, 0) for key, value in summary.metrics().items()]
    probes = summary.verification.probes if summary.verification else []
    for index, probe in enumerate(probes):
        points.append(("verify_probe_lr", float(probe.lr), index))
        if probe.loss is not None:
            points.append(("verify_probe_loss", float(probe.loss), index))
    return points


@contextlib.contextmanager
def http_limits(timeout_s: float) -> Iterator[None]:
    """Each request waits ``timeout_s`` at most and is not retried by MLflow (whose retries
    take minutes; lrexp's have a deadline). Set around lrexp's own calls only; a user's wins."""
    limits = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout_s)))}
    added = [name for name in limits if name not in os.environ]
    os.environ.update({name: limits[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _process_alive(pid: int) -> bool:
    try:
        with contextlib.suppress(PermissionError):  # it exists, under another user
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    return True


def _attempt(restarts: str | None) -> int:
    """A ``slurm.restarts`` tag as a number (0 when missing or malformed)."""
    return int(restarts) if restarts and restarts.isdigit() else 0


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _now_ms() -> int:
    return int(time.time() * 1000)


def hint_import(out_dir: Path | None) -> None:
    """How to send a run that did not reach the store: its run dir has everything."""
    if out_dir is not None:
        log.warning("To send this run to MLflow later: python -m lrexp.tracking.import_run %s",
                    out_dir)


class MlflowStore:
    """One tracking store, opened on first use; an unusable one warns once, never raises."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.uri = resolve_tracking_uri(uri)
        self.experiment = experiment
        self.timeout_s = timeout_s
        self.usable = True  # False once the store proved unusable: the run goes on, locally
        self.problem: str | None = None  # why tracking stopped, if it did
        self.client: Any = None
        self.experiment_id: str | None = None

    def connect(self) -> bool:
        """Client and experiment, once; False (with one warning) when the store is unusable."""
        if self.client is not None:
            return True
        if not self.usable:
            return False
        if not server_reachable(self.uri, self.timeout_s):
            self.give_up(f"the tracking server {self.uri} did not answer within "
                         f"{self.timeout_s:g} s")
            return False
        problem = sqlite_store_problem(self.uri)
        if problem:
            self.give_up(f"{problem}; move it away or set tracking.uri")
            return False
        from mlflow.tracking import MlflowClient

        # two runs creating a new SQLite store at once collide (_alembic_tmp_experiments)
        with sqlite_creation_lock(self.uri):
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self.call(self._get_or_create_experiment, "get experiment")
        return True

    @contextlib.contextmanager
    def never_failing(self, doing: str) -> Iterator[None]:
        """Any error inside gives tracking up with one warning: tracking never fails a test."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - tracking must never fail the test
            self.give_up(f"{doing} at {self.uri} failed: {error}")

    def call(self, call: Any, what: str) -> Any:
        """One store call, retried for ``RETRY_TIMEOUTS`` x ``timeout_s`` while it is busy."""
        with http_limits(self.timeout_s):
            return with_retries(call, what, window_s=RETRY_TIMEOUTS * self.timeout_s)

    def create_run(self, run_name: str, tags: Mapping[str, Any]) -> str:
        """A new run owned by this process, unless ``tags`` name another (a sidecar's parent)."""
        self.close_orphans()
        owner = {OWNER_HOST_TAG: socket.gethostname(), OWNER_PID_TAG: str(os.getpid())}
        run = self.call(lambda: self.client.create_run(
            self.experiment_id, run_name=run_name,
            tags={**owner, **{key: redact(str(value)) for key, value in tags.items()}}),
            "create run")
        return str(run.info.run_id)

    def end_run(self, run_id: str, status: str) -> None:
        """set_terminated, its printout of the run's links (made from the URI) redacted."""
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                self.client.set_terminated(run_id, status)
        finally:
            sys.stdout.write(redact(printed.getvalue()))

    def close_incomplete(self, run_id: str, error: BaseException) -> bool:
        """After a failed send (a refusing artifact store, a full disk), one try to close the run
        FAILED and mark it incomplete (not RUNNING, not imported); whether that worked."""
        with contextlib.suppress(Exception), http_limits(self.timeout_s):
            reason = first_line(error)[:250]
            self.client.set_tag(run_id, INCOMPLETE_TAG, reason)
            self.end_run(run_id, FAILED)
            return True
        return False

    def close_orphans(self) -> None:
        """Close (KILLED) this host's RUNNING runs whose owner process is gone (kill -9, out
        of memory); another host's processes cannot be checked from here."""
        host = socket.gethostname().replace("'", "")
        try:
            running = self.client.search_runs(
                [self.experiment_id], f"attributes.status = 'RUNNING' and "
                f"tags.`{OWNER_HOST_TAG}` = '{host}'", max_results=200)
        except Exception as error:  # noqa: BLE001 - housekeeping must never stop a run
            log.debug("Looking for orphaned runs failed: %s", error)
            return
        for run in running:
            pid = run.data.tags.get(OWNER_PID_TAG, "")
            if not pid.isdigit() or _process_alive(int(pid)):
                continue
            try:
                self.client.set_tag(run.info.run_id, "status", KILLED)
                self.end_run(run.info.run_id, KILLED)
                log.info("Closed MLflow run %s (KILLED): its process %s is gone",
                         run.info.run_id, pid)
            except Exception as error:  # noqa: BLE001 - e.g. another user's run on a server
                log.debug("Could not close orphaned run %s: %s", run.info.run_id, error)

    def log_metrics(self, run_id: str, points: Iterable[tuple[Any, ...]]) -> None:
        """(name, value, step) points, each recorded now or at its own time ms, a 4th item;
        in chunks MLflow takes."""
        from mlflow.entities import Metric

        now = _now_ms()
        metrics = [Metric(name, float(value), stamp[0] if stamp else now, step)
                   for name, value, step, *stamp in points]
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            self.call(lambda c=chunk: self.client.log_batch(run_id, metrics=c), "log metrics")

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.call(lambda: self.client.log_batch(
            run_id, tags=[RunTag(key, value) for key, value in tags.items()]), "tag")

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.call(lambda: self.client.log_artifact(run_id, str(path), folder), "log artifact")

    def log_image(self, run_id: str, path: Path, key: str) -> None:
        """A PNG as a keyed MLflow image (the chart view's image tiles). Best effort: the file is
        already an artifact, and an imported run dir's plot may not be an image at all."""
        from PIL import Image

        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            log.warning("%s is not shown as an MLflow image: %s", path.name, error)
            return
        self.call(lambda: self.client.log_image(run_id, rgb, key=key, step=0), "log image")

    def page(self, run_id: str) -> str:
        """The run's page in the MLflow UI (a local store's as ``mlflow ui`` serves it)."""
        page = f"#/experiments/{self.experiment_id}/runs/{run_id}"
        if self.uri.startswith(("http://", "https://")):
            return f"{redact(self.uri).rstrip('/')}/{page}"
        return (f"http://127.0.0.1:5000/{page} (after `mlflow ui --backend-store-uri "
                f"{redact(self.uri)}`)")

    def give_up(self, why: str) -> None:
        if self.usable:
            self.problem = first_line(why)  # not SQLAlchemy's essay
            log.warning(TRACKING_DISABLED, self.problem)
        self.usable = False

    def _get_or_create_experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            try:
                return str(self.client.create_experiment(
                    self.experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}))
            except Exception:  # noqa: BLE001 - a parallel job may have created it just now
                found = self.client.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
        if EXPERIMENT_KIND_TAG not in found.tags:  # made by an older lrexp, or by hand
            self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                           EXPERIMENT_KIND)
        return str(found.experiment_id)


class MlflowTracker(MlflowStore, RunLogger):
    """One MLflow run per range test."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 flush_every: int = DEFAULT_FLUSH_EVERY, timeout_s: float = DEFAULT_TIMEOUT_S,
                 parent_run_id: str | None = None) -> None:
        super().__init__(uri, experiment, timeout_s)
        self.flush_every = flush_every
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None
        self._steps: list[tuple[int, dict[str, float], int]] = []  # step, values, time ms
        self._sent = 0
        self._finished = False
        self._run_tags: dict[str, str] = {}  # as the run was created with
        self._closed_status: str | None = None  # set once the store closed the run

    def prepare(self) -> None:
        """Open the store now (the sidecar, while its parent imports torch), not at ``start``."""
        with self.never_failing("MLflow"):
            self.connect()

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Open the run and send its params, here: MLflow's import in a thread races the test's."""
        with self.never_failing("MLflow"):
            if not self.connect():
                return
            from mlflow.entities import Param

            run_tags = {**tags, "status": "RUNNING"}
            if self.parent_run_id:
                run_tags["mlflow.parentRunId"] = self.parent_run_id
            run_tags.update(git_commit_tag())
            run_id = self.create_run(run_name, run_tags)
            self._run_tags = run_tags
            param_list = [Param(str(k)[:250], truncate_param(redact(str(v))))
                          for k, v in params.items()]
            for chunk in _chunks(param_list, MAX_PARAMS_PER_BATCH):
                self.call(lambda c=chunk: self.client.log_batch(run_id, params=c), "log params")
            self.run_id = run_id
            log.info("MLflow run %s opened in %s", run_id, redact(self.uri))

    def attach(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Go on with run ``run_id``, opened by a sidecar that died (MLflow drops a step sent
        twice, same time and value), and set ``tags`` on it."""
        with self.never_failing("MLflow"):
            if self.connect():
                self.set_tags(run_id, tags)
                self.run_id = run_id

    def close(self) -> None:
        """A run started and never finished: its buffered steps go, then it ends KILLED."""
        if not self._finished and self.usable and self.run_id is not None:
            self.finish(status=KILLED)

    def outcome(self) -> TrackedOutcome:
        sent = {step for step, _, _ in self._steps[:self._sent]}
        return TrackedOutcome(self.uri, self.run_id, len(sent), self._closed_status,
                              self.problem)

    def log_values(self, step: int, values: Mapping[str, float],
                   timestamp_ms: int | None = None) -> None:
        """Buffer one step (``timestamp_ms``: the training process's time, from a sidecar)."""
        self._steps.append((step, dict(values), _now_ms() if timestamp_ms is None
                            else timestamp_ms))
        if self.flush_every and len(self._steps) - self._sent >= self.flush_every:
            with released():  # the step is buffered: a stop may cut a slow store short
                self._send_steps()

    def finish(self, *, status: str, result: Any = None, summary: RunSummary | None = None,
               files: Mapping[str, Path] | None = None, out_dir: Path | None = None) -> None:
        self._finished = True
        if not self.usable or self.run_id is None:
            hint_import(out_dir if not self.usable else None)
            return
        try:
            self._send_everything(self.run_id, status, result, summary, files or {}, out_dir)
        except KeyboardInterrupt:
            # Ctrl-C while sending: the run is closed, not left RUNNING
            with contextlib.suppress(Exception):
                self.end_run(self.run_id, KILLED)
                self._closed_status = KILLED
            raise
        except Exception as error:  # noqa: BLE001
            self.give_up(f"sending the run to MLflow at {self.uri} failed: {error}")
            if self.close_incomplete(self.run_id, error):
                self._closed_status = FAILED
            log.warning("%s.", self.outcome().describe(len({s for s, _, _ in self._steps})))
            hint_import(out_dir)

    def _send_everything(self, run_id: str, status: str, result: Any,
                         summary: RunSummary | None, files: Mapping[str, Path],
                         out_dir: Path | None) -> None:
        self._send_steps()
        if result is not None:
            self.log_metrics(run_id, [("loss_smooth", value, step)
                                      for step, value in enumerate(result.smoothed)])
        self._send_summary(run_id, summary, status)
        for path in map(Path, files.values()):
            if path.exists():
                self.log_artifact(run_id, path)
                if path.name == PLOT_FILE:
                    self.log_image(run_id, path, CURVE_IMAGE_KEY)
        if out_dir is not None:
            self._send_run_dir_extras(run_id, Path(out_dir))
        self.call(lambda: self.end_run(run_id, status), "end run")
        self._closed_status = status
        self._replace_earlier_attempts()

    def _send_steps(self) -> None:
        pending = self._steps[self._sent:]
        if not pending or self.run_id is None or not self.usable:
            return
        self.log_metrics(self.run_id, [(name, value, step, stamp) for step, values, stamp
                                       in pending for name, value in values.items()])
        self._sent = len(self._steps)

    def _send_summary(self, run_id: str, summary: RunSummary | None, status: str) -> None:
        if summary is None:  # nothing but the curve: the status says how it ended
            self.set_tags(run_id, {"status": status})
            return
        tags = {"status": summary.status, "default_method": str(summary.default_method or ""),
                "confidence": str(summary.confidence),
                "confidence_reason": str(summary.confidence_reason or "")[:5000]}
        tags.update({key: value for key, value in (("stopped_by", summary.stopped_by),
                                                   ("regime", summary.regime)) if value})
        if summary.momentum is not None:  # what the suggestion read of the optimizer
            tags["momentum"] = str(summary.momentum).lower()
        self.log_metrics(run_id, _summary_points(summary))
        self.set_tags(run_id, tags)

    def _send_run_dir_extras(self, run_id: str, out_dir: Path) -> None:
        hydra_dir = out_dir / ".hydra"
        if hydra_dir.is_dir():
            self.call(lambda: self.client.log_artifacts(run_id, str(hydra_dir), ".hydra"),
                      "log .hydra")
        for log_file in out_dir.glob("*.log"):
            self.log_artifact(run_id, log_file)

    def _replace_earlier_attempts(self) -> None:
        """A requeued SLURM job ran its test again: its earlier attempts' runs (same job id, run
        dir and parent: ids come back after a reset) are deleted, named in ``lrexp.replaces``."""
        tags = self._run_tags
        restarts, job = _attempt(tags.get("slurm.restarts")), tags.get("slurm.job_id", "")
        if not restarts or not job.replace("_", "").isdigit() or self.run_id is None:
            return
        query = f"tags.`slurm.job_id` = '{job}'"
        if tags.get("mlflow.parentRunId"):
            query += f" and tags.`mlflow.parentRunId` = '{tags['mlflow.parentRunId']}'"
        try:
            same_job = self.client.search_runs([self.experiment_id], query, max_results=200)
            earlier = [run.info.run_id for run in same_job
                       if run.info.run_id != self.run_id
                       and run.data.tags.get("run_dir") == tags.get("run_dir")
                       and _attempt(run.data.tags.get("slurm.restarts")) < restarts]
            for old_id in earlier:
                self.client.delete_run(old_id)
            if earlier:
                self.client.set_tag(self.run_id, "lrexp.replaces", ",".join(earlier))
                log.info("MLflow run %s replaces the run(s) of SLURM job %s's earlier attempts: "
                         "%s (deleted)", self.run_id, job, ", ".join(earlier))
        except Exception as error:  # noqa: BLE001 - housekeeping must never stop a run
            log.warning("Replacing the earlier attempts' runs of SLURM job %s failed: %s",
                        job, error)
