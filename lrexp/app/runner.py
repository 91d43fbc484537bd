"""The experiment runner: the only module that reads a DictConfig.

compose (in __main__) -> check ranges -> build data, net, optimizer -> run the engine ->
write plot, curve and config to the Hydra run dir -> hand everything to the tracker.
Heavy modules (torch, mlflow) are imported only after the config passed its checks.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lrexp.app.schema import ConfigError, check
from lrexp.sweep import interrupt

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_TERMINATED",
           "run"]

log = logging.getLogger(__name__)

# A run dir that cannot be written is the user's setting (exit 2); anything else a fault (1).
_USER_FS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS}

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


def run(cfg: DictConfig, keep_going: bool = False) -> int:
    """Run one range test from a composed config; returns the process exit code.

    ``keep_going`` (a sweep job): a crash is logged and written to the run dir's summary.json
    instead of raised, so Hydra goes on with the other jobs and the sweep summary shows it.
    SIGTERM is taken as Ctrl-C (the partial curve is recorded) and exits 143.
    """
    from lrexp.tracking.mlflow_tracker import redact_logs

    redact_logs()  # the handlers Hydra set up for this job
    sweep_dir = _sweep_dir()
    if sweep_dir is not None and interrupt.was_interrupted(sweep_dir):
        log.warning("Skipped: the sweep was interrupted (Ctrl-C or SIGTERM).")
        _write_status(cfg, "SKIPPED")
        return EXIT_INTERRUPTED
    _warn_if_sweep_preset_without_multirun()
    with interrupt.sigterm_as_interrupt():
        code = _run_checked(cfg, keep_going)
    if code == EXIT_INTERRUPTED and interrupt.terminated():
        code = EXIT_TERMINATED
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED) and sweep_dir is not None:
        interrupt.mark(sweep_dir)  # the jobs not started yet skip themselves
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


def _run_checked(cfg: DictConfig, keep_going: bool) -> int:
    """``_run`` with user mistakes and crashes sorted into exit codes."""
    try:
        check(cfg)
        return _run(cfg)
    except KeyboardInterrupt:
        log.warning("Interrupted; files already in the run dir stay there.")
        _write_status(cfg, "KILLED")
        return EXIT_INTERRUPTED
    except _RecordedFailure as failure:  # the curve exists and was kept; the log says where
        if failure.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_BAD_INPUT if failure.user_error else EXIT_FAILED
    except Exception as error:  # noqa: BLE001 - sorted into user mistakes and crashes below
        user_error = _as_user_error(error)
        if user_error is not None:
            _report_error(_user_message(user_error))
            _write_status(cfg, "FAILED", error=_user_message(user_error))
            return EXIT_BAD_INPUT
        if not keep_going:
            raise
        log.exception("The range test failed")
        _write_status(cfg, "FAILED", error=repr(error))
        return EXIT_FAILED


class _RecordedFailure(Exception):
    """Raised once a failure has been recorded truthfully and reported to the user."""

    def __init__(self, interrupted: bool, user_error: bool) -> None:
        super().__init__()
        self.interrupted, self.user_error = interrupted, user_error


def _user_error_types() -> tuple[type[BaseException], ...]:
    from lrexp.app.data import BadDataError, DatasetNotFoundError, UnknownDatasetError
    from lrexp.app.models import UnknownModelError

    return (ConfigError, UnknownModelError, UnknownDatasetError, DatasetNotFoundError,
            BadDataError)


def _as_user_error(error: BaseException) -> BaseException | None:
    """The user-facing error behind ``error`` (Hydra's instantiate wraps what targets raise)."""
    from hydra.errors import InstantiationException

    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, _user_error_types()) else None


def _report_error(message: str) -> None:
    """One ``lrexp: error:`` paragraph, in the log and on the console (once)."""
    message = f"lrexp: error: {message}"
    log.error(message)
    if not _logs_reach_the_console():
        sys.stderr.write(message + "\n")


