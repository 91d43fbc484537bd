"""One range test from a composed config: check -> build (``app.build``) -> run the engine ->
write and report (``app.report``) -> close the tracked run. Every way a run can stop (a user
mistake, a crash, Ctrl-C, SIGTERM, a full disk) ends in an exit code and a truthful record
(``lrexp.run``: statuses, exit codes, summary.json, the process's stops).
Heavy modules (torch, mlflow) are imported only after the config passed its checks.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from lrexp.app.build import Job, build, engine_settings, prepare_job, user_error_types
from lrexp.app.report import report_error, summary_text, write_files
from lrexp.app.schema import ConfigError, check
from lrexp.run import stops
from lrexp.run.files import CONFIG_FILE, CURVE_FILE, HYDRA_DIR, PARENT_RUN_FILE, SUMMARY_FILE
from lrexp.run.life import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    FAILED,
    KILLED,
    SKIPPED,
    exit_code,
    run_names,
)
from lrexp.run.summary import RunSummary, write_status
from lrexp.sweep import interrupt
from lrexp.sweep.slurm_job import slurm_tags

if TYPE_CHECKING:
    from lrexp.tracking.mlflow_tracker import RunLogger

__all__ = ["run"]

log = logging.getLogger(__name__)

# A run dir that cannot be written is the user's setting (exit 2); anything else a fault (1).
_USER_FS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS}


def run(cfg: DictConfig, keep_going: bool = False) -> int:
    """Run one range test from a composed config; returns the process exit code.

    ``keep_going`` (a sweep job): a crash is logged and written to the run dir's summary.json
    instead of raised, so Hydra goes on with the other jobs and the sweep summary shows it.
    SIGTERM is taken as Ctrl-C (the partial curve is recorded) and exits 143.
    """
    from lrexp.tracking.redaction import redact_logs

    redact_logs()  # the handlers Hydra set up for this job
    sweep_dir = _sweep_dir()
    if sweep_dir is not None and interrupt.was_interrupted(sweep_dir):
        log.warning("Skipped: the sweep was interrupted (Ctrl-C or SIGTERM).")
        _write_status(cfg, SKIPPED)
        return EXIT_INTERRUPTED
    _warn_if_sweep_preset_without_multirun()
    with stops.sigterm_as_interrupt() as record:
        code = _run_checked(cfg, keep_going, record)
        if code == EXIT_INTERRUPTED:
            code = record.interrupted_exit_code
            # A batch scheduler's (SLURM's) stop ends this job alone; any other stop marks the
            # sweep, so that the jobs not started yet skip.
            if sweep_dir is not None and record.scheduler is None:
                interrupt.mark(sweep_dir)
    return code


def _warn_if_sweep_preset_without_multirun() -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.MULTIRUN:
        return
    preset = HydraConfig.get().runtime.choices.get("sweep")
    if preset not in (None, "null"):
        log.warning("sweep=%s lists values to sweep over, but this is a single run: only the "
                    "defaults ran. Add -m (python -m lrexp -m sweep=%s) to run the sweep.",
                    preset, preset)


def _run_checked(cfg: DictConfig, keep_going: bool, record: stops.ProcessRecord) -> int:
    """``_run`` with user mistakes and crashes sorted into exit codes."""
    try:
        check(cfg)
        return _run(cfg, record)
    except KeyboardInterrupt:
        log.warning("Interrupted; files already in the run dir stay there.")
        _write_status(cfg, KILLED, stopped_by=record.stop_cause())
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - sorted into user mistakes and crashes below
        user_error = _as_user_error(error)
        if user_error is not None:
            return _refuse(_output_dir(), run_names(cfg), user_error)
        if not keep_going:
            raise
        log.exception("The range test failed")
        _write_status(cfg, FAILED, error=repr(error))
        return EXIT_FAILED


def _refuse(out_dir: Path, names: dict[str, str], mistake: BaseException) -> int:
    """A user's mistake: one paragraph, the run dir's summary says FAILED, exit 2."""
    report_error(_user_message(mistake))
    write_status(out_dir, names, FAILED, error=_user_message(mistake))
    return EXIT_BAD_INPUT


def _as_user_error(error: BaseException) -> BaseException | None:
    """The user-facing error behind ``error`` (Hydra's instantiate wraps what targets raise)."""
    from hydra.errors import InstantiationException

    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, user_error_types()) else None


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()


