"""Plain Python objects from a composed config: the device, the data, the model, the optimizer,
the loss and ``range_test``'s keyword arguments. Nothing below this reads a
DictConfig. Heavy modules are imported inside the functions: only after the config's checks."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lrexp.app.errors import ConfigError
from lrexp.app.weights import WeightsSource, weights_source

__all__ = ["Built", "Job", "build", "engine_settings", "instantiate_node", "prepare_job",
           "torch_threads", "user_error_types"]

log = logging.getLogger(__name__)


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


@dataclass
class Built:
    """The plain objects a range test runs on, and where the net's weights came from."""

    train: Any  # DataLoader or any re-iterable of batches
    val: Any
    model: Any  # nn.Module
    optimizer: Any
    loss_fn: Any  # None: the model computes its own loss
    weights: WeightsSource


def build(cfg: DictConfig, job: Job) -> Built:
    """Data, model (with its weights, frozen modules), optimizer (with its param groups) and
    loss, each from its node by ``_target_`` with the node's keys and nothing else."""
    train, val = _build_data(cfg, job)
    model, weights, groups = _build_model(cfg, job)
    make_optimizer = instantiate_node(cfg.optimizer, "optimizer")
    try:
        optimizer = make_optimizer(groups, lr=cfg.min_lr)
    except (TypeError, ValueError) as error:  # torch's own checks: weight_decay=-1, betas
        raise ConfigError(_rejected("optimizer", cfg.optimizer, error)) from None
    loss_fn = instantiate_node(cfg.loss, "loss")
    return Built(train, val, model, optimizer, loss_fn, weights)


def _build_data(cfg: DictConfig, job: Job) -> tuple[Any, Any]:
    """The train and validation loaders of what ``dataset._target_`` returns."""
    from lrexp.app.data import LoaderSettings, loaders

    made = instantiate_node(cfg.dataset, "dataset")
    settings = LoaderSettings(batch_size=cfg.batch_size, seed=cfg.seed, device_type=job.device.type,
                              rank=job.rank, world_size=job.world_size, **cfg.loader)
    train, val = loaders(made, settings, tuple(cfg.batch_keys), _target_of(cfg.dataset, "dataset"))
    _check_data_settings(cfg, made, val)
    return train, val


def _build_model(cfg: DictConfig, job: Job) -> tuple[Any, WeightsSource, list[dict[str, Any]]]:
    """The net with its starting weights and frozen modules, where its weights came from, and
    its trainable parameters in their param groups."""
    import torch
    from torch import nn

    from lrexp.app.params import GroupSpec, freeze, param_groups

    model = instantiate_node(cfg.net, "net")
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"net._target_={_target_of(cfg.net)} returned a {type(model).__name__}, not a "
            "torch.nn.Module. Point net._target_ at a class or function that builds the model.")
    if cfg.checkpoint:
        from lrexp.app.weights import load_checkpoint

        load_checkpoint(model, str(cfg.checkpoint), cfg.checkpoint_strict, cfg.checkpoint_prefix,
                        cfg.checkpoint_trusted)
    frozen = freeze(model, list(cfg.freeze))
    if frozen:
        log.info("Frozen: %d parameter tensors under %s", frozen, ", ".join(cfg.freeze))
    if job.device.type == "cuda" and cfg.channels_last and _is_image_net(cfg):
        model = model.to(memory_format=torch.channels_last)
    groups = param_groups(model, [GroupSpec(**group) for group in cfg.param_groups], cfg.min_lr)
    if job.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model.to(job.device),
            device_ids=[job.device.index] if job.device.type == "cuda" else None)
    return model, weights_source(cfg.net, cfg.checkpoint), groups


def _check_data_settings(cfg: DictConfig, made: Any, val: Any) -> None:
    """Settings the data a dataset returned cannot honour are said, not ignored."""
    from torch.utils.data import DataLoader

    if cfg.validate not in ("auto", False) and val is None:
        raise ConfigError(
            f"Invalid setting validate=true: dataset._target_={_target_of(cfg.dataset)} "
            "returned no validation set, so there is no validation loss to record. Return a "
            "(train, val) pair, or set validate=false.")
    parts = made if isinstance(made, (tuple, list)) else [made]
    if any(isinstance(part, DataLoader) for part in parts):
        log.warning("The dataset returned DataLoaders: their own batch size, order and workers "
                    "apply; batch_size=%s, seed and loader.* batch only Datasets.",
                    cfg.batch_size)


def _is_image_net(cfg: DictConfig) -> bool:
    size = OmegaConf.select(cfg, "data.input_size", default=None)
    return isinstance(size, int) and size > 1


def _target_of(node: Any, key: str = "") -> str:
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    return str(target) if target else f"(no _target_ in {key})"


