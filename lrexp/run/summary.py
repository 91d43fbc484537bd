"""The record of one run, ``summary.json``, as a typed dataclass.

The runner writes it; the MLflow tracker, the sweep's table, ``import_run`` and ``compare`` read
it. Its suggestion columns come from the engine's rules, so a new rule shows up everywhere; so do
the training schedules' bounds (``onecycle``, ``cyclic``), which become metrics such as
``onecycle_max_lr``. With repeated tests (``repeats`` > 1) it records how many ran, each one's
default suggestion and their spread in decades (the metrics ``repeats``,
``suggested_lr_iqr_decades``, ``suggested_lr_range_decades``). A summary.json written before a
field existed reads with its default.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from lrexp.engine.suggest import METHODS
from lrexp.engine.training_schedules import (
    CyclicSettings,
    OneCycleSettings,
    ScheduleBoundsError,
    TrainingSchedule,
)
from lrexp.run.files import SUMMARY_FILE
from lrexp.run.life import mlflow_status

if TYPE_CHECKING:
    from lrexp.engine.result import RangeTestResult

__all__ = ["COLUMNS", "SUMMARY_FILE", "ProbeRecord", "RunSummary", "SummaryError",
           "SeedGroup", "VerifyRecord", "format_table", "is_number", "write_status"]

log = logging.getLogger(__name__)

CONFIDENCE_SCORES = {"none": 0, "low": 1, "high": 2}  # the metric suggestion_confidence
_CONFIDENCE_NAMES = {score: name for name, score in CONFIDENCE_SCORES.items()}
METRIC_NAMES = ("suggested_lr", "min_loss", "lr_at_min_loss", "diverged_lr")
# The training schedules a summary records, by their names in RangeTestResult.schedule().
SCHEDULE_FIELDS: dict[str, type[TrainingSchedule]] = {
    "onecycle": OneCycleSettings, "cyclic": CyclicSettings}
# One row per run in the sweep table, the CSV and the comparison: a column per rule.
# "swept": the settings a sweep's job had that its other jobs did not (lrexp.sweep.callbacks).
# "stopped_by": what stopped a run before its end (Ctrl-C, SIGTERM, "SLURM time limit", ...).
# "repeats", "suggested_lr_iqr_decades": how many repeats a run's curve is the median of, and
# how far their suggestions spread. The console shows these only where a row has them.
COLUMNS = ["job", "swept", "net", "dataset", "optimizer", "status", "stopped_by", "suggested_lr",
           "confidence", "repeats", "suggested_lr_iqr_decades",
           *[f"suggested_lr_{name}" for name in METHODS], "min_loss", "lr_at_min_loss",
           "diverged_lr", "error"]
CONSOLE_COLUMNS = ["job", "swept", "net", "optimizer", "status", "stopped_by", "suggested_lr",
                   "confidence", "repeats", "suggested_lr_iqr_decades",
                   *[f"suggested_lr_{name}" for name in METHODS], "min_loss", "diverged_lr"]
REPEATS_ONLY_COLUMNS = {"repeats", "suggested_lr_iqr_decades"}
STOPS_ONLY_COLUMNS = {"stopped_by"}


class SummaryError(ValueError):
    """A summary.json field of the wrong type: which field, the value found, what it must be."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(f"{key!r} is {json.dumps(value)[:60]}, expected {expected}")
        self.key, self.value, self.expected = key, value, expected


@dataclass
class ProbeRecord:
    lr: float
    source: str
    loss: float | None  # None: the probe diverged


@dataclass
class VerifyRecord:
    steps_per_probe: int
    seconds: float
    loss_kind: str
    chosen_lr: float | None
    probes: list[ProbeRecord] = field(default_factory=list)


