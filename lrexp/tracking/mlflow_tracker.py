"""Where results go besides the run dir: MLflow, or nowhere (``tracking=none``).

``MlflowTracker`` talks to MLflow through ``MlflowClient`` only (no global active run, so it is
safe in joblib/submitit workers and never exports MLFLOW_RUN_ID). Steps are buffered in memory
and sent in ``log_batch`` chunks at the end (and every ``flush_every`` steps when asked), so the
training loop never waits on the store. Store calls are retried with backoff (SQLite writers of
a parallel sweep wait on each other's lock); a store that cannot be reached turns into a warning,
never a failed test: the run dir keeps everything, and
``python -m lrexp.tracking.import_run <dir>`` sends it later. The ``tracking`` config group
names the class to build (``_target_``).
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from lrexp.run.files import PLOT_FILE
from lrexp.run.summary import RunSummary
from lrexp.tracking.defaults import DEFAULT_EXPERIMENT, DEFAULT_FLUSH_EVERY, DEFAULT_TIMEOUT_S
from lrexp.tracking.redaction import redact
from lrexp.tracking.store import (
    resolve_tracking_uri,
    server_reachable,
    sqlite_creation_lock,
    sqlite_store_problem,
    with_retries,
)

if TYPE_CHECKING:
    from lrexp.run.summary import SeedGroup

__all__ = ["MlflowTracker", "NullTracker", "TrackedOutcome", "Tracker", "flatten",
           "median_band_series", "name_refused", "repeat_loss_key", "repeat_loss_series"]

log = logging.getLogger(__name__)

# MLflow's limits for one log_batch call and for param values (mlflow.utils.validation).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE_LENGTH = 6000
TRUNCATION_MARKER = "...[truncated]"
# Which process owns a run, so a later lrexp run on the same host can close it if that
# process died without closing it (see MlflowTracker._close_orphans).
OWNER_HOST_TAG, OWNER_PID_TAG = "lrexp.host", "lrexp.pid"
# A run whose records could not all be sent (its run dir has them): import_run sends it again.
INCOMPLETE_TAG = "lrexp.incomplete"
# MLflow 3's UI opens an experiment in its model-training view with this tag (else GenAI's).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# Images logged under a key appear in the UI's chart view, one tile per selected run.
CURVE_IMAGE_KEY, OVERLAY_IMAGE_KEY = "lr_range_test", "sweep_overlay"
# A run's or an experiment's description in the UI (markdown). The experiment's shows above its
# runs table, one click to open: lrexp keeps the latest sweep's overlay there, in a description
# that starts with this mark (an HTML comment the UI hides) and never replaces one without it.
NOTE_TAG, LATEST_SWEEP_NOTE = "mlflow.note.content", "<!-- lrexp: the latest sweep -->"
# A sweep parent's series, one step per job: the children side by side in its charts.
PARENT_SERIES = {"job_suggested_lr": "suggested_lr", "job_min_loss": "min_loss",
                 "job_lr_at_min_loss": "lr_at_min_loss"}

# A store that stops answering mid-run (stalled, restarting) is retried with backoff for this
# many tracking.timeout_s (30 s at the default 5 s; a restarted mlflow server answers in ~10 s);
# one that does not answer when the run opens is given up after one timeout_s.
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


class Tracker(Protocol):
    """What the runner and the sweep callback call; MlflowTracker and NullTracker are it."""

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        ...

    def log_step(self, step: int, lr: float, loss: float) -> None:
        ...

    def log_values(self, step: int, values: Mapping[str, float]) -> None:
        """Step ``step`` of named series other than one curve's lr and loss (a repeated
        test's per-repeat losses, its median and band: ``repeat_loss_series``,
        ``median_band_series``)."""
        ...

    def finish(self, *, status: str, result: Any = None, summary: RunSummary | None = None,
               files: Mapping[str, Path] | None = None, out_dir: Path | None = None) -> None:
        ...

    def open_parent(self, run_name: str, tags: Mapping[str, str]) -> str | None:
        ...

    def log_seed_group(self, run_id: str, group: SeedGroup, prefixed: bool) -> None:
        ...

    def close_parent(self, run_id: str, rows: list[dict[str, Any]], files: list[Path],
                     status: str, best: dict[str, Any] | None = None,
                     description: str = "", experiment_note: str = "") -> str | None:
        """End the parent with the sweep's results and ``description`` (markdown, shown on
        its page in the UI), and show ``experiment_note`` above the experiment's runs table
        (``LATEST_SWEEP_NOTE``); where the parent's page is (``run_page``), or None."""
        ...

    def close(self) -> None:
        """Let go of the tracker when the run ended before ``start`` or ``finish`` (a config
        mistake found while building): a run it opened is closed KILLED."""
        ...

    def outcome(self) -> TrackedOutcome | None:
        """What reached the store so far; None where nothing is tracked."""
        ...