def instantiate_node(node: Any, key: str) -> Any:
    """``hydra.utils.instantiate(node)``, with the ways a node can be wrong said in one
    paragraph: no ``_target_``, one that cannot be imported, arguments its callable rejects."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(
            f"Invalid setting {key}: its node has no _target_ (it holds "
            f"{_arguments(node)}). Name the class or function that builds it, e.g. "
            f"{key}._target_=mypackage.module.Name (README: Your own project).")
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        if cause is not None and isinstance(cause, user_error_types()):
            raise cause from None
        if isinstance(cause, ImportError) or "Error locating target" in str(error):
            raise ConfigError(
                f"Invalid setting {key}._target_={node._target_}: it cannot be imported "
                f"({_one_line(cause or error)}). Check the module path and the name, and that "
                "the module is importable where you run: installed, or its folder on "
                "PYTHONPATH.") from None
        if isinstance(cause, Exception):  # the callable's own error: said, its traceback kept
            log.debug("%s._target_ raised:", key, exc_info=cause)
            raise ConfigError(_rejected(key, node, cause)) from None
        raise


def _rejected(key: str, node: Any, error: BaseException) -> str:
    return (f"Invalid {key}: {node.get('_target_')} rejected its arguments "
            f"({type(error).__name__}: {_one_line(error)}). The {key} node holds "
            f"{_arguments(node)}; each key is passed as an argument, so remove or rename the "
            f"one it does not take, or fix its value ({key}.<key>=...). If the error is in "
            "your code, rerun with hydra.verbose=lrexp.app.build for its traceback.")


def _arguments(node: Any) -> str:
    if not isinstance(node, DictConfig):
        return repr(node)
    container = OmegaConf.to_container(node, resolve=False)
    assert isinstance(container, dict)  # a DictConfig's container is a dict
    shown = {str(k): v for k, v in container.items()
             if k not in ("_target_", "_partial_", "_convert_", "_recursive_")}
    return str(shown) if shown else "no arguments"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def user_error_types() -> tuple[type[BaseException], ...]:
    """The user's mistakes, as lrexp's own code raises them (their messages say the fix). The
    zoo's errors count once their modules are loaded (an error from one means it is): sorting
    a config error must not import torch."""
    from lrexp.engine.settings import SettingError

    types: list[type[BaseException]] = [SettingError]
    data, models = sys.modules.get("lrexp.app.data"), sys.modules.get("lrexp.app.models")
    if data is not None:
        types += [data.DatasetNotFoundError, data.BadDataError]
    if models is not None:
        types.append(models.UnknownModelError)
    return tuple(types)


def engine_settings(cfg: DictConfig, job: Job, built: Built) -> dict[str, Any]:
    """range_test's keyword arguments from the config (the CLI's model is fresh: no restore)."""
    return dict(
        min_lr=cfg.min_lr, max_lr=cfg.max_lr, num_iter=cfg.num_iter, schedule=cfg.schedule,
        steps_per_lr=cfg.steps_per_lr, beta=cfg.beta, diverge_th=cfg.diverge_th,
        restore=False, device=job.device, amp=cfg.amp, accumulation_steps=cfg.accumulation_steps,
        val_loader=built.val if records_val_loss(cfg, built) else None, progress=cfg.progress,
        verify=runs_verify(cfg, job, built), verify_steps=cfg.verify_steps, repeats=cfg.repeats,
        seed=cfg.seed,
        batch_keys=tuple(cfg.batch_keys), pretrained=_pretrained(cfg, built.weights),
    )


def records_val_loss(cfg: DictConfig, built: Built) -> bool:
    """Does the curve record the validation loss? ``validate=auto``: when fine-tuning with a
    validation set (not the default: on the suggestion benchmark's tuning split the default
    rules read off validation-loss curves hit 31 of 116 trials, off training-loss curves 82;
    scripts/bench_suggest.md)."""
    if cfg.validate == "auto":
        return built.val is not None and _pretrained(cfg, built.weights)
    return bool(cfg.validate)


def runs_verify(cfg: DictConfig, job: Job, built: Built) -> bool:
    """Does the test verify its suggestion? ``verify=auto``: when fine-tuning, where verify
    hit more than the default rule (tuning split 59 of 78 against 54, held-out rounds 9-12 ahead
    or level in each) for about 0.7x the range test's time more; from scratch it hit no more
    (scripts/bench_suggest.md). Not under torchrun, where the engine cannot verify."""
    if cfg.verify == "auto":
        return _pretrained(cfg, built.weights) and job.world_size == 1
    return bool(cfg.verify)


def _pretrained(cfg: DictConfig, weights: WeightsSource) -> bool:
    """``pretrained`` for the engine: auto means from the weights the net was loaded with."""
    return weights.pretrained if cfg.pretrained == "auto" else bool(cfg.pretrained)
