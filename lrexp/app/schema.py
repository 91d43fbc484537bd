"""The config schema: types checked by OmegaConf while Hydra composes; ranges checked by
``check`` before any heavy import. The range test's own settings take their defaults and their
rules from ``lrexp.engine.settings`` (one source); only the app's settings are checked here.
Imports neither torch nor mlflow."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from lrexp.engine.settings import DEFAULTS, RangeTestSettings, SettingError

__all__ = ["ConfigError", "LrexpConfig", "TrackingConfig", "check", "register"]

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
ENGINE_KEYS = [setting.name for setting in fields(RangeTestSettings)]


class ConfigError(SettingError):
    """A config value a user set wrongly; the message says which, what was given and the fix.
    A ``SettingError`` too: the app answers both with exit 2 and the message."""


@dataclass
class TrackingConfig:
    _target_: str = "lrexp.tracking.mlflow_tracker.MlflowTracker"  # or ...NullTracker
    enabled: bool = True  # false: record nothing, whichever tracker is named
    uri: Any = None  # None: MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db)
    experiment: str = "lrexp"
    flush_every: int = 0  # > 0: also send the curve every N steps (live progress on long runs)
    timeout_s: float = 5.0  # how long to wait for an unreachable server before giving up on it
    sidecar: Any = "auto"  # true: MLflow in a process of its own; false: in this one; auto: see
    # lrexp.app.build.use_sidecar


@dataclass
class LrexpConfig:
    net: Any = MISSING
    dataset: Any = MISSING
    optimizer: Any = MISSING
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    min_lr: float = DEFAULTS.min_lr
    max_lr: float = DEFAULTS.max_lr
    num_iter: int = DEFAULTS.num_iter
    schedule: str = str(DEFAULTS.schedule)
    steps_per_lr: Any = DEFAULTS.steps_per_lr  # an int, or "epoch"
    beta: float = DEFAULTS.beta
    diverge_th: float = DEFAULTS.diverge_th
    seed: int = 0
    device: str = "auto"
    amp: Any = DEFAULTS.amp  # null | bf16 | fp16
    batch_size: int = 64
    accumulation_steps: int = DEFAULTS.accumulation_steps
    validate: bool = False  # record the validation loss after each step instead of the train loss
    channels_last: bool = True  # on CUDA only
    threads: int = 0  # torch threads per job; 0 = auto (cores / parallel jobs under joblib)
    progress: bool = True
    verify: bool = DEFAULTS.verify  # short probe trainings pick among the candidate LRs
    verify_steps: int = DEFAULTS.verify_steps  # optimizer steps per probe
    repeats: int = DEFAULTS.repeats  # range tests from the same weights, reseeded data orders


def register() -> None:
    ConfigStore.instance().store(name="lrexp_schema", node=LrexpConfig)


def check(cfg: Any) -> None:
    """Raise for the first value out of range (types were checked on compose): the range
    test's settings by the engine's rules (``SettingError``), the app's here (``ConfigError``)."""
    RangeTestSettings(**{key: cfg[key] for key in ENGINE_KEYS})
    rules = [
        (bool(DEVICE_PATTERN.match(str(cfg.device))), f"device={cfg.device}",
         "use device=auto, cpu, cuda or cuda:N"),
        (cfg.batch_size >= 1, f"batch_size={cfg.batch_size}", "use batch_size >= 1"),
        (cfg.threads >= 0, f"threads={cfg.threads}",
         "use threads=0 (automatic) or a positive number of torch threads"),
        (cfg.tracking.timeout_s > 0, f"tracking.timeout_s={cfg.tracking.timeout_s}",
         "use a positive number of seconds (5 is usual)"),
        (cfg.tracking.get("sidecar", "auto") in ("auto", True, False),
         f"tracking.sidecar={cfg.tracking.get('sidecar')}", "use true, false or auto"),
    ]
    for ok, given, fix in rules:
        if not ok:
            raise ConfigError(f"Invalid setting {given}: {fix}.")
