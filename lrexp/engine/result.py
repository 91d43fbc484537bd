"""The result of a range test, and its lossless CSV / JSON round-trip."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, overload

import numpy as np

from lrexp.engine.curve import CurveMonitor, FloatArray, blowup_index, smooth, zero_lag
from lrexp.engine.curve_file import (
    CURVE_COLUMNS,
    META_PREFIX,
    REPEAT_COLUMNS,
    read_rows,
    repeat_curves,
    start_flags,
    stop_reason,
)
from lrexp.engine.repeats import MedianCurve, median_curve, median_length
from lrexp.engine.settings import DEFAULTS, STOP_REASONS
from lrexp.engine.suggest import (
    METHODS,
    Suggestion,
    SuggestionSpread,
    Verdict,
    assess,
    checked,
    regime_name,
    spread_of,
    suggest,
    with_spread,
)
from lrexp.engine.training_schedules import (
    CyclicSettings,
    OneCycleSettings,
    TrainingSchedule,
    make_scheduler,
    schedule_settings,
)

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

__all__ = ["STOP_REASONS", "CurveWriter", "Probe", "RangeTestResult", "Verification"]

# Fields stored under another name in the files: ``schedule`` names the range test's LR ramp
# there (as in range_test and the config); on the result, ``schedule()`` gives training schedules.
_FILE_KEYS = {"range_schedule": "schedule"}
# Fields not in a curve file's comment line: the columns, and what has a form of its own there
_ARRAYS = ("lrs", "losses", "smoothed", "verification", "repeats")

log = logging.getLogger(__name__)


DEFAULT_SOURCE = "default"  # a probe's source at the default suggestion's LR


@dataclass
class Probe:
    """One short training at a constant candidate LR, from the model's initial state."""

    lr: float
    source: str  # which rule(s) proposed it, e.g. "default" or "default x0.333"
    loss: float  # the measured loss: validation loss, or the mean of the last training losses
    losses: list[float] = field(default_factory=list)  # its training loss at every step

    @property
    def at_default(self) -> bool:
        return DEFAULT_SOURCE in self.source.split(", ")


@dataclass
class Verification:
    """The verify probe: every candidate and the one its rule chose (``lrexp.engine.verify``)."""

    probes: list[Probe]
    chosen: int | None  # index into probes; None when no probe gave a finite loss
    steps: int  # optimizer steps per probe
    seconds: float  # wall time of all probes
    loss_kind: str = "train"  # "train" (mean of the last steps) or "val"

    @property
    def chosen_lr(self) -> float | None:
        return None if self.chosen is None else self.probes[self.chosen].lr

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for probe in data["probes"]:
            probe["loss"] = _json_float(probe["loss"])
            probe["losses"] = [_json_float(value) for value in probe["losses"]]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verification:
        probes = [Probe(float(p["lr"]), str(p["source"]), float(p["loss"]),
                        [float(value) for value in p["losses"]]) for p in data["probes"]]
        return cls(probes, data["chosen"], int(data["steps"]), float(data["seconds"]),
                   str(data.get("loss_kind", "train")))


def _probes_outcome(verification: Verification, chosen: Probe) -> str:
    """What the verify probes found, in plain words (the rule: lrexp.engine.verify.choose)."""
    kind = {"val": "validation", "holdout": "held-out"}.get(verification.loss_kind,
                                                           verification.loss_kind)
    done = (f"{len(verification.probes)} probes of {verification.steps} steps, judged on the "
            f"{kind} loss")
    others = [p for p in verification.probes if p is not chosen]
    if chosen.at_default:
        lower = "; ".join(f"LR {p.lr:.3g} got {p.loss:.4g}" for p in others) or "no other probe"
        return (f"{done}: the default LR {chosen.lr:.3g} stands ({chosen.loss:.4g}; {lower}, "
                "not clearly better).")
    default = next((p for p in others if p.at_default), None)
    against = ("the default's probe diverged" if default is None or not math.isfinite(default.loss)
               else f"against the default's {default.loss:.4g} at LR {default.lr:.3g}")
    if default is not None and chosen.loss >= default.loss:  # the fine-tuning rule's tie
        return (f"{done}: LR {chosen.lr:.3g} ({chosen.source}) trained about as well "
                f"({chosen.loss:.4g}, {against}); fine-tuning takes the lower LR of a near tie.")
    return (f"{done}: LR {chosen.lr:.3g} ({chosen.source}) trained better "
            f"({chosen.loss:.4g}, {against}).")