def _logs_reach_the_console() -> bool:
    root = logging.getLogger()
    return any(
        isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr,
                                                                                  sys.stdout)
        for h in root.handlers
    )


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
    from lrexp.tracking.mlflow_tracker import PARENT_RUN_FILE

    sweep_dir = _sweep_dir()
    if sweep_dir is None or not (sweep_dir / PARENT_RUN_FILE).exists():
        return None
    return (sweep_dir / PARENT_RUN_FILE).read_text().strip()


def _overrides() -> str:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    return " ".join(HydraConfig.get().overrides.task)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _run(cfg: DictConfig) -> int:
    import torch

    from lrexp.engine.rangetest import range_test, resolve_device
    from lrexp.engine.result import CurveWriter
    from lrexp.tracking.mlflow_tracker import flatten, make_tracker

    try:
        device = resolve_device(cfg.device)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"Invalid setting amp=fp16 on {device}: float16 autocast is a CUDA feature and runs "
            "several times slower than float32 on a CPU. Use amp=bf16 (or amp=null) there.")
    rank, world_size, device = _join_process_group(device)
    threads = _torch_threads(cfg)
    if threads:
        torch.set_num_threads(threads)
    out_dir = _output_dir()
    seed_everything(cfg.seed)
    data, model, optimizer, loss_fn = _build(cfg, device, rank, world_size)
    names = _names(cfg)

    if rank != 0:  # every rank trains; rank 0 alone records and reports
        range_test(model, data.train, loss_fn, optimizer, **_engine_settings(cfg, device, data))
        return EXIT_OK
    config_file = _write_config(cfg, out_dir)
    tracker = make_tracker(cfg.tracking, parent_run_id=_parent_run_id())
    tracker.start(run_name=f"{names['net']}-{names['dataset']}-{names['optimizer']}",
                  params=flatten(OmegaConf.to_container(cfg, resolve=True)),
                  tags={**names, "device": str(device), "hydra_overrides": _overrides(),
                        "run_dir": str(out_dir.resolve())})
    log.info("Starting the LR range test: %s on %s with %s, %d points from %g to %g on %s",
             names["net"], names["dataset"], names["optimizer"], cfg.num_iter, cfg.min_lr,
             cfg.max_lr, device)
    settings = _engine_settings(cfg, device, data)
    writer = CurveWriter(out_dir / "curve.csv", _curve_settings(settings, names))

    def on_step(step: int, lr: float, loss: float) -> None:
        writer.append(step, lr, loss)
        tracker.log_step(step, lr, loss)

    started = time.perf_counter()
    try:
        result = range_test(model, data.train, loss_fn, optimizer, on_step=on_step, **settings)
    except BaseException as error:
        writer.close()  # its last rows reach the disk before the failure is recorded
        _record_failure(error, tracker, names, out_dir, writer.rows, [config_file],
                        str(device), reraise_user_errors=True)
        raise  # not reached: _record_failure raises
    writer.close()
    seconds = time.perf_counter() - started
    result.extra.update(names, world_size=world_size)
    return _write_and_track(result, tracker, names, out_dir, seconds, str(device))


def _write_config(cfg: DictConfig, out_dir: Path) -> Path:
    """config.yaml first: even a run killed outright leaves what it ran with. Credentials in
    URIs are redacted there and in Hydra's own record. A run dir that cannot be written is the
    user's setting, said before any work."""
    from lrexp.tracking.mlflow_tracker import redact, redact_file

    path = out_dir / "config.yaml"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
        for hydra_file in (out_dir / ".hydra").glob("*.yaml"):  # Hydra's record of overrides
            redact_file(hydra_file)
    except OSError as error:
        user_error = error.errno in _USER_FS_ERRORS
        message = (f"Writing {path} failed ({error.strerror}); nothing was run."
                   + _advice(error, interrupted=False, user_error=user_error))
        if user_error:
            raise ConfigError(message) from None
        _report_error(message)
        raise _RecordedFailure(interrupted=False, user_error=False) from error
    return path