def _sweep_dir() -> Path | None:
    """This job's sweep dir, or None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir)


def _parent_run_id() -> str | None:
    """The sweep's parent MLflow run, left in the sweep dir by lrexp.sweep.callbacks."""
    sweep_dir = _sweep_dir()
    if sweep_dir is None or not (sweep_dir / PARENT_RUN_FILE).exists():
        return None
    return (sweep_dir / PARENT_RUN_FILE).read_text().strip()


def _overrides() -> str:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    return " ".join(HydraConfig.get().overrides.task)


def _launcher_n_jobs() -> int | None:
    from hydra.core.hydra_config import HydraConfig

    from lrexp.sweep.launchers import joblib_n_jobs

    return joblib_n_jobs(HydraConfig.get().launcher) if HydraConfig.initialized() else None


def _run(cfg: DictConfig, record: stops.ProcessRecord) -> int:
    """The tracker first: a sidecar process imports MLflow and opens the store while this one
    imports torch and trains (rank 0 alone records under torchrun, whose RANK says which)."""
    from lrexp.tracking.build import build_tracker
    from lrexp.tracking.mlflow_tracker import NullTracker

    rank_zero = os.environ.get("RANK", "0") == "0"
    tracker = (build_tracker(cfg.tracking, parent_run_id=_parent_run_id()) if rank_zero
               else NullTracker())
    try:
        return _run_tracked(cfg, tracker, record)
    finally:
        tracker.close()  # a no-op once finished; else (a mistake found while building) let go


def _run_tracked(cfg: DictConfig, tracker: RunLogger, record: stops.ProcessRecord) -> int:
    """build -> run -> write -> report; rank 0 alone records under torchrun."""
    from lrexp.engine.rangetest import range_test

    job = prepare_job(cfg, _launcher_n_jobs())
    built = build(cfg, job)
    settings = engine_settings(cfg, job, built)
    arguments = (built.model, built.train, built.loss_fn, built.optimizer)
    if job.rank != 0:  # every rank trains; rank 0 alone records and reports
        range_test(*arguments, **settings)
        return EXIT_OK
    out_dir, names = _output_dir(), run_names(cfg)
    if not _write_config(cfg, out_dir):
        return EXIT_FAILED
    _start_tracking(tracker, cfg, names, job, out_dir, str(built.weights))
    log.info("Starting the LR range test: %s on %s with %s, %d points from %g to %g on %s%s",
             names["net"], names["dataset"], names["optimizer"], cfg.num_iter, cfg.min_lr,
             cfg.max_lr, job.device, f", {cfg.repeats} repeats" if cfg.repeats > 1 else "")
    if cfg.verify == "auto" and settings["verify"]:
        log.info("Fine-tuning: the suggestion will be verified by short probe trainings "
                 "(verify=auto; on the suggestion benchmark a median 0.7x the test's time "
                 "more; verify=false skips them).")
    return _test_and_record(arguments, settings, _Recording(
        tracker, out_dir, names, str(job.device), record, str(built.weights), job.world_size))


@dataclass
class _Recording:
    """A run under way on rank 0: where it records, and what of it exists so far."""

    tracker: Any
    out_dir: Path
    names: dict[str, str]
    device: str
    record: stops.ProcessRecord
    weights: str
    world_size: int
    steps: int = 0  # steps the curve writer recorded
    result: Any = None  # the finished test's RangeTestResult
    summary: RunSummary | None = None  # the finished test's summary
    files: dict[str, Path] = field(default_factory=dict)  # the run dir's files, as written
    finishing: bool = False  # the tracked run is being closed

    def __post_init__(self) -> None:
        self.files.update(config=self.out_dir / CONFIG_FILE, curve=self.out_dir / CURVE_FILE)

    def summary_so_far(self) -> RunSummary:
        return self.summary or RunSummary.named(self.names, device=self.device, steps=self.steps)