@dataclass
class RangeTestResult:
    """One entry per recorded step: the LR used, the raw loss and its debiased EMA.

    ``losses`` is the training loss, or the validation loss when the test ran with a
    ``val_loader`` (``loss_kind`` says which). A step that diverged or went non-finite is the
    last entry; its loss is kept as recorded (NaN/inf included). ``range_schedule`` is how the
    test ramped the LR (range_test's ``schedule``: "exp" or "linear").

    After ``range_test(..., repeats=k)`` with k > 1, ``repeats`` holds each repeat's own result
    (its ``extra["seed"]``: the seed it ran with, None for repeat 0) and the curve itself is
    their median (``lrexp.engine.repeats``), which every rule and the verdict read; ``band``
    gives the interquartile band and ``suggestion_spread()`` how far the repeats' own
    suggestions disagree. A single test has no repeats.

    ``pretrained`` says the model started from pretrained weights: the suggestion and the
    verdict then read the curve as a fine-tuning one (files written before this field existed
    read as False). ``momentum`` says the optimizer keeps momentum; without it the default
    suggestion from scratch is higher (``lrexp.engine.suggest.NO_MOMENTUM_FACTOR``; files
    written before this field existed read as True, the rule they were read with).
    """

    lrs: FloatArray
    losses: FloatArray
    smoothed: FloatArray
    stop_reason: str = "completed"
    beta: float = DEFAULTS.beta
    diverge_th: float = DEFAULTS.diverge_th
    range_schedule: str = str(DEFAULTS.schedule)
    min_lr: float | None = None
    max_lr: float | None = None
    num_iter: int | None = None
    steps_per_lr: int | str = DEFAULTS.steps_per_lr
    loss_kind: str = "train"
    pretrained: bool = False  # the model started from pretrained weights (fine-tuning)
    momentum: bool = True  # the optimizer keeps momentum (rangetest.keeps_momentum)
    extra: dict[str, Any] = field(default_factory=dict)
    verification: Verification | None = None
    repeats: list[RangeTestResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lrs = np.asarray(self.lrs, dtype=np.float64)
        self.losses = np.asarray(self.losses, dtype=np.float64)
        self.smoothed = np.asarray(self.smoothed, dtype=np.float64)
        if not len(self.lrs) == len(self.losses) == len(self.smoothed):
            raise ValueError(
                f"lrs, losses and smoothed must have one length, got {len(self.lrs)}, "
                f"{len(self.losses)} and {len(self.smoothed)}."
            )
        if self.stop_reason not in STOP_REASONS:
            raise ValueError(
                f"stop_reason must be one of {STOP_REASONS}, got {self.stop_reason!r}."
            )

    def __len__(self) -> int:
        return len(self.lrs)

    @classmethod
    def of_repeats(cls, repeats: list[RangeTestResult]) -> RangeTestResult:
        """The median result of repeated tests with one set of settings (the first repeat's);
        its stop reason is that of the repeat whose length the median curve has, or
        "interrupted" when any repeat was."""
        first = repeats[0]
        median = median_curve([r.lrs for r in repeats], [r.losses for r in repeats])
        length = median_length([len(r) for r in repeats])
        stop_reason = next(r.stop_reason for r in repeats if len(r) == length)
        if any(r.stop_reason == "interrupted" for r in repeats):
            stop_reason = "interrupted"
        settings = {f.name: getattr(first, f.name) for f in fields(cls)
                    if f.name not in _ARRAYS and f.name not in ("stop_reason", "extra")}
        return cls(median.lrs, median.median, smooth(median.median, first.beta),
                   stop_reason=stop_reason, **{**settings, "repeats": list(repeats)})

    # -- what users ask of a curve -------------------------------------------------------------
    def suggest(self, method: str = "default") -> Suggestion:
        """The suggested LR by ``method`` ("default", "verified", or a rule in METHODS).

        "default" is the verified choice when the test ran with ``verify=True`` and a probe
        gave a finite loss, else the default rule's reading of the curve.
        """
        verified = self.verification is not None and self.verification.chosen is not None
        if method == "verified" or (method == "default" and verified):
            return self._verified()
        return self._default(method)

    def _default(self, method: str = "default") -> Suggestion:
        """``method``'s reading of the curve, verify aside."""
        suggestion = suggest(self.lrs, self.losses, method, pretrained=self.pretrained,
                             momentum=self.momentum)
        if self.repeats:
            return with_spread(suggestion, self.suggestion_spread())
        if self.stop_reason == "interrupted":
            return self._cut_short(suggestion)
        return self._stopped_by_divergence(suggestion)

    def _stopped_by_divergence(self, suggestion: Suggestion) -> Suggestion:
        """A curve the test itself stopped where the smoothed loss diverged, but whose reading
        asks for a higher max_lr: the test would stop there again."""
        if self.stop_reason not in ("diverged", "non-finite") or "raise max_lr" not in (
                suggestion.reason or "") or not len(self.lrs):
            return suggestion
        return replace(suggestion, reason=(
            f"{suggestion.reason} (The test itself stopped where the loss diverged, at LR "
            f"{self.lrs[-1]:.3g}, so a higher max_lr changes nothing: raise num_iter for more "
            "points below that LR; if the net starts from trained weights, say "
            "pretrained=true.)"))

    def _cut_short(self, suggestion: Suggestion) -> Suggestion:
        """A test stopped by Ctrl-C or a signal read as far as it got: never "high", and the
        fix is to finish the test, whatever the partial curve seems to ask for."""
        if not len(self.lrs):
            return suggestion
        stopped = (f"The test was stopped at LR {self.lrs[-1]:.3g}, before its last LR: this "
                   "reading covers only the LRs it reached; run the test to the end before "
                   "trusting it (rather than changing max_lr or num_iter).")
        confidence = "none" if suggestion.confidence == "none" else "low"
        reason = suggestion.reason or ""
        return replace(suggestion, confidence=confidence,
                       reason=f"{stopped} {reason[:1].upper()}{reason[1:]}".rstrip())

    def _verified(self) -> Suggestion:
        verification = self.verification
        regime = regime_name(self.pretrained)
        if verification is None:
            return Suggestion(None, "verified", reason="the test ran without verify=True.",
                              regime=regime)
        if verification.chosen is None:
            return Suggestion(None, "verified", regime=regime,
                              reason="no probe of the verify step gave a finite loss.")
        probe = verification.probes[verification.chosen]
        default = self._default()  # its verdict, the second reading's included
        reason = f"{_probes_outcome(verification, probe)} The curve: {default.reason}"
        confidence = "low" if default.confidence == "none" else default.confidence
        verified = Suggestion(probe.lr, "verified", None, reason, confidence, default.interval,
                              regime)
        return checked(verified, self.lrs, self.losses, agreement=False)

    @property
    def verdict(self) -> Verdict:
        """The curve's confidence verdict (``lrexp.engine.suggest.Verdict``); with repeats,
        the median curve's, weighing how far the repeats' suggestions disagree."""
        verdict = assess(self.lrs, self.losses, pretrained=self.pretrained)
        return with_spread(verdict, self.suggestion_spread()) if self.repeats else verdict

    def suggestion_spread(self) -> SuggestionSpread:
        """How far the repeats' own default suggestions disagree (median LR, IQR and range in
        decades); a single test's spread is its one suggestion, with no IQR. A repeat cut short
        by Ctrl-C is left out: its partial curve says where the user stopped, not how the data
        order moves the suggestion."""
        whole = [r for r in self.repeats if r.stop_reason != "interrupted"]
        curves = whole or self.repeats or [self]
        return spread_of([suggest(r.lrs, r.losses, pretrained=self.pretrained,
                                  momentum=self.momentum).lr for r in curves])

    @property
    def band(self) -> MedianCurve | None:
        """The median curve with its interquartile band per LR; None for a single test."""
        if not self.repeats:
            return None
        return median_curve([r.lrs for r in self.repeats], [r.losses for r in self.repeats])

    def suggestions(self) -> dict[str, float | None]:
        """Every method's suggested LR by name, "default" included (None where there is none);
        "verified" too when the test ran with ``verify=True``."""
        names = ["default", *METHODS, *(["verified"] if self.verification else [])]
        return {name: self.suggest(name).lr for name in names}

    @overload
    def schedule(self, name: Literal["onecycle"]) -> OneCycleSettings: ...
    @overload
    def schedule(self, name: Literal["cyclic"]) -> CyclicSettings: ...
    @overload
    def schedule(self, name: str) -> TrainingSchedule: ...

    def schedule(self, name: str) -> TrainingSchedule:
        """The bounds of training schedule ``name`` read from this curve in its regime
        (``pretrained``): "onecycle" gives ``OneCycleSettings`` (max_lr, div_factor) for torch's
        OneCycleLR, "cyclic" gives ``CyclicSettings`` (base_lr, max_lr) for CyclicLR. The
        rules and their sources: ``lrexp.engine.training_schedules``. ``ScheduleBoundsError``
        when the curve has no supported interval to read them from."""
        return schedule_settings(self.lrs, self.losses, name, pretrained=self.pretrained)

    def make_scheduler(self, optimizer: Optimizer, name: str, **torch_kwargs: Any) -> LRScheduler:
        """torch's scheduler for ``schedule(name)`` on ``optimizer``; ``torch_kwargs`` go to it
        (``total_steps=`` for "onecycle", ``step_size_up=`` for "cyclic", or any other)."""
        return make_scheduler(optimizer, self.schedule(name), **torch_kwargs)

    @property
    def zero_lag(self) -> FloatArray:
        """The zero-lag smoothing of the loss that the suggestion rules read (NaN past the
        curve's finite prefix); ``smoothed`` is the online EMA the stopping rule used."""
        return zero_lag(self.losses)

    @property
    def diverged_lr(self) -> float | None:
        """The LR of the step where the test stopped on divergence or a non-finite loss."""
        if self.stop_reason in ("diverged", "non-finite") and len(self):
            return float(self.lrs[-1])
        return None

    @property
    def blowup_lr(self) -> float | None:
        """The LR where the loss blew up (``curve.blowup_index``), None if it did not."""
        index = blowup_index(self.losses)
        return None if index is None or index >= len(self) else float(self.lrs[index])

    @property
    def best_index(self) -> int | None:
        """Index of the minimum of the zero-lag smoothed loss."""
        trend = self.zero_lag
        finite = np.isfinite(trend)
        if not finite.any():
            return None
        return int(np.nanargmin(trend))

    @property
    def min_loss(self) -> float | None:
        """The lowest zero-lag smoothed loss (the raw minimum is mostly minibatch noise, and
        the EMA's minimum lags behind the curve)."""
        index = self.best_index
        return None if index is None else float(self.zero_lag[index])

    @property
    def loss_noise(self) -> float | None:
        """Robust std of the minibatch noise up to the minimum: the scaled median distance of
        the raw loss from its zero-lag smoothing (a median: a few outliers do not count). Two
        minima closer than this are one minimum seen twice. None without a readable minimum."""
        index = self.best_index
        if index is None:
            return None
        raw, trend = self.losses[:index + 1], self.zero_lag[:index + 1]
        finite = np.isfinite(raw) & np.isfinite(trend)
        return float(1.4826 * np.median(np.abs(raw[finite] - trend[finite])))

    @property
    def lr_at_min_loss(self) -> float | None:
        index = self.best_index
        return None if index is None else float(self.lrs[index])

    # -- persistence ---------------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        meta = {_FILE_KEYS.get(f.name, f.name): getattr(self, f.name) for f in fields(self)
                if f.name not in _ARRAYS}
        meta["diverge_th"] = _json_float(self.diverge_th)
        if self.verification is not None:
            meta["verification"] = self.verification.to_dict()
        if self.repeats:  # their curves are in the sibling file (repeats_path)
            meta["repeats"] = len(self.repeats)
        return meta

    @staticmethod
    def repeats_path(path: str | Path) -> Path:
        """Where ``to_csv(path)`` writes each repeat's curve: ``curve.csv`` ->
        ``curve_repeats.csv``."""
        path = Path(path)
        return path.with_name(f"{path.stem}_repeats{path.suffix}")

    def to_csv(self, path: str | Path) -> Path:
        """Write the curve (one row per step) with the settings in a leading comment line.

        Floats are written with ``repr``, which round-trips exactly. With repeats, the curve is
        their median and ``repeats_path(path)`` gets every repeat's curve: columns
        ``repeat,step,lr,loss,loss_smooth``, one row per repeat and step, each repeat's
        stop reason and extra (its seed) in the leading comment line.
        """
        path = Path(path)
        rows = ([step, *(repr(float(value)) for value in row)] for step, row in
                enumerate(zip(self.lrs, self.losses, self.smoothed, strict=True)))
        if self.repeats:  # first, so a curve.csv that says "repeats" always has its sibling
            meta = {"repeats": [{"stop_reason": r.stop_reason, "extra": r.extra}
                                for r in self.repeats]}
            repeat_rows = ([index, step, *(repr(float(value)) for value in row)]
                           for index, r in enumerate(self.repeats) for step, row in
                           enumerate(zip(r.lrs, r.losses, r.smoothed, strict=True)))
            _write_csv(self.repeats_path(path), meta, REPEAT_COLUMNS, repeat_rows)
        return _write_csv(path, self._metadata(), CURVE_COLUMNS, rows)

    @classmethod
    def from_csv(cls, path: str | Path, strict: bool = False) -> RangeTestResult:
        """A result written by ``to_csv`` (its repeats too, from the sibling file). ``strict``:
        a file from anywhere, checked row by row (``lrexp.engine.curve_file``, which raises
        ``CurveFileError``), of whose settings only the stop reason and what the suggestion
        reads of the test's start (``pretrained``, ``momentum``) are read."""
        path = Path(path)
        if strict:
            sibling = cls.repeats_path(path)
            return cls.from_text(path.read_text(),
                                 sibling.read_text() if sibling.is_file() else None)
        meta, rows = _read_csv(path, CURVE_COLUMNS)
        columns = _columns(rows, CURVE_COLUMNS[1:])
        meta["diverge_th"] = float(meta.get("diverge_th", DEFAULTS.diverge_th))
        if meta.get("verification") is not None:
            meta["verification"] = Verification.from_dict(meta["verification"])
        if meta.get("repeats"):
            meta["repeats"] = _read_repeats(cls.repeats_path(path), meta)
        return cls(columns["lr"], columns["loss"], columns["loss_smooth"], **_from_file(meta))

    @classmethod
    def from_text(cls, curve: str, repeats: str | None = None) -> RangeTestResult:
        """``from_csv(strict=True)`` of a curve file's text and its repeats file's, if any."""
        _, lrs, losses, smoothed = np.array(
            read_rows(curve, CURVE_COLUMNS, last_row_may_be_cut=True), dtype=np.float64).T
        result = cls(lrs, losses, smoothed, stop_reason=stop_reason(curve), **start_flags(curve))
        if repeats is None:
            return result
        curves = repeat_curves(read_rows(repeats, REPEAT_COLUMNS), result.lrs, result.losses)
        return replace(result, repeats=[cls(*each, **start_flags(curve)) for each in curves])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("lrs", "losses", "smoothed"):
            data[name] = [_json_float(value) for value in getattr(self, name)]
        data["diverge_th"] = _json_float(self.diverge_th)
        if self.verification is not None:
            data["verification"] = self.verification.to_dict()
        data["repeats"] = [r.to_dict() for r in self.repeats]
        return {_FILE_KEYS.get(key, key): value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeTestResult:
        data = dict(data)
        for name in ("lrs", "losses", "smoothed"):
            data[name] = [float(value) for value in data[name]]
        data["diverge_th"] = float(data["diverge_th"])
        if data.get("verification") is not None:
            data["verification"] = Verification.from_dict(data["verification"])
        data["repeats"] = [cls.from_dict(r) for r in data.get("repeats") or []]
        return cls(**_from_file(data))

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> RangeTestResult:
        return cls.from_dict(json.loads(Path(path).read_text()))


class CurveWriter:
    """Appends a range test's rows to its curve CSV while it runs, so that a process killed
    outright (``kill -9``, an out-of-memory kill) leaves its curve up to the last flush.

    The file is ``RangeTestResult.to_csv``'s format with ``stop_reason`` "interrupted" in the
    header: until the finished result replaces it, the curve is a cut-off one. Rows are flushed
    to the OS every ``flush_every_steps`` rows or ``flush_every_s`` seconds, whichever is first.
    Writing is best effort: a full disk stops the writer with one warning, never the test.
    """

    def __init__(self, path: str | Path, settings: RangeTestResult, flush_every_steps: int = 10,
                 flush_every_s: float = 2.0) -> None:
        self.path = Path(path)
        self._monitor = CurveMonitor(settings.beta, math.inf)  # the smoothed column, as stored
        self._flush_every_steps, self._flush_every_s = flush_every_steps, flush_every_s
        self._unflushed, self._flushed_at = 0, time.monotonic()
        self.rows = 0
        self._handle: TextIO | None = None
        meta = {**settings._metadata(), "stop_reason": "interrupted"}
        self._guarded(self._open, meta)

    def _open(self, meta: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._handle = self.path.open("w", newline="")
        handle.write(META_PREFIX + json.dumps(meta) + "\n")
        self._writer = csv.writer(handle)
        self._writer.writerow(CURVE_COLUMNS)

    def append(self, step: int, lr: float, loss: float) -> None:
        self._monitor.update(loss)
        self.rows += 1
        if self._handle is not None:
            self._guarded(self._write_row, step, lr, loss)

    def _write_row(self, step: int, lr: float, loss: float) -> None:
        self._writer.writerow([step, repr(float(lr)), repr(float(loss)),
                               repr(float(self._monitor.smoothed))])
        self._unflushed += 1
        now = time.monotonic()
        due = self._unflushed >= self._flush_every_steps or \
            now - self._flushed_at >= self._flush_every_s
        if due and self._handle is not None:
            self._handle.flush()
            self._unflushed, self._flushed_at = 0, now

    def close(self) -> None:
        if self._handle is not None:
            self._guarded(self._handle.close)
            self._handle = None

    def _guarded(self, write: Callable[..., object], *args: Any) -> None:
        try:
            write(*args)
        except OSError as error:
            log.warning("Appending to %s stopped (%s); the test goes on and its curve is "
                        "written when it ends.", self.path, error.strerror or error)
            if self._handle is not None:
                with contextlib.suppress(OSError):
                    self._handle.close()
            self._handle = None


def _write_csv(path: Path, meta: dict[str, Any], columns: tuple[str, ...],
               rows: Iterable[list[Any]]) -> Path:
    """The comment line with ``meta``, the header and ``rows``, written beside and renamed: a
    crash mid-write never leaves a half file in its place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    try:
        with partial.open("w", newline="") as handle:
            handle.write(META_PREFIX + json.dumps(meta) + "\n")
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _read_csv(path: Path, columns: tuple[str, ...]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(the comment line's metadata, the rows) of a curve file with ``columns``."""
    with path.open(newline="") as handle:
        first = handle.readline()
        meta = json.loads(first[len(META_PREFIX):]) if first.startswith(META_PREFIX) else {}
        if not meta:
            handle.seek(0)
        rows = list(csv.DictReader(handle))
    missing = set(columns) - set(rows[0] if rows else columns)
    if missing:
        raise ValueError(f"{path} is not an lrexp curve: columns {sorted(missing)} missing.")
    return meta, rows


def _columns(rows: list[dict[str, str]], names: Iterable[str]) -> dict[str, FloatArray]:
    return {name: np.array([float(row[name]) for row in rows], dtype=np.float64)
            for name in names}


def _read_repeats(path: Path, settings: dict[str, Any]) -> list[RangeTestResult]:
    """Each repeat's result from ``to_csv``'s sibling file, with the median's settings."""
    meta, rows = _read_csv(path, REPEAT_COLUMNS)
    shared = {key: value for key, value in settings.items()
              if key not in ("stop_reason", "extra", "verification", "repeats")}
    repeats = []
    for index, record in enumerate(meta["repeats"]):
        columns = _columns([row for row in rows if int(row["repeat"]) == index],
                           CURVE_COLUMNS[1:])
        repeats.append(RangeTestResult(
            columns["lr"], columns["loss"], columns["loss_smooth"],
            stop_reason=record["stop_reason"], extra=record.get("extra", {}),
            **_from_file(shared)))
    return repeats


def _from_file(data: dict[str, Any]) -> dict[str, Any]:
    """The constructor's keywords for a file's fields (``_FILE_KEYS`` undone)."""
    names = {stored: name for name, stored in _FILE_KEYS.items()}
    return {names.get(key, key): value for key, value in data.items()}


def _json_float(value: float) -> float | str:
    """Strict JSON has no NaN/inf; those go as strings that ``float()`` reads back."""
    return value if math.isfinite(value) else repr(float(value))
