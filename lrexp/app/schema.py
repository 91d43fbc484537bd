"""The config schema: types checked by OmegaConf while Hydra composes, ranges checked by
``check`` before any heavy import. Imports neither torch nor mlflow."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

__all__ = ["ConfigError", "LrexpConfig", "TrackingConfig", "check", "register"]

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


class ConfigError(ValueError):
    """A config value a user set wrongly; the message says which, what was given and the fix."""


@dataclass
class TrackingConfig:
    _target_: str = "lrexp.tracking.mlflow_tracker.MlflowTracker"  # or ...NullTracker
    enabled: bool = True  # false: record nothing, whichever tracker is named
    uri: Any = None  # None: MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db)
    experiment: str = "lrexp"
    flush_every: int = 0  # > 0: also send the curve every N steps (live progress on long runs)
    timeout_s: float = 5.0  # how long to wait for an unreachable server before giving up on it


@dataclass
class LrexpConfig:
    net: Any = MISSING
    dataset: Any = MISSING
    optimizer: Any = MISSING
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    min_lr: float = 1e-7
    max_lr: float = 10.0
    num_iter: int = 100
    schedule: str = "exp"
    steps_per_lr: Any = 1  # an int, or "epoch"
    beta: float = 0.98
    diverge_th: float = 4.0
    seed: int = 0
    device: str = "auto"
    amp: Any = None  # null | bf16 | fp16
    batch_size: int = 64
    accumulation_steps: int = 1
    validate: bool = False  # record the validation loss after each step instead of the train loss
    channels_last: bool = True  # on CUDA only
    threads: int = 0  # torch threads per job; 0 = auto (cores / parallel jobs under joblib)
    progress: bool = True
    verify: bool = False  # short probe trainings pick among the curve's candidate LRs
    verify_steps: int = 50  # optimizer steps per probe


def register() -> None:
    ConfigStore.instance().store(name="lrexp_schema", node=LrexpConfig)


def check(cfg: Any) -> None:
    """Raise ConfigError for the first value out of range (types were checked on compose)."""
    rules = [
        (0 < cfg.min_lr < cfg.max_lr < math.inf, f"min_lr={cfg.min_lr} and max_lr={cfg.max_lr}",
         "the range must satisfy 0 < min_lr < max_lr < inf; e.g. min_lr=1e-7 max_lr=10"),
        (cfg.num_iter >= 2, f"num_iter={cfg.num_iter}", "a curve needs num_iter >= 2"),
        (0 <= cfg.beta < 1, f"beta={cfg.beta}", "the smoothing factor needs 0 <= beta < 1"),
        (cfg.diverge_th > 1, f"diverge_th={cfg.diverge_th}",
         "the divergence threshold needs diverge_th > 1 (4 is the usual choice)"),
        (cfg.schedule in ("exp", "linear"), f"schedule={cfg.schedule}",
         "choose schedule=exp or schedule=linear"),
        (cfg.steps_per_lr == "epoch" or (isinstance(cfg.steps_per_lr, int)
                                         and cfg.steps_per_lr >= 1),
         f"steps_per_lr={cfg.steps_per_lr}", "use a positive integer or steps_per_lr=epoch"),
        (bool(DEVICE_PATTERN.match(str(cfg.device))), f"device={cfg.device}",
         "use device=auto, cpu, cuda or cuda:N"),
        (cfg.amp in (None, "bf16", "fp16"), f"amp={cfg.amp}", "use amp=null, bf16 or fp16"),
        (cfg.batch_size >= 1, f"batch_size={cfg.batch_size}", "use batch_size >= 1"),
        (cfg.accumulation_steps >= 1, f"accumulation_steps={cfg.accumulation_steps}",
         "use accumulation_steps >= 1"),
        (cfg.verify_steps >= 1, f"verify_steps={cfg.verify_steps}",
         "use verify_steps >= 1 (30-60 is usual)"),
    ]
    for ok, given, fix in rules:
        if not ok:
            raise ConfigError(f"Invalid setting {given}: {fix}.")