def _test_and_record(arguments: tuple[Any, ...], settings: dict[str, Any],
                     run: _Recording) -> int:
    """The range test, its files and its tracked run: the one place where a run ends, however
    it ends (done, Ctrl-C, SIGTERM, a crash, a full disk), each time recorded truthfully."""
    try:
        started = time.perf_counter()
        run.result = result = _recorded_range_test(arguments, settings, run)
        summary = replace(RunSummary.of_result(result, run.names, time.perf_counter() - started,
                                               run.device), weights=run.weights)
        if result.stop_reason == "interrupted":
            summary = replace(summary, stopped_by=run.record.stop_cause())
        run.summary = summary
        result.extra.update(run.names, world_size=run.world_size)
        write_files(result, summary, run.out_dir, run.files)
        run.finishing = True
        run.tracker.finish(result=result, summary=summary, files=run.files,
                           out_dir=run.out_dir, status=summary.mlflow_status)
    except BaseException as error:
        if run.finishing and not isinstance(error, KeyboardInterrupt):
            raise  # the tracker's own fault while closing: no second close
        return _recorded_failure(error, run)
    log.info("%s", summary_text(summary, run.files, run.out_dir))
    if summary.confidence != "high":  # a weak answer must not pass silently
        log.warning("Suggestion confidence %s: %s", summary.confidence,
                    summary.confidence_reason)
    return EXIT_INTERRUPTED if result.stop_reason == "interrupted" else EXIT_OK


def _start_tracking(tracker: RunLogger, cfg: DictConfig, names: dict[str, str], job: Job,
                    out_dir: Path, weights: str) -> None:
    from lrexp.tracking.mlflow_tracker import flatten

    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)  # a composed config is a mapping
    tracker.start(run_name=_run_name(names),
                  params={**flatten({str(key): value for key, value in config.items()}),
                          "weights": weights},
                  tags={**names, "device": str(job.device), "hydra_overrides": _overrides(),
                        "weights": weights, "run_dir": str(out_dir.resolve()), **slurm_tags()})


def _run_name(names: dict[str, str]) -> str:
    """net-dataset-optimizer; in a sweep, followed by this job's swept settings (the ones its
    siblings set otherwise), so that sweep children tell themselves apart."""
    from hydra.core.hydra_config import HydraConfig

    from lrexp.sweep.callbacks import job_swept_settings

    base = "-".join(names.values())
    sweep_dir = _sweep_dir()
    if sweep_dir is None:
        return base
    swept = job_swept_settings(sweep_dir, list(HydraConfig.get().overrides.task))
    return f"{base} {swept}" if swept else base


def _recorded_range_test(arguments: tuple[Any, ...], settings: dict[str, Any],
                         run: _Recording) -> Any:
    """The range test with every step appended to curve.csv and buffered for the tracker."""
    from lrexp.engine.interrupts import held, holdable_ctrl_c
    from lrexp.engine.rangetest import range_test
    from lrexp.engine.result import CurveWriter
    from lrexp.tracking.mlflow_tracker import median_band_series, repeat_loss_key

    tracker = run.tracker
    writer = CurveWriter(run.files["curve"], _curve_header(settings, run.names, arguments[3]))
    repeated = settings["repeats"] > 1
    repeat, lr_points = -1, 0  # the repeat running; how many points of the LR grid were sent

    def on_step(step: int, lr: float, loss: float) -> None:
        # With repeats, curve.csv holds the first repeat's steps while the test runs (a run
        # killed outright leaves a real curve) and the tracker each repeat's own series as it
        # goes, as repeat_loss_series has them; the median and its band follow at the end.
        nonlocal repeat, lr_points
        repeat += step == 0  # each repeat's steps start at 0
        if repeat == 0:
            writer.append(step, lr, loss)
        if not repeated:
            tracker.log_step(step, lr, loss)
            return
        values = {repeat_loss_key(repeat): loss}
        if step >= lr_points:  # every repeat shares the grid: lr once, along the longest
            values["lr"], lr_points = lr, step + 1
        tracker.log_values(step, values)

    try:
        result = range_test(*arguments, on_step=on_step, **settings)
    finally:
        writer.close()  # its last rows reach the disk before a failure is recorded
        run.steps = writer.rows
    if result.repeats:
        with holdable_ctrl_c(), held():  # the whole median and band, or none of it
            for step, values in median_band_series(result):
                tracker.log_values(step, values)
    return result