class NullTracker:
    """Records nothing; the run dir still holds the curve, plot and config. Takes (and ignores)
    the tracking group's settings, so every ``tracking`` option builds the same way."""

    def __init__(self, **settings: Any) -> None:
        pass

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        pass

    def log_step(self, step: int, lr: float, loss: float) -> None:
        pass

    def log_values(self, step: int, values: Mapping[str, float]) -> None:
        pass

    def finish(self, *, status: str, result: Any = None, summary: RunSummary | None = None,
               files: Mapping[str, Path] | None = None, out_dir: Path | None = None) -> None:
        pass

    def open_parent(self, run_name: str, tags: Mapping[str, str]) -> str | None:
        return None

    def log_seed_group(self, run_id: str, group: SeedGroup, prefixed: bool) -> None:
        pass

    def close_parent(self, run_id: str, rows: list[dict[str, Any]], files: list[Path],
                     status: str, best: dict[str, Any] | None = None,
                     description: str = "", experiment_note: str = "") -> str | None:
        return None

    def close(self) -> None:
        pass

    def outcome(self) -> TrackedOutcome | None:
        return None


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


def name_refused(name: str, param: bool) -> bool:
    """Whether MLflow refuses ``name`` as a param (else a metric) key, by its own rule, which
    depends on the platform. MLflow has no public validator: this is the one place lrexp calls
    its private one (tests/test_import_run.py fails loudly when it moves)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name

    try:
        (_validate_param_name if param else _validate_metric_name)(name)
    except MlflowException:
        return True
    return False


def truncate_param(value: Any) -> str:
    text = str(value)
    if len(text) <= MAX_PARAM_VALUE_LENGTH:
        return text
    return text[: MAX_PARAM_VALUE_LENGTH - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


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
    """A repeated test's median curve as ``loss`` with its interquartile band ``loss_q25`` and
    ``loss_q75``; a quartile that is not finite (a repeat ended in NaN or inf there) is left
    out: it is interpolated, not measured, and an infinite point would flatten the chart."""
    band = result.band
    for step, loss in enumerate(result.losses):
        quartiles = {"loss_q25": float(band.q25[step]), "loss_q75": float(band.q75[step])}
        yield step, {"loss": float(loss), **{name: value for name, value in quartiles.items()
                                             if math.isfinite(value)}}


def _summary_metrics(summary: RunSummary) -> list[Any]:
    """The run's summary metrics; the verify probes as series over the probe index."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    metrics = [Metric(key, value, stamp, 0) for key, value in summary.metrics().items()]
    probes = summary.verification.probes if summary.verification else []
    for index, probe in enumerate(probes):
        metrics.append(Metric("verify_probe_lr", float(probe.lr), stamp, index))
        if probe.loss is not None:
            metrics.append(Metric("verify_probe_loss", float(probe.loss), stamp, index))
    return metrics