@dataclass
class RunSummary:
    net: str = "?"
    dataset: str = "?"
    optimizer: str = "?"
    status: str = "unknown"  # a stop reason of the engine, or FAILED / KILLED / SKIPPED
    stopped_by: str | None = None  # what stopped it early: Ctrl-C, SIGTERM, "SLURM time limit"
    device: str = "?"
    weights: str | None = None  # where its starting weights came from: none, checkpoint: PATH
    steps: int = 0
    seconds: float | None = None
    suggested_lr: float | None = None
    default_method: str | None = None
    confidence: str | None = None
    confidence_reason: str | None = None
    regime: str | None = None  # what the suggestion assumed: "from scratch" or "fine-tuning"
    momentum: bool | None = None  # the optimizer keeps momentum, as the suggestion read it
    interval: tuple[float, float] | None = None
    suggestions: dict[str, float | None] = field(default_factory=dict)
    min_loss: float | None = None
    lr_at_min_loss: float | None = None
    diverged_lr: float | None = None
    verification: VerifyRecord | None = None
    onecycle: OneCycleSettings | None = None  # None: the curve gives no bounds
    cyclic: CyclicSettings | None = None
    error: str | None = None
    repeats: int = 1  # range tests whose median curve the suggestion read
    repeat_suggested_lrs: list[float | None] = field(default_factory=list)  # each repeat's own
    suggested_lr_iqr_decades: float | None = None  # their interquartile range, decades of LR
    suggested_lr_range_decades: float | None = None  # max / min, in decades

    @classmethod
    def named(cls, names: Mapping[str, str], **values: Any) -> RunSummary:
        """A summary of the run ``names`` (net, dataset, optimizer) names."""
        return cls(net=names.get("net", "?"), dataset=names.get("dataset", "?"),
                   optimizer=names.get("optimizer", "?"), **values)

    @classmethod
    def of_result(cls, result: Any, names: Mapping[str, str], seconds: float,
                  device: str) -> RunSummary:
        """The summary of a finished ``RangeTestResult``."""
        default = result.suggest("default")
        return cls.named(names, device=device, status=result.stop_reason, steps=len(result),
                   seconds=round(seconds, 3), suggested_lr=default.lr,
                   default_method=default.method, confidence=default.confidence,
                   confidence_reason=default.reason, interval=default.interval,
                   regime=getattr(default, "regime", None),
                   momentum=getattr(result, "momentum", None),
                   suggestions=result.suggestions(), min_loss=result.min_loss,
                   lr_at_min_loss=result.lr_at_min_loss, diverged_lr=result.diverged_lr,
                   verification=_verify_record(result.verification),
                   **_schedules(result), **_spread(result))

    # -- what it means -------------------------------------------------------------------------
    @property
    def mlflow_status(self) -> str:
        """FINISHED, KILLED or FAILED: how the tracked run ends."""
        return mlflow_status(self.status)

    @property
    def run_name(self) -> str:
        return f"{self.net}-{self.dataset}-{self.optimizer}"

    def metrics(self) -> dict[str, float]:
        """The run's summary metrics by name, finite values only."""
        values: dict[str, float | None] = {name: getattr(self, name) for name in METRIC_NAMES}
        values["repeats"] = self.repeats
        values["suggested_lr_iqr_decades"] = self.suggested_lr_iqr_decades
        values["suggested_lr_range_decades"] = self.suggested_lr_range_decades
        values.update({f"suggested_lr_{name}": lr for name, lr in self.suggestions.items()
                       if name != "default"})
        # a number, so the UI can chart and sort runs by it
        score = CONFIDENCE_SCORES.get(self.confidence or "")
        values["suggestion_confidence"] = None if score is None else float(score)
        if self.interval:
            values["suggested_lr_low"], values["suggested_lr_high"] = self.interval
        if self.verification is not None:
            values["verify_seconds"] = self.verification.seconds
        for name, settings in self.schedules().items():
            values.update({f"{name}_{key}": value for key, value in settings.kwargs().items()})
        return {name: float(value) for name, value in values.items()
                if value is not None and math.isfinite(value)}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float], names: Mapping[str, str],
                     **values: Any) -> RunSummary:
        """A summary read back from its ``metrics()`` (as a tracking store keeps them)."""
        prefix, score = "suggested_lr_", metrics.get("suggestion_confidence")
        not_rules = {"low", "high", "iqr_decades", "range_decades"}  # suggested_lr_* of metrics()
        spread = ("suggested_lr_iqr_decades", "suggested_lr_range_decades")
        return cls.named(
            names, **values, **{name: metrics.get(name) for name in (*METRIC_NAMES, *spread)},
            confidence=None if score is None else _CONFIDENCE_NAMES.get(int(score)),
            suggestions={key[len(prefix):]: value for key, value in metrics.items()
                         if key.startswith(prefix) and key[len(prefix):] not in not_rules},
            repeats=int(metrics.get("repeats", 1)))

    def schedules(self) -> dict[str, TrainingSchedule]:
        """The training schedules' settings by name, those the curve gave."""
        values = {name: getattr(self, name) for name in SCHEDULE_FIELDS}
        return {name: settings for name, settings in values.items() if settings is not None}

    def row(self, job: str) -> dict[str, Any]:
        """This run as one row of ``COLUMNS``."""
        values = {**asdict(self), "job": job, **{
            f"suggested_lr_{name}": lr for name, lr in self.suggestions.items()}}
        return {column: values.get(column) for column in COLUMNS}

    # -- summary.json --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = list(self.interval) if self.interval else None
        return data

    def write(self, path: Path) -> Path:
        """Write it whole or not at all: into a temporary file beside ``path``, renamed over it
        (a full disk once left a summary.json of 0 bytes, which import_run then refused). On
        an OSError the earlier file, if any, is as it was, and the temporary file is gone."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("w") as handle:
                handle.write(json.dumps(self.to_dict(), indent=1))
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        return path

    @classmethod
    def from_dict(cls, data: Any) -> RunSummary:
        """A summary from parsed JSON, every field checked (a run dir may come from anywhere);
        unknown keys are ignored, missing ones take their defaults."""
        if not isinstance(data, dict):
            raise SummaryError("summary", data, "a JSON object")
        for key, (check, expected) in _FIELD_CHECKS.items():
            if key in data and not check(data[key]):
                raise SummaryError(key, data[key], expected)
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if values.get("interval") is not None:
            values["interval"] = tuple(values["interval"])
        if values.get("verification") is not None:
            values["verification"] = _verify_from_dict(values["verification"])
        for name, settings_class in SCHEDULE_FIELDS.items():
            if values.get(name) is not None:
                values[name] = settings_class(**{f.name: float(values[name][f.name])
                                                 for f in fields(settings_class)})
        return cls(**values)

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        return cls.from_dict(json.loads(path.read_text()))


def write_status(out_dir: Path, names: Mapping[str, str], status: str,
                 error: str | None = None, stopped_by: str | None = None) -> None:
    """The status in the run dir's summary.json, so the sweep summary lists the job; a summary
    already written (the run got that far) is kept, only its status and error change."""
    path = out_dir / SUMMARY_FILE
    try:
        summary = RunSummary.read(path)
    except (OSError, ValueError):  # none yet, or unreadable (a SummaryError): start afresh
        summary = RunSummary.named(names)
    try:
        replace(summary, status=status, error=error or summary.error,
                stopped_by=stopped_by or summary.stopped_by).write(path)
    except OSError as write_error:
        log.warning("summary.json could not be written: %s", write_error)


@dataclass(frozen=True)
class SeedGroup:
    """Jobs of one sweep setting run with different seeds, read as one: their median result and
    its summary (``lrexp.sweep.seed_groups`` finds them; the tracker logs them)."""

    name: str  # "seeds", or "seeds_<setting>" with several groups: its folder in the sweep dir
    setting: str  # the overrides its jobs share that other groups' jobs do not; "" with one group
    jobs: list[str]
    seeds: list[str]
    result: RangeTestResult
    summary: RunSummary
    files: dict[str, Path] = field(default_factory=dict)  # write_group's, by kind


def _verify_record(verification: Any) -> VerifyRecord | None:
    if verification is None:
        return None
    return VerifyRecord(
        steps_per_probe=verification.steps, seconds=round(verification.seconds, 3),
        loss_kind=verification.loss_kind, chosen_lr=verification.chosen_lr,
        probes=[ProbeRecord(p.lr, p.source, p.loss if math.isfinite(p.loss) else None)
                for p in verification.probes])


def _schedules(result: Any) -> dict[str, TrainingSchedule | None]:
    """Each training schedule's settings from the result; None where its curve gives none."""
    settings: dict[str, TrainingSchedule | None] = {}
    for name in SCHEDULE_FIELDS:
        try:
            settings[name] = result.schedule(name)
        except ScheduleBoundsError:
            settings[name] = None
    return settings