def _write_config(cfg: DictConfig, out_dir: Path) -> bool:
    """config.yaml first: even a run killed outright leaves what it ran with. Credentials in
    URIs are redacted there and in Hydra's own record. A run dir that cannot be written is the
    user's setting, said before any work (``ConfigError``); False after any other failure,
    said too."""
    from lrexp.tracking.redaction import redact, redact_file

    path = out_dir / CONFIG_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
        for hydra_file in (out_dir / HYDRA_DIR).glob("*.yaml"):  # Hydra's record of overrides
            redact_file(hydra_file)
    except OSError as error:
        user_error = error.errno in _USER_FS_ERRORS
        message = (f"Writing {path} failed ({error.strerror}); nothing was run."
                   + _advice(error, interrupted=False, user_error=user_error))
        if user_error:
            raise ConfigError(message) from None
        report_error(message)
        return False
    return True


def _curve_header(settings: dict[str, Any], names: dict[str, str], optimizer: Any) -> Any:
    """An empty RangeTestResult holding the run's settings: the curve file's header (a run
    killed outright leaves a file whose suggestion reads the test's start as the run would)."""
    import numpy as np

    from lrexp.engine.rangetest import keeps_momentum
    from lrexp.engine.result import RangeTestResult

    keys = ("beta", "diverge_th", "min_lr", "max_lr", "num_iter", "steps_per_lr", "pretrained")
    empty = np.empty(0)
    return RangeTestResult(empty, empty, empty, extra=dict(names),
                           loss_kind="train" if settings["val_loader"] is None else "val",
                           range_schedule=settings["schedule"],
                           momentum=keeps_momentum(optimizer),
                           **{key: settings[key] for key in keys})


def _recorded_failure(error: BaseException, run: _Recording) -> int:
    """A run that stopped before its end: its tracked run closed KILLED or FAILED with every
    step it has, a truthful summary.json, what was kept said; its exit code. A user's mistake
    the engine found before any step is refused like a config mistake."""
    interrupted = isinstance(error, KeyboardInterrupt)
    mistake = _as_user_error(error)
    before_any_step = run.result is None and run.steps == 0
    if before_any_step and mistake is None and isinstance(error, _FIRST_STEP_MISMATCHES) \
            and not _out_of_memory(error):
        log.debug("The first step failed:", exc_info=error)  # hydra.verbose=lrexp.app.runner
        mistake = ConfigError(_first_step_message(error))
    if before_any_step and mistake is not None:
        run.tracker.finish(status=FAILED)
        return _refuse(run.out_dir, run.names, mistake)
    user_error = mistake is not None or (isinstance(error, OSError)
                                         and error.errno in _USER_FS_ERRORS)
    what = (run.record.stop_cause() if interrupted
            else f"{type(error).__name__}: {_user_message(error)}")
    summary = run.summary_so_far()
    kept = _keep(replace(summary, status=KILLED if interrupted else FAILED, error=what,
                         stopped_by=what if interrupted else None), run)
    when = (f"The range test recorded {summary.steps} steps, then writing its results stopped"
            if run.result is not None else
            f"The run stopped after {summary.steps} recorded steps")
    message = (f"{when} ({what}). {_where_kept(run.out_dir, kept, summary.steps, run.tracker)}"
               + _advice(error, interrupted, user_error))
    if interrupted:
        log.warning("%s", message)
    elif isinstance(error, OSError) or user_error:
        report_error(message)
    else:  # a bug: its traceback too
        log.error("%s", message, exc_info=error)
    return exit_code(interrupted=interrupted, user_error=user_error)


