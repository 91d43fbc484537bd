"""Plain Python objects from a composed config: the device, the data, the model, the optimizer,
the loss, the tracker, and ``range_test``'s keyword arguments. Nothing below this reads a
DictConfig. Heavy modules are imported inside the functions: only after the config's checks."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from lrexp.app.schema import ConfigError

if TYPE_CHECKING:  # the tracking package imports nothing heavy, but only types are needed here
    from lrexp.tracking.mlflow_tracker import Tracker

__all__ = ["Job", "build", "build_tracker", "engine_settings", "prepare_job", "run_names",
           "torch_threads", "use_sidecar"]


@dataclass
class Job:
    """Where this process runs its test: the device and its place in a torchrun group."""

    device: Any  # torch.device
    rank: int = 0
    world_size: int = 1


def prepare_job(cfg: DictConfig, launcher_n_jobs: int | None) -> Job:
    """Device, process group, torch threads and seeds, in that order (a rank's GPU is known
    only after joining the group; seeds come last so nothing above draws from them)."""
    import torch

    from lrexp.engine.rangetest import resolve_device

    try:
        device = resolve_device(cfg.device)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"Invalid setting amp=fp16 on {device}: float16 autocast is a CUDA feature and runs "
            "several times slower than float32 on a CPU. Use amp=bf16 (or amp=null) there.")
    job = _join_process_group(device)
    threads = torch_threads(int(cfg.threads), launcher_n_jobs, os.cpu_count() or 1)
    if threads:
        torch.set_num_threads(threads)
    from lrexp.engine.repeats import seed_everything

    seed_everything(cfg.seed)
    return job


def _join_process_group(device: Any) -> Job:
    """Under torchrun, join the process group first (NCCL on CUDA, gloo on CPU) and take this
    rank's GPU."""
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Job(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Job(device, torch.distributed.get_rank(), world_size)


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


def build(cfg: DictConfig, job: Job) -> tuple[Any, Any, Any, Any]:
    """(data, model, optimizer, loss function) from the config's groups."""
    import torch
    from hydra.utils import instantiate
    from torch import nn

    data = instantiate(cfg.dataset, batch_size=cfg.batch_size, seed=cfg.seed,
                       device_type=job.device.type, rank=job.rank, world_size=job.world_size)
    model = instantiate(cfg.net, num_classes=data.num_classes, in_channels=data.in_channels,
                        input_size=data.input_size)
    if job.device.type == "cuda" and cfg.channels_last and data.input_size > 1:
        model = model.to(memory_format=torch.channels_last)
    if job.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model.to(job.device),
            device_ids=[job.device.index] if job.device.type == "cuda" else None)
    optimizer = instantiate(cfg.optimizer)(model.parameters(), lr=cfg.min_lr)
    loss_fn = nn.CrossEntropyLoss() if data.task == "classification" else nn.MSELoss()
    return data, model, optimizer, loss_fn


def engine_settings(cfg: DictConfig, device: Any, data: Any) -> dict[str, Any]:
    """range_test's keyword arguments from the config (the CLI's model is fresh: no restore)."""
    return dict(
        min_lr=cfg.min_lr, max_lr=cfg.max_lr, num_iter=cfg.num_iter, schedule=cfg.schedule,
        steps_per_lr=cfg.steps_per_lr, beta=cfg.beta, diverge_th=cfg.diverge_th,
        restore=False, device=device, amp=cfg.amp, accumulation_steps=cfg.accumulation_steps,
        val_loader=data.val if cfg.validate else None, progress=cfg.progress,
        verify=cfg.verify, verify_steps=cfg.verify_steps, repeats=cfg.repeats, seed=cfg.seed,
    )


def build_tracker(tracking: DictConfig | None, parent_run_id: str | None = None,
                  in_process: bool = False) -> Tracker:
    """The tracker the ``tracking`` group names by ``_target_``; ``enabled: false`` (or no
    group at all) records nothing. It runs in a sidecar process (``tracking.sidecar``) unless
    ``in_process`` (a sweep's parent run, whose id the jobs need at once)."""
    from lrexp.tracking.mlflow_tracker import NullTracker

    if tracking is None or not tracking.get("enabled", True):
        return NullTracker()
    settings = OmegaConf.masked_copy(
        tracking, [str(key) for key in tracking if key not in ("enabled", "sidecar")])
    if not in_process and use_sidecar(tracking.get("sidecar", "auto"), str(settings._target_)):
        from lrexp.tracking.sidecar import SidecarTracker, finish_wait_s

        container = OmegaConf.to_container(settings, resolve=True)
        assert isinstance(container, dict)  # a config group is a mapping
        arguments = {str(key): value for key, value in container.items()}
        target = str(arguments.pop("_target_"))
        return SidecarTracker(target, {**arguments, "parent_run_id": parent_run_id},
                              finish_wait_s(float(arguments.get("timeout_s", 5.0))))
    from hydra.utils import instantiate

    tracker: Tracker = instantiate(settings, parent_run_id=parent_run_id)
    return tracker


def use_sidecar(choice: Any, target: str) -> bool:
    """``tracking.sidecar``: true, false, or auto: a sidecar unless this process has imported
    MLflow already (a warm sweep worker, a test session), where the import is paid and a
    process of its own would only add its start and a second import."""
    if choice == "auto":
        return "mlflow" not in sys.modules and not target.endswith(".NullTracker")
    return bool(choice)


def run_names(cfg: DictConfig) -> dict[str, str]:
    """net, dataset and optimizer as runs are named and tagged (the optimizer's class name)."""
    optimizer = str(OmegaConf.select(cfg, "optimizer._target_", default="?")).rsplit(".", 1)[-1]
    return {"net": str(OmegaConf.select(cfg, "net.name", default="?")),
            "dataset": str(OmegaConf.select(cfg, "dataset.name", default="?")),
            "optimizer": optimizer}