@contextlib.contextmanager
def _http_limits(timeout_s: float) -> Iterator[None]:
    """Each request waits ``timeout_s`` at most, and MLflow does not retry it: lrexp's own
    retries (``_call``) are bounded by a deadline, where MLflow's count attempts of up to a
    timeout each plus minutes of backoff. MLflow reads these per request, so they are set
    around lrexp's own calls only (a user's setting wins) and the environment is left as it
    was."""
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
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _attempt(restarts: str | None) -> int:
    """A ``slurm.restarts`` tag as a number (0 when missing or malformed)."""
    return int(restarts) if restarts and restarts.isdigit() else 0


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_page(uri: str, experiment_id: str, run_id: str) -> str:
    """Where a run is in the MLflow UI: its page on the tracking server (credentials redacted),
    or, for a local store, where ``mlflow ui`` serves it by default, with that command."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    if uri.startswith(("http://", "https://")):
        return f"{redact(uri).rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page} (after `mlflow ui --backend-store-uri {redact(uri)}`)"


class MlflowTracker:
    """One MLflow run per range test; see the module docstring."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 flush_every: int = DEFAULT_FLUSH_EVERY, timeout_s: float = DEFAULT_TIMEOUT_S,
                 parent_run_id: str | None = None) -> None:
        self.uri = resolve_tracking_uri(uri)
        self.experiment = experiment
        self.flush_every = flush_every
        self.timeout_s = timeout_s
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None
        self.usable = True  # False once the store proved unreachable: keep going, locally
        self._steps: list[tuple[int, dict[str, float], int]] = []  # step, values, time ms
        self._sent = 0
        self._client: Any = None
        self._experiment_id: str | None = None
        self._finished = False
        self._run_tags: dict[str, str] = {}  # as the run was created with
        self._closed_status: str | None = None  # set once the store closed the run
        self._problem: str | None = None  # why tracking stopped, if it did

    # -- life cycle --------------------------------------------------------------------------
    def prepare(self) -> None:
        """Import MLflow and open (or create) the store now; ``start`` does it otherwise. The
        sidecar calls it as soon as it runs, while the training process imports torch."""
        try:
            self._connect()
        except Exception as error:  # noqa: BLE001 - tracking must never fail the test
            self._give_up(f"MLflow at {self.uri} failed: {error}")

    def close(self) -> None:
        """A run started and never finished (an error or Ctrl-C between the two): its buffered
        steps go first, then it ends KILLED, as a stopped run does."""
        if not self._finished and self.usable and self.run_id is not None:
            self.finish(status="KILLED")

    def outcome(self) -> TrackedOutcome:
        sent = {step for step, _, _ in self._steps[:self._sent]}
        return TrackedOutcome(self.uri, self.run_id, len(sent), self._closed_status,
                              self._problem)

    def attach(self, run_id: str) -> None:
        """Go on with run ``run_id``, opened by another tracker (a tracking process that died):
        the steps logged from now on and ``finish`` complete it (MLflow drops a step sent
        twice, same time and value)."""
        try:
            if self._connect():
                self.run_id = run_id
        except Exception as error:  # noqa: BLE001 - tracking must never fail the test
            self._give_up(f"MLflow at {self.uri} failed: {error}")

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
        from mlflow.tracking import MlflowClient

        # MLflow creates and migrates a new SQLite store on first use; two runs doing that at
        # once collide ("table _alembic_tmp_experiments already exists"), so one at a time.
        with sqlite_creation_lock(self.uri):
            client = MlflowClient(tracking_uri=self.uri)
            self._client = client
            self._experiment_id = self._call(self._get_or_create_experiment,
                                               "get experiment")
        return True

    def _create_run(self, run_name: str, tags: Mapping[str, Any]) -> str:
        self._close_orphans()
        owner = {OWNER_HOST_TAG: socket.gethostname(), OWNER_PID_TAG: str(os.getpid())}
        run = self._call(lambda: self._client.create_run(
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

    def _replace_earlier_attempts(self) -> None:
        """A SLURM job that was requeued ran its range test again, from the start, into the
        same run dir: once this attempt's run is complete, the runs of the job's earlier
        attempts (a KILLED half each) are deleted (MLflow keeps deleted runs restorable until
        ``mlflow gc``) and this run names them in the tag ``lrexp.replaces``, so the job ends as
        one run. Only runs of the same job id, run dir and sweep parent count: job ids come
        back after a cluster's state is reset."""
        tags = self._run_tags
        restarts, job = _attempt(tags.get("slurm.restarts")), tags.get("slurm.job_id", "")
        if not restarts or not job.replace("_", "").isdigit() or self.run_id is None:
            return
        query = f"tags.`slurm.job_id` = '{job}'"
        if tags.get("mlflow.parentRunId"):
            query += f" and tags.`mlflow.parentRunId` = '{tags['mlflow.parentRunId']}'"
        try:
            same_job = self._client.search_runs([self._experiment_id], query, max_results=200)
            earlier = [run.info.run_id for run in same_job
                       if run.info.run_id != self.run_id
                       and run.data.tags.get("run_dir") == tags.get("run_dir")
                       and _attempt(run.data.tags.get("slurm.restarts")) < restarts]
            for old_id in earlier:
                self._client.delete_run(old_id)
            if earlier:
                self._client.set_tag(self.run_id, "lrexp.replaces", ",".join(earlier))
                log.info("MLflow run %s replaces the run(s) of SLURM job %s's earlier attempts: "
                         "%s (deleted)", self.run_id, job, ", ".join(earlier))
        except Exception as error:  # noqa: BLE001 - housekeeping must never stop a run
            log.warning("Replacing the earlier attempts' runs of SLURM job %s failed: %s",
                        job, error)

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Open the run: MLflow imported, the store opened (or created), params sent.

        In this thread, before the range test: opening it in a background thread during the
        test raced the test's own lazy imports (two threads importing the same module saw it
        half-initialized in joblib sweeps) and, on 2 cores, left MLflow's cost at 1.56x
        (scripts/bench_startup.py)."""
        self._open_run(run_name, dict(params), dict(tags))

    def _open_run(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
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
            run_id = self._create_run(run_name, run_tags)
            self._run_tags = run_tags
            param_list = [Param(str(k)[:250], truncate_param(redact(str(v))))
                          for k, v in params.items()]
            for chunk in _chunks(param_list, MAX_PARAMS_PER_BATCH):
                self._call(lambda c=chunk: self._client.log_batch(run_id, params=c),
                           "log params")
            self.run_id = run_id
            log.info("MLflow run %s opened in %s", run_id, redact(self.uri))
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
                     status: str, best: dict[str, Any] | None = None,
                     description: str = "", experiment_note: str = "") -> str | None:
        """Attach the sweep summary (a table, its files, the ``best`` row's job, settings,
        suggested LR and minimum loss) to the parent and end it; where its page is in the UI
        (``run_page``), or None."""
        try:
            if not self._connect():
                return None
            columns = list(rows[0]) if rows else []
            table = {column: [row.get(column) for row in rows] for column in columns}
            self._call(lambda: self._client.log_table(run_id, table, "sweep_summary.json"),
                         "log table")
            for path in files:
                self._call(lambda p=path: self._client.log_artifact(run_id, str(p)),
                           "log artifact")
                if path.suffix == ".png":
                    self._log_image(run_id, path, OVERLAY_IMAGE_KEY)
            self._log_parent_series(run_id, rows)
            if best is not None:
                self._log_best(run_id, best)
            if description:  # MLflow's UI shows this tag as the run's description
                self._call(lambda: self._client.set_tag(run_id, NOTE_TAG, description), "tag")
            if experiment_note:
                self._call(lambda: self._note_experiment(experiment_note), "tag experiment")
            self._call(lambda: self._client.set_tag(run_id, "status", status), "tag")
            self._call(lambda: self._end_run(run_id, status), "end run")
            return run_page(self.uri, str(self._experiment_id), run_id)
        except Exception as error:  # noqa: BLE001
            self._give_up(f"closing the sweep's parent run at {self.uri} failed: {error}")
            self._close_incomplete(run_id, error)
            return None

    def _note_experiment(self, note: str) -> None:
        current = self._client.get_experiment(self._experiment_id).tags.get(NOTE_TAG, "")
        if not current or current.startswith(LATEST_SWEEP_NOTE):  # never a user's own
            self._client.set_experiment_tag(self._experiment_id, NOTE_TAG,
                                            f"{LATEST_SWEEP_NOTE}\n{note}")

    def log_seed_group(self, run_id: str, group: SeedGroup, prefixed: bool) -> None:
        """A sweep's seed group (``lrexp.sweep.seed_groups``) on its parent run, as a repeated
        test's run has it: the median curve with its band and each seed's curve as series, the
        summary metrics, the group's files under its folder name. With several groups
        (``prefixed``) the names start with the group's folder name ("seeds_net_mlp/loss")."""
        from mlflow.entities import Metric, RunTag

        prefix = f"{group.name}/" if prefixed else ""
        # which seed (and job) each loss_repeat_<i> series is
        order = ", ".join(f"{repeat_loss_key(index)}: seed {seed} ({job})"
                          for index, (seed, job) in enumerate(zip(group.seeds, group.jobs)))
        try:
            if not self._connect():
                return
            stamp = int(time.time() * 1000)
            series = [*repeat_loss_series(group.result), *median_band_series(group.result)]
            metrics = [Metric(f"{prefix}{name}", value, stamp, step)
                       for step, values in series for name, value in values.items()]
            metrics += [Metric(f"{prefix}{name}", value, stamp, 0)
                        for name, value in group.summary.metrics().items()]
            self._log_metrics(metrics, run_id)
            self._call(lambda: self._client.log_batch(run_id, tags=[
                RunTag(f"{prefix}seeds", order[:5000])]), "tag seed group")
            for path in group.files.values():
                self._call(lambda p=path: self._client.log_artifact(run_id, str(p), group.name),
                           "log artifact")
            if "plot" in group.files:
                self._log_image(run_id, group.files["plot"], f"{group.name}_median")
        except Exception as error:  # noqa: BLE001
            self._give_up(f"sending the sweep's seeds to {self.uri} failed: {error}")

    def _log_best(self, run_id: str, best: dict[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        stamp = int(time.time() * 1000)
        metrics = [Metric(f"best_{column}", float(best[column]), stamp, 0)
                   for column in ("suggested_lr", "min_loss")]
        tags = [RunTag("best_job", str(best["job"])), RunTag("best_swept", best.get("swept") or "")]
        self._call(lambda: self._client.log_batch(run_id, metrics=metrics, tags=tags), "log best")

    def _log_parent_series(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Each child's suggested LR and minimum loss as the parent's series over job order."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(name, float(row[column]), stamp, index)
                   for index, row in enumerate(rows) for name, column in PARENT_SERIES.items()
                   if isinstance(row.get(column), (int, float))
                   and math.isfinite(row[column])]
        if metrics:
            self._call(lambda: self._client.log_batch(run_id, metrics=metrics), "log series")

    # -- one run's curve -----------------------------------------------------------------------
    def log_step(self, step: int, lr: float, loss: float,
                 timestamp_ms: int | None = None) -> None:
        """Buffer one step (``timestamp_ms``: when it was recorded, if not now; the sidecar
        passes the training process's time)."""
        self.log_values(step, {"lr": lr, "loss": loss}, timestamp_ms)

    def log_values(self, step: int, values: Mapping[str, float],
                   timestamp_ms: int | None = None) -> None:
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        self._steps.append((step, dict(values), stamp))
        if self.flush_every and len(self._steps) - self._sent >= self.flush_every:
            self._send_steps()

    def finish(self, *, status: str, result: Any = None, summary: RunSummary | None = None,
               files: Mapping[str, Path] | None = None, out_dir: Path | None = None) -> None:
        self._finished = True
        if not self.usable or self.run_id is None:
            self._hint_import(out_dir)
            return
        try:
            self._send_steps()
            if result is not None:
                self._send_smoothed(result)
            self._send_summary(summary, status)
            for path in (files or {}).values():
                if Path(path).exists():
                    self._call(lambda p=path: self._client.log_artifact(self.run_id, str(p)),
                               "log artifact")
                    if Path(path).name == PLOT_FILE:
                        self._log_image(self.run_id, Path(path), CURVE_IMAGE_KEY)
            if out_dir is not None:
                self._send_run_dir_extras(Path(out_dir))
            self._call(lambda: self._end_run(self.run_id, status), "end run")
            self._closed_status = status
            self._replace_earlier_attempts()
        except KeyboardInterrupt:
            # Ctrl-C while sending: close the run (the steps went first) rather than leave it
            # RUNNING, then let the interrupt go on
            self._close_killed()
            raise
        except Exception as error:  # noqa: BLE001
            self._give_up(f"sending the run to MLflow at {self.uri} failed: {error}")
            self._close_incomplete(self.run_id, error)
            log.warning("%s.", self.outcome().describe(len({s for s, _, _ in self._steps})))
            self._hint_import(out_dir)

    # -- pieces --------------------------------------------------------------------------------
    def _close_incomplete(self, run_id: str | None, error: BaseException) -> None:
        """After a failed send (an artifact store that refuses, a full disk), one try to close
        the run FAILED and mark it incomplete, so it neither stays RUNNING while the store
        answers nor counts as imported (``import_run`` sends the run dir again)."""
        if run_id is None:
            return
        with contextlib.suppress(Exception), _http_limits(self.timeout_s):
            reason = redact(str(error)).strip().splitlines()[0][:250] if str(error) else "error"
            self._client.set_tag(run_id, INCOMPLETE_TAG, reason)
            self._end_run(run_id, "FAILED")
            if run_id == self.run_id:
                self._closed_status = "FAILED"

    def _close_killed(self) -> None:
        if self.run_id is not None:
            with contextlib.suppress(Exception):
                self._end_run(self.run_id, "KILLED")
                self._closed_status = "KILLED"

    def _call(self, call: Any, what: str) -> Any:
        """One store call, each request within ``timeout_s``: a store that is busy, stalled or
        restarting is retried with backoff for ``RETRY_TIMEOUTS`` x ``timeout_s``."""
        with _http_limits(self.timeout_s):
            return with_retries(call, what, window_s=RETRY_TIMEOUTS * self.timeout_s)

    def _get_or_create_experiment(self) -> str:
        found = self._client.get_experiment_by_name(self.experiment)
        if found is None:
            try:
                return self._client.create_experiment(
                    self.experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception:  # noqa: BLE001 - a parallel job may have created it just now
                found = self._client.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
        if EXPERIMENT_KIND_TAG not in found.tags:  # made by an older lrexp, or by hand
            self._client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                            EXPERIMENT_KIND)
        return found.experiment_id

    def _log_image(self, run_id: str, path: Path, key: str) -> None:
        """A PNG as a keyed MLflow image (the chart view's image tiles). Best effort: the file is
        already an artifact, and an imported run dir's plot may not be an image at all."""
        from PIL import Image

        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            log.warning("%s is not shown as an MLflow image: %s", path.name, error)
            return
        self._call(lambda: self._client.log_image(run_id, rgb, key=key, step=0), "log image")

    def _log_metrics(self, metrics: list, run_id: str | None = None) -> None:
        """``metrics`` to ``run_id`` (this tracker's run when None), in chunks MLflow takes."""
        target = run_id or self.run_id
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            self._call(lambda c=chunk: self._client.log_batch(target, metrics=c),
                         "log metrics")

    def _send_steps(self) -> None:
        from mlflow.entities import Metric

        pending = self._steps[self._sent:]
        if not pending or self.run_id is None or not self.usable:
            return
        self._log_metrics([Metric(name, float(value), stamp, step)
                           for step, values, stamp in pending for name, value in values.items()])
        self._sent = len(self._steps)

    def _send_smoothed(self, result: Any) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._log_metrics([Metric("loss_smooth", float(value), stamp, step)
                           for step, value in enumerate(result.smoothed)])

    def _send_summary(self, summary: RunSummary | None, status: str) -> None:
        from mlflow.entities import RunTag

        if summary is None:  # nothing but the curve: the status says how it ended
            self._call(lambda: self._client.set_tag(self.run_id, "status", status), "tag")
            return
        tags = [RunTag("status", summary.status),
                RunTag("default_method", str(summary.default_method or "")),
                RunTag("confidence", str(summary.confidence)),
                RunTag("confidence_reason", str(summary.confidence_reason or "")[:5000])]
        if summary.stopped_by:
            tags.append(RunTag("stopped_by", summary.stopped_by))
        if summary.regime:
            tags.append(RunTag("regime", summary.regime))
        metrics = _summary_metrics(summary)
        self._call(lambda: self._client.log_batch(self.run_id, metrics=metrics, tags=tags),
                   "log summary")

    def _send_run_dir_extras(self, out_dir: Path) -> None:
        hydra_dir = out_dir / ".hydra"
        if hydra_dir.is_dir():
            self._call(lambda: self._client.log_artifacts(self.run_id, str(hydra_dir),
                                                            ".hydra"), "log .hydra")
        for log_file in out_dir.glob("*.log"):
            self._call(lambda p=log_file: self._client.log_artifact(self.run_id, str(p)),
                         "log run log")

    def _give_up(self, why: str) -> None:
        if self.usable:
            first_line = redact(str(why)).strip().splitlines()[0]  # not SQLAlchemy's essay
            self._problem = first_line
            log.warning("Tracking disabled for this run: %s. The test goes on; its curve, plot "
                        "and config stay in the run dir.", first_line)
        self.usable = False

    def _hint_import(self, out_dir: Path | None) -> None:
        if out_dir is not None and not self.usable:
            log.warning("To send this run to MLflow later: python -m lrexp.tracking.import_run %s",
                        out_dir)