def _build(cfg: DictConfig, device, rank: int, world_size: int):
    """(data, model, optimizer, loss function) from the config's groups."""
    import torch
    from hydra.utils import instantiate
    from torch import nn

    data = instantiate(cfg.dataset, batch_size=cfg.batch_size, seed=cfg.seed,
                       device_type=device.type, rank=rank, world_size=world_size)
    model = instantiate(cfg.net, num_classes=data.num_classes, in_channels=data.in_channels,
                        input_size=data.input_size)
    if device.type == "cuda" and cfg.channels_last and data.input_size > 1:
        model = model.to(memory_format=torch.channels_last)
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model.to(device), device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = instantiate(cfg.optimizer)(model.parameters(), lr=cfg.min_lr)
    loss_fn = nn.CrossEntropyLoss() if data.task == "classification" else nn.MSELoss()
    return data, model, optimizer, loss_fn


def _curve_settings(settings: dict[str, Any], names: dict[str, str]):
    """An empty RangeTestResult holding the run's settings: the curve file's header."""
    from lrexp.engine.result import RangeTestResult

    keys = ("beta", "diverge_th", "schedule", "min_lr", "max_lr", "num_iter", "steps_per_lr")
    return RangeTestResult([], [], [], extra=dict(names),
                           loss_kind="train" if settings["val_loader"] is None else "val",
                           **{key: settings[key] for key in keys})


def _write_and_track(result, tracker, names: dict[str, str], out_dir: Path, seconds: float,
                     device: str) -> int:
    """Write the run dir's files and close the tracked run; a failure on the way (a full
    disk, Ctrl-C while plotting) is recorded truthfully instead of losing what exists."""
    from lrexp.plotting import plot, plot_schedule, save_figure

    summary: dict[str, Any] | None = None
    files: dict[str, Path] = {"config": out_dir / "config.yaml", "curve": out_dir / "curve.csv"}
    try:
        summary = _summary(result, names, seconds, device)
        files["curve"] = result.to_csv(out_dir / "curve.csv")
        files["summary"] = _write_json(out_dir / "summary.json", summary)
        files["plot"] = save_figure(plot(result, title=_title(names, result)),
                                    out_dir / "plot.png")
        files["schedule"] = save_figure(plot_schedule(result), out_dir / "lr_vs_iteration.png")
    except BaseException as error:
        _record_failure(error, tracker, names, out_dir, len(result), list(files.values()),
                        device, result=result, summary=summary)
    interrupted = result.stop_reason == "interrupted"
    try:
        tracker.finish(result=result, summary=summary, files=files, out_dir=out_dir,
                       status="KILLED" if interrupted else "FINISHED")
    except KeyboardInterrupt as error:  # the tracker closed its run KILLED; the files are done
        _record_failure(error, tracker, names, out_dir, len(result), list(files.values()),
                        device, result=result, summary=summary)
    log.info("%s", _summary_text(summary, files, out_dir))
    if summary["confidence"] != "high":  # a weak answer must not pass silently
        log.warning("Suggestion confidence %s: %s", summary["confidence"],
                    summary["confidence_reason"])
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _record_failure(error: BaseException, tracker, names: dict[str, str], out_dir: Path,
                    steps: int, files: list[Path], device: str, *, result=None,
                    summary: dict[str, Any] | None = None,
                    reraise_user_errors: bool = False) -> None:
    """Close the tracked run KILLED or FAILED with every step it has, keep a truthful
    summary.json, say what was kept, and raise ``_RecordedFailure`` (exit code decided by
    ``run``). User mistakes found by the engine before any step are re-raised as they are."""
    interrupted = isinstance(error, KeyboardInterrupt)
    mistake = _as_user_error(error) is not None
    user_error = mistake or (isinstance(error, OSError) and error.errno in _USER_FS_ERRORS)
    if reraise_user_errors and steps == 0 and mistake:
        tracker.finish(status="FAILED")
        raise error
    status = "KILLED" if interrupted else "FAILED"
    what = ("SIGTERM" if isinstance(error, interrupt.Terminated) else "Ctrl-C" if interrupted
            else f"{type(error).__name__}: {_user_message(error)}")
    record = {**(summary or {**names, "device": device, "steps": steps}),
              "status": status, "error": what}
    kept = _keep(record, tracker, out_dir, files, result, status)
    when = (f"The range test recorded {steps} steps, then writing its results stopped"
            if result is not None else f"The run stopped after {steps} recorded steps")
    message = (f"{when} ({what}). Kept in {out_dir}: {', '.join(p.name for p in kept) or 'nothing'}"
               f"; the tracked run is closed {status} with every recorded step."
               + _advice(error, interrupted, user_error))
    if interrupted:
        log.warning("%s", message)
    elif isinstance(error, OSError) or user_error:
        _report_error(message)
    else:  # a bug: its traceback too
        log.error("%s", message, exc_info=error)
    raise _RecordedFailure(interrupted, user_error) from error