def _spread(result: Any) -> dict[str, Any]:
    """The repeats' count, their own suggestions and spread; nothing for a single test."""
    if not result.repeats:
        return {}
    spread = result.suggestion_spread()
    return {"repeats": len(result.repeats), "repeat_suggested_lrs": list(spread.lrs),
            "suggested_lr_iqr_decades": spread.iqr_decades,
            "suggested_lr_range_decades": spread.range_decades}


def _verify_from_dict(data: dict[str, Any]) -> VerifyRecord:
    probes = [ProbeRecord(float(p["lr"]), str(p.get("source", "")), p.get("loss"))
              for p in data.get("probes", [])]
    return VerifyRecord(steps_per_probe=int(data.get("steps_per_probe", 0)),
                        seconds=float(data.get("seconds") or 0.0),
                        loss_kind=str(data.get("loss_kind", "train")),
                        chosen_lr=data.get("chosen_lr"), probes=probes)


# -- checks for a summary read from disk ---------------------------------------------------------
def is_number(value: Any) -> TypeGuard[int | float]:
    """A JSON number Python can use as a float (true and false are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _is_number_or_null(value: Any) -> bool:
    return value is None or is_number(value)


def _is_text_or_null(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _is_probe(value: Any) -> bool:
    return isinstance(value, dict) and is_number(value.get("lr")) and "loss" in value \
        and _is_number_or_null(value["loss"])


def _is_verification(value: Any) -> bool:
    if value is None:
        return True
    probes = value.get("probes", []) if isinstance(value, dict) else None
    return isinstance(probes, list) and all(_is_probe(probe) for probe in probes) \
        and _is_number_or_null(value.get("seconds")) \
        and _is_number_or_null(value.get("chosen_lr"))


def _is_settings(settings_class: type[TrainingSchedule]) -> Callable[[Any], bool]:
    names = [f.name for f in fields(settings_class)]
    return lambda value: value is None or isinstance(value, dict) and all(
        is_number(value.get(name)) for name in names)


_FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{key: (lambda v: isinstance(v, str), "a string")
       for key in ("net", "dataset", "optimizer", "device", "status")},
    **{key: (_is_number_or_null, "a number or null")
       for key in ("seconds", "suggested_lr", "min_loss", "lr_at_min_loss", "diverged_lr",
                   "suggested_lr_iqr_decades", "suggested_lr_range_decades")},
    **{key: (_is_text_or_null, "a string or null")
       for key in ("default_method", "confidence", "confidence_reason", "error", "stopped_by",
                   "weights", "regime")},
    "suggestions": (lambda v: isinstance(v, dict) and all(map(_is_number_or_null, v.values())),
                    "an object of method name -> number or null"),
    **{key: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
       for key in ("steps", "repeats")},
    "repeat_suggested_lrs": (lambda v: isinstance(v, list) and all(map(_is_number_or_null, v)),
                             "a list of numbers or nulls"),
    "momentum": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "interval": (lambda v: v is None or isinstance(v, list) and len(v) == 2
                 and all(map(is_number, v)), "null or a list of two numbers"),
    "verification": (_is_verification, "null or an object with a list of probes {lr, loss}"),
    **{name: (_is_settings(settings_class), "null or an object of numbers {" + ", ".join(
        f.name for f in fields(settings_class)) + "}")
       for name, settings_class in SCHEDULE_FIELDS.items()},
}


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of ``COLUMNS`` as an aligned text table for the console."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}"
        return "—" if value is None else str(value)

    hidden = set() if any((row.get("repeats") or 1) > 1 for row in rows) \
        else set(REPEATS_ONLY_COLUMNS)
    if not any(row.get("stopped_by") for row in rows):
        hidden |= STOPS_ONLY_COLUMNS
    columns = [c for c in CONSOLE_COLUMNS if c not in hidden]
    table = [columns] + [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in table)