def _where_kept(out_dir: Path, kept: list[Path], steps: int, tracker: Any) -> str:
    """Where the ``steps`` recorded steps are now, as measured: the run dir's files (curve.csv
    whole or partial, rows counted on disk) and what the tracker says reached the store."""
    rows, names = 0, []
    for path in kept:
        if path.name == CURVE_FILE:
            rows = _curve_rows_on_disk(path)
            names.append(f"{CURVE_FILE} with all {steps} steps" if rows >= steps else
                         f"{CURVE_FILE} with {rows} of {steps} steps (partial)")
        else:
            names.append(path.name)
    text = f"Kept in {out_dir}: {', '.join(names) or 'nothing'}"
    if SUMMARY_FILE not in names:
        text += f"; {SUMMARY_FILE} could not be written"
    outcome = getattr(tracker, "outcome", lambda: None)()
    text += f"; {outcome.describe(steps) if outcome is not None else 'tracking is off'}."
    stored = outcome.steps or 0 if outcome is not None else 0
    if max(rows, stored) < steps:
        text += f" {steps - max(rows, stored)} of the {steps} steps are kept nowhere."
    return text


def _curve_rows_on_disk(path: Path) -> int:
    """The complete rows of a curve.csv as it is on disk (after its meta line and header)."""
    try:
        lines = path.read_text().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError):
        return 0
    return sum(line.endswith("\n") and line[:1].isdigit() for line in lines)


def _keep(summary: RunSummary, run: _Recording) -> list[Path]:
    """Write summary.json and close the tracked run; the files that exist afterwards (and
    hold something: a file a full disk cut at 0 bytes is no record)."""
    kept = [path for path in dict.fromkeys(run.files.values())
            if path.is_file() and path.stat().st_size > 0]
    try:
        summary_file = summary.write(run.out_dir / SUMMARY_FILE)
        kept += [] if summary_file in kept else [summary_file]
    except OSError as write_error:
        log.warning("summary.json could not be written either: %s", write_error)
    try:
        run.tracker.finish(status=summary.mlflow_status, result=run.result, summary=summary,
                           files={path.name: path for path in kept}, out_dir=run.out_dir)
    except KeyboardInterrupt:  # another Ctrl-C: the tracker closed its run KILLED as it stopped
        log.warning("Interrupted again while sending to MLflow; the run there is closed KILLED.")
    return kept


# What a net and data that do not fit together raise on the first forward or loss: shapes
# (RuntimeError), dtypes and arities (TypeError), class indices out of range (IndexError).
_FIRST_STEP_MISMATCHES = (RuntimeError, TypeError, ValueError, IndexError)


def _out_of_memory(error: BaseException) -> bool:
    """A device out of memory is no mismatch: it keeps its own error (lower batch_size)."""
    import torch

    return isinstance(error, torch.OutOfMemoryError)


def _first_step_message(error: BaseException) -> str:
    return (f"The range test failed on its first step, before it recorded anything "
            f"({type(error).__name__}: {' '.join(_user_message(error).split())[:400]}). This is "
            "most often the net and the data disagreeing: the input's shape or channels "
            "(data.*, dataset.*), the number of classes, or the target's type for the loss "
            "(loss=...). Check that the net takes what the dataset yields; rerun with "
            "hydra.verbose=lrexp.app.runner for the traceback.")


def _advice(error: BaseException, interrupted: bool, user_error: bool) -> str:
    """What to do about a filesystem error (nothing to add for others: their message says)."""
    if interrupted or not isinstance(error, OSError) or _as_user_error(error) is not None:
        return ""
    if user_error:
        return " The run dir is not writable: point hydra.run.dir at a writable folder."
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return " Free space on that disk or point hydra.run.dir elsewhere, then rerun."
    return " Check that path, or point hydra.run.dir elsewhere, then rerun."


def _user_message(error: BaseException) -> str:
    """The error's own message; for one re-raised from a DataLoader worker, without the
    worker's traceback that torch puts into the message."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def _write_status(cfg: DictConfig, status: str, error: str | None = None,
                  stopped_by: str | None = None) -> None:
    write_status(_output_dir(), run_names(cfg), status, error, stopped_by)