def _keep(record: dict[str, Any], tracker, out_dir: Path, files: list[Path], result,
          status: str) -> list[Path]:
    """Write summary.json and close the tracked run; the files that exist afterwards."""
    kept = [path for path in dict.fromkeys([*files, out_dir / "curve.csv"]) if path.exists()]
    try:
        summary_file = _write_json(out_dir / "summary.json", record)
        kept += [] if summary_file in kept else [summary_file]
    except OSError as write_error:
        log.warning("summary.json could not be written either: %s", write_error)
    try:
        tracker.finish(status=status, result=result, summary=record,
                       files={path.name: path for path in kept}, out_dir=out_dir)
    except KeyboardInterrupt:  # another Ctrl-C: the tracker closed its run KILLED as it stopped
        log.warning("Interrupted again while sending to MLflow; the run there is closed KILLED.")
    return kept


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


def _engine_settings(cfg: DictConfig, device, data) -> dict[str, Any]:
    """range_test's keyword arguments from the config (the CLI's model is fresh: no restore)."""
    return dict(
        min_lr=cfg.min_lr, max_lr=cfg.max_lr, num_iter=cfg.num_iter, schedule=cfg.schedule,
        steps_per_lr=cfg.steps_per_lr, beta=cfg.beta, diverge_th=cfg.diverge_th,
        restore=False, device=device, amp=cfg.amp, accumulation_steps=cfg.accumulation_steps,
        val_loader=data.val if cfg.validate else None, progress=cfg.progress,
        verify=cfg.verify, verify_steps=cfg.verify_steps,
    )


def _join_process_group(device):
    """(rank, world size, device) — under torchrun, join the process group first (NCCL on
    CUDA, gloo on CPU) and take this rank's GPU."""
    import os

    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), world_size, device


def _torch_threads(cfg: DictConfig) -> int | None:
    import os

    from hydra.core.hydra_config import HydraConfig

    from lrexp.sweep.launchers import joblib_n_jobs

    n_jobs = joblib_n_jobs(HydraConfig.get().launcher) if HydraConfig.initialized() else None
    return torch_threads(int(cfg.threads), n_jobs, os.cpu_count() or 1)


