"""The config schema: types checked by OmegaConf while Hydra composes; ranges checked by
``check`` before any heavy import. The range test's own settings take their defaults and their
rules from ``lrexp.engine.settings`` (one source); only the app's settings are checked here.
Imports neither torch nor mlflow."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from lrexp.app.errors import ConfigError
from lrexp.engine.settings import DEFAULTS, RangeTestSettings
from lrexp.tracking.defaults import DEFAULT_EXPERIMENT, DEFAULT_FLUSH_EVERY, DEFAULT_TIMEOUT_S

__all__ = ["ConfigError", "DataFacts", "LoaderConfig", "LrexpConfig", "ParamGroupConfig",
           "TrackingConfig", "check", "register"]

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
ENGINE_KEYS = [setting.name for setting in fields(RangeTestSettings)]


@dataclass
class TrackingConfig:
    _target_: str = "lrexp.tracking.mlflow_tracker.MlflowTracker"  # or ...NullTracker
    enabled: bool = True  # false: record nothing, whichever tracker is named
    uri: Any = None  # None: MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db)
    experiment: str = DEFAULT_EXPERIMENT
    flush_every: int = DEFAULT_FLUSH_EVERY  # > 0: also send the curve every N steps
    timeout_s: float = DEFAULT_TIMEOUT_S  # for an unreachable server, before giving up on it
    sidecar: Any = "auto"  # true: MLflow in a process of its own; false: in this one; auto: see
    # lrexp.tracking.build.use_sidecar


@dataclass
class DataFacts:
    """What the zoo nets read about the dataset (``net.num_classes: ${data.num_classes}``); each
    dataset option sets them, a dataset of your own may (or your net's yaml says its shapes)."""

    num_classes: Any = None  # outputs of the net: classes, or targets for regression
    in_channels: Any = None
    input_size: Any = None  # spatial side of the inputs; 1 for vectors


@dataclass
class LoaderConfig:
    """How lrexp batches a Dataset that ``dataset._target_`` returns (unused for DataLoaders)."""

    num_workers: int = 0  # loader processes; 0 loads in the main process
    pin_memory: Any = "auto"  # page-locked batches for faster copies to the GPU; auto = on CUDA
    persistent_workers: bool = True  # keep the loader processes between passes over the data


@dataclass
class ParamGroupConfig:
    """Parameters whose names start with ``prefix`` (a module path: ``backbone``,
    ``encoder.layers.0``): their LR is ``lr_mult`` x the scheduled one, their weight decay
    ``weight_decay`` (null: the optimizer's)."""

    prefix: Any = None  # required: a module path
    lr_mult: float = 1.0
    weight_decay: float | None = None


@dataclass
class LrexpConfig:
    net: Any = MISSING
    dataset: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    data: DataFacts = field(default_factory=DataFacts)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    batch_keys: list[str] = field(default_factory=lambda: ["input", "target"])  # dict batches
    param_groups: list[ParamGroupConfig] = field(default_factory=list)
    freeze: list[str] = field(default_factory=list)  # module-name prefixes left untrained
    checkpoint: Any = None  # a state dict or checkpoint file loaded into the net before the test
    checkpoint_strict: bool = True  # every key must match (a resized head is always allowed)
    checkpoint_prefix: str = ""  # stripped from the checkpoint's keys ("model." for Lightning)
    checkpoint_trusted: bool = False  # a file holding Python objects may be unpickled in full
    pretrained: Any = "auto"  # the net starts from trained weights: auto (from the weights
    # source: a checkpoint, net.weights, net.pretrained), true or false
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
    # record the validation loss after each step instead of the train loss: true, false, or
    # auto (when fine-tuning with a validation set). False by default: the default rules were
    # chosen on training-loss curves and read validation-loss ones worse (bench_suggest.md)
    validate: Any = False
    channels_last: bool = True  # on CUDA only
    threads: int = 0  # torch threads per job; 0 = auto (cores / parallel jobs under joblib)
    progress: bool = True
    # short probe trainings pick among the candidate LRs: true, false, or auto (when
    # fine-tuning, where verify hit more than the default rule; scripts/bench_suggest.md)
    verify: Any = "auto"
    verify_steps: int = DEFAULTS.verify_steps  # optimizer steps per probe
    repeats: int = DEFAULTS.repeats  # range tests from the same weights, reseeded data orders


def register() -> None:
    """The schema and the resolvers the configs use, for Hydra to find."""
    ConfigStore.instance().store(name="lrexp_schema", node=LrexpConfig)
    if not OmegaConf.has_resolver("lrexp.subfolders"):
        OmegaConf.register_new_resolver("lrexp.subfolders", count_subfolders)


def count_subfolders(root: str) -> int:
    """Sub-folders of ``root`` (one per class in an image folder); 0 if it does not exist (the
    dataset then says so)."""
    path = Path(root).expanduser()
    return sum(1 for child in path.iterdir() if child.is_dir() and not child.name.startswith(".")
               ) if path.is_dir() else 0


def check(cfg: Any) -> None:
    """Raise for the first value out of range (types were checked on compose): the range
    test's settings by the engine's rules (``SettingError``), the app's here (``ConfigError``).
    A key nothing reads is refused: it would be silently ignored."""
    _check_no_unread_keys(cfg)
    # pretrained and verify may be "auto" here: the app resolves them from the weights it loads
    RangeTestSettings(**{key: cfg[key] for key in ENGINE_KEYS
                         if key != "pretrained" and not (key == "verify" and cfg[key] == "auto")})
    rules = [
        (bool(DEVICE_PATTERN.match(str(cfg.device))), f"device={cfg.device}",
         "use device=auto, cpu, cuda or cuda:N"),
        (cfg.batch_size >= 1, f"batch_size={cfg.batch_size}", "use batch_size >= 1"),
        (cfg.threads >= 0, f"threads={cfg.threads}",
         "use threads=0 (automatic) or a positive number of torch threads"),
        (cfg.tracking.timeout_s > 0, f"tracking.timeout_s={cfg.tracking.timeout_s}",
         f"use a positive number of seconds ({DEFAULT_TIMEOUT_S:g} is usual)"),
        (cfg.tracking.flush_every >= 0, f"tracking.flush_every={cfg.tracking.flush_every}",
         "use 0 (send the curve at the end) or a positive number of steps"),
        (len(str(cfg.tracking.experiment)) <= MAX_EXPERIMENT_NAME_LENGTH,
         f"tracking.experiment={str(cfg.tracking.experiment)[:40]}... "
         f"({len(str(cfg.tracking.experiment))} characters)",
         f"MLflow takes experiment names of at most {MAX_EXPERIMENT_NAME_LENGTH} characters"),
        (cfg.tracking.get("sidecar", "auto") in ("auto", True, False),
         f"tracking.sidecar={cfg.tracking.get('sidecar')}", "use true, false or auto"),
        (cfg.loader.num_workers >= 0, f"loader.num_workers={cfg.loader.num_workers}",
         "use 0 (load in the main process) or a positive number of loader processes"),
        (cfg.validate in ("auto", True, False), f"validate={cfg.validate}",
         "use auto (the validation loss when fine-tuning and there is a validation set), true "
         "or false"),
        (cfg.verify in ("auto", True, False), f"verify={cfg.verify}",
         "use auto (verify when fine-tuning), true or false"),
        (cfg.pretrained in ("auto", True, False), f"pretrained={cfg.pretrained}",
         "use auto (from the weights the net is loaded with), true or false"),
        (len(cfg.batch_keys) == 2, f"batch_keys={list(cfg.batch_keys)}",
         "name the input and the target entries of a dict batch, e.g. batch_keys=[image,label]"),
    ]
    for index, group in enumerate(cfg.param_groups):
        rules += _param_group_rules(index, group)
    for ok, given, fix in rules:
        if not ok:
            raise ConfigError(f"Invalid setting {given}: {fix}.")


def _param_group_rules(index: int, group: Any) -> list[tuple[bool, str, str]]:
    """(holds, the setting as given, the fix) for one entry of ``param_groups``."""
    return [
        (isinstance(group.prefix, str) and bool(group.prefix),
         f"param_groups[{index}].prefix={group.prefix}",
         "name a module of the net by its path, e.g. {prefix: backbone, lr_mult: 0.1}"),
        (group.lr_mult > 0, f"param_groups[{index}].lr_mult={group.lr_mult}",
         "use a positive factor of the scheduled LR (0.1 trains that group 10x slower)"),
        (group.weight_decay is None or group.weight_decay >= 0,
         f"param_groups[{index}].weight_decay={group.weight_decay}",
         "use a weight decay >= 0, or leave it out for the optimizer's own"),
    ]


# MLflow's mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH, here without importing MLflow
# before work (tests/test_boundary.py checks that the two agree)
MAX_EXPERIMENT_NAME_LENGTH = 500

# The keys of a node that the range test sets itself: a value there would be ignored.
_SET_BY_THE_RANGE_TEST = {
    "optimizer": {
        "lr": "the range test sets the optimizer's LR (from min_lr to max_lr); give a group "
              "of parameters its own LR with param_groups=[{prefix: ..., lr_mult: ...}]",
        "params": "the optimizer gets the net's parameters (grouped by param_groups)",
    },
}


def _check_no_unread_keys(cfg: Any) -> None:
    """``+key=value`` adds a key Hydra's schema does not know: refuse it, never ignore it."""
    known = {setting.name for setting in fields(LrexpConfig)} | {"hydra"}
    for key in cfg:
        if key not in known:
            raise ConfigError(
                f"Invalid setting {key}={cfg[key]}: lrexp reads no top-level key {key!r}, so it "
                "would be ignored. python -m lrexp --help lists the settings; an argument of "
                "the net, dataset, loss or optimizer goes into its node (net.<key>=...).")
    checked_nodes: list[tuple[str, Any]] = [("data", DataFacts), ("loader", LoaderConfig)]
    if str(cfg.tracking.get("_target_", "")).startswith("lrexp."):  # a tracker of your own
        checked_nodes.append(("tracking", TrackingConfig))  # may take keys of its own
    for node, schema in checked_nodes:
        keys = {setting.name for setting in fields(schema)}
        for key in cfg[node]:
            if key not in keys:
                raise ConfigError(
                    f"Invalid setting {node}.{key}={cfg[node][key]}: lrexp reads no such key, so "
                    f"it would be ignored. {node} has {', '.join(sorted(keys))}.")
    group_keys = {setting.name for setting in fields(ParamGroupConfig)}
    for index, group in enumerate(cfg.param_groups):
        for key in group:
            if key not in group_keys:
                raise ConfigError(
                    f"Invalid setting param_groups[{index}].{key}={group[key]}: a group has "
                    f"{', '.join(sorted(group_keys))}, nothing else.")
    for node, reasons in _SET_BY_THE_RANGE_TEST.items():
        for key, reason in reasons.items():
            if cfg.get(node) is not None and key in cfg[node]:
                raise ConfigError(
                    f"Invalid setting {node}.{key}={cfg[node][key]}: it is never used, because "
                    f"{reason}. Remove it.")