def torch_threads(threads: int, n_jobs: int | None, cores: int) -> int | None:
    """torch's intra-op threads (None: leave torch's default): ``threads`` if set, else
    cores // parallel jobs when the joblib launcher runs several jobs at once (N jobs with all
    cores each would oversubscribe); n_jobs < 0 means as many jobs as cores."""
    if threads > 0:
        return threads
    if n_jobs is None or n_jobs == 1:
        return None
    parallel = cores if n_jobs < 0 else min(n_jobs, cores)
    return max(1, cores // parallel)


def _names(cfg: DictConfig) -> dict[str, str]:
    optimizer = str(OmegaConf.select(cfg, "optimizer._target_", default="?")).rsplit(".", 1)[-1]
    return {"net": str(OmegaConf.select(cfg, "net.name", default="?")),
            "dataset": str(OmegaConf.select(cfg, "dataset.name", default="?")),
            "optimizer": optimizer}


def _title(names: dict[str, str], result) -> str:
    return f"{names['net']} / {names['dataset']} / {names['optimizer']} ({result.stop_reason})"


def _summary(result, names: dict[str, str], seconds: float, device: str) -> dict[str, Any]:
    default = result.suggest("default")
    verification = result.verification
    return {
        **names,
        "device": device,
        "status": result.stop_reason,
        "steps": len(result),
        "seconds": round(seconds, 3),
        "suggested_lr": default.lr,
        "default_method": default.method,
        "confidence": default.confidence,
        "confidence_reason": default.reason,
        "interval": list(default.interval) if default.interval else None,
        "suggestions": result.suggestions(),
        "min_loss": result.min_loss,
        "lr_at_min_loss": result.lr_at_min_loss,
        "diverged_lr": result.diverged_lr,
        "verification": None if verification is None else {
            "steps_per_probe": verification.steps,
            "seconds": round(verification.seconds, 3),
            "loss_kind": verification.loss_kind,
            "chosen_lr": verification.chosen_lr,
            "probes": [{"lr": p.lr, "source": p.source, "loss": _finite_or_none(p.loss)}
                       for p in verification.probes],
        },
    }


def _finite_or_none(value: float) -> float | None:
    import math

    return value if math.isfinite(value) else None


def _summary_text(summary: dict[str, Any], files: dict[str, Path], out_dir: Path) -> str:
    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:.3g}"

    suggestions = "   ".join(f"{name} {fmt(lr)}" for name, lr in summary["suggestions"].items())
    interval = summary["interval"]
    lines = [
        f"LR range test: {summary['net']} on {summary['dataset']} with {summary['optimizer']}, "
        f"{summary['steps']} steps on {summary['device']} in {summary['seconds']:.1f} s "
        f"({summary['status']})",
        f"  suggested LR ({summary['default_method']}): {fmt(summary['suggested_lr'])}   "
        f"confidence: {summary['confidence']}"
        + (f", supported {fmt(interval[0])} – {fmt(interval[1])}" if interval else ""),
        f"  why: {summary['confidence_reason']}",
        f"  by method:    {suggestions}",
        f"  min loss {fmt(summary['min_loss'])} at LR {fmt(summary['lr_at_min_loss'])}; "
        f"diverged at LR {fmt(summary['diverged_lr'])}",
    ]
    probe = summary["verification"]
    if probe is not None:
        losses = ", ".join(f"{fmt(p['lr'])} → {fmt(p['loss'])}" for p in probe["probes"])
        curve_seconds = max(summary["seconds"] - probe["seconds"], 1e-9)
        lines.append(
            f"  verify: {len(probe['probes'])} probes × {probe['steps_per_probe']} steps in "
            f"{probe['seconds']:.1f} s ({probe['seconds'] / curve_seconds:.1f}x the range "
            f"test's {curve_seconds:.1f} s); {probe['loss_kind']} loss by LR: {losses}")
    lines.append(f"  files in {out_dir}: {', '.join(path.name for path in files.values())}")
    return "\n".join(lines)


def _write_status(cfg: DictConfig, status: str, error: str | None = None) -> None:
    """The status in summary.json, so the sweep summary lists the job; a summary already
    written (the run got that far) is kept, only its status and error change."""
    import json

    path = _output_dir() / "summary.json"
    try:
        summary = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        summary = {}
    summary = {**_names(cfg), **(summary if isinstance(summary, dict) else {}),
               "status": status, **({"error": error} if error else {})}
    try:
        _write_json(path, summary)
    except OSError as write_error:
        log.warning("summary.json could not be written: %s", write_error)


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path
