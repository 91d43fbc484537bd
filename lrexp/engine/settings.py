"""The range test's settings: their defaults, their rules and the one error they raise.

Standard library only: the app checks a config against these rules before it imports torch.
``range_test`` takes its keyword defaults from ``DEFAULTS`` and checks its arguments by building
one ``RangeTestSettings``; nothing else in the engine checks these values again.
"""

from __future__ import annotations

import enum
import numbers
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["DEFAULTS", "MAX_LR", "MAX_NUM_ITER", "STOP_REASONS", "Amp", "RangeTestSettings",
           "Schedule", "SettingError"]

# Why a test stopped (RangeTestResult.stop_reason)
STOP_REASONS = ("completed", "diverged", "non-finite", "interrupted", "exhausted")


# The LR grid and the curve are held in memory (8 bytes a point each, several arrays): ten
# million points is far past any curve worth reading, and fails before training, not after.
MAX_NUM_ITER = 10_000_000
# Optimizers scale float32 tensors by the LR, and torch refuses a factor past float32's range
# (3.4e38) mid-step: an LR range ends well below it, decades past any LR that trains.
MAX_LR = 1e30


class SettingError(ValueError):
    """A range-test setting out of range. The message is one paragraph: which setting, the value
    given, and how to fix it."""


class _Name(str, enum.Enum):
    """A setting's value by name; ``str()`` and f-strings give the plain name ("exp", not
    "Schedule.EXP"), so configs, logs and files hold what the user typed."""

    def __str__(self) -> str:
        return str(self.value)


class Schedule(_Name):
    """How the LR grows from min_lr to max_lr (``lrexp.engine.schedules``)."""

    EXP = "exp"  # evenly spaced in log LR: for a range spanning decades
    LINEAR = "linear"  # evenly spaced in LR: for a narrow range


class Amp(_Name):
    """Autocast precision; None (no AMP) is the default."""

    BF16 = "bf16"
    FP16 = "fp16"  # with a GradScaler


@dataclass(frozen=True)
class RangeTestSettings:
    """The range test's tunable settings, checked on construction (``SettingError``).

    Names are coerced to their enums (``schedule="exp"`` becomes ``Schedule.EXP``, which still
    equals "exp") and integral counts to ``int``. ``steps_per_lr`` is a count or "epoch" (one
    pass over the train loader per LR). ``repeats`` is how many range tests run from the same
    initial weights with different data orders (``lrexp.engine.repeats``). ``pretrained`` says
    the model starts from pretrained weights: the suggestion then reads the curve as a
    fine-tuning one (``lrexp.engine.suggest``).
    """

    min_lr: float = 1e-7
    max_lr: float = 10.0
    num_iter: int = 100
    schedule: Schedule | str = Schedule.EXP
    steps_per_lr: int | str = 1
    beta: float = 0.98
    diverge_th: float = 4.0
    amp: Amp | str | None = None
    accumulation_steps: int = 1
    verify: bool = False
    verify_steps: int = 30  # 30 hit most on the tuning split (scripts/bench_suggest.md)
    repeats: int = 1
    pretrained: bool = False  # fine-tuning: the model starts from pretrained weights

    def __post_init__(self) -> None:
        _check_lr_range(self.min_lr, self.max_lr)
        self._set("num_iter", _count("num_iter", self.num_iter, 2,
                                     "A curve needs at least two points; 100 is usual.",
                                     maximum=MAX_NUM_ITER))
        self._set("schedule", _member(Schedule, "schedule", self.schedule,
                                      "Use exp for a range spanning decades, linear for a "
                                      "narrow one."))
        self._set("steps_per_lr", _steps_per_lr(self.steps_per_lr))
        _check_beta(self.beta)
        _check_diverge_th(self.diverge_th)
        if self.amp is not None:
            self._set("amp", _member(Amp, "amp", self.amp,
                                     "amp=None (the default) trains in full precision."))
        self._set("accumulation_steps", _count("accumulation_steps", self.accumulation_steps,
                                               1, "1 means no accumulation."))
        self._set("verify_steps", _count("verify_steps", self.verify_steps, 1,
                                         "30-60 steps per probe is usual."))
        self._set("repeats", _count("repeats", self.repeats, 1,
                                    "1 runs one test; 3-5 repeats show how much the curve and "
                                    "its suggestion move with the data order."))
        if not isinstance(self.pretrained, bool):
            raise _problem("pretrained", self.pretrained, "True or False",
                           "True when the model starts from pretrained weights (fine-tuning).")

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)  # the normalised value, in a frozen dataclass


def _problem(name: str, value: object, rule: str, fix: str) -> SettingError:
    return SettingError(f"{name} must be {rule}; got {name}={value!r}. {fix}")


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_lr_range(min_lr: float, max_lr: float) -> None:
    for name, value, example in (("min_lr", min_lr, "1e-7"), ("max_lr", max_lr, "10")):
        if not (_is_number(value) and 0 < value <= MAX_LR):
            raise _problem(name, value, f"a number > 0 and <= {MAX_LR:g}",
                           f"For example {name}={example}.")
    if not min_lr < max_lr:
        raise SettingError(
            f"max_lr must be greater than min_lr (the LR range must satisfy 0 < min_lr < max_lr "
            f"< inf); got min_lr={min_lr!r} and max_lr={max_lr!r}. Raise max_lr or lower min_lr."
        )


def _check_beta(beta: float) -> None:
    if not (_is_number(beta) and 0 <= beta < 1):
        raise _problem("beta", beta, "a number in [0, 1)",
                       "0.98 is the usual choice; 0 turns the smoothing off.")


def _check_diverge_th(diverge_th: float) -> None:
    if not (_is_number(diverge_th) and diverge_th > 1):
        raise _problem("diverge_th", diverge_th, "a number > 1",
                       "4 is the usual choice; math.inf turns the divergence stop off.")


def _count(name: str, value: object, minimum: int, fix: str,
           maximum: int | None = None) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        count = int(value)  # numpy's integers too
        if count >= minimum and (maximum is None or count <= maximum):
            return count
    rule = f"an integer >= {minimum}" if maximum is None else \
        f"an integer from {minimum} to {maximum:,}"
    raise _problem(name, value, rule, fix)


def _steps_per_lr(value: object) -> int | str:
    if value == "epoch":
        return "epoch"
    return _count("steps_per_lr", value, 1,
                  "Pass a number of optimizer steps per LR, or 'epoch' for one pass over the "
                  "train loader per LR.")


_Member = TypeVar("_Member", bound=_Name)


def _member(kind: type[_Member], name: str, value: object, fix: str) -> _Member:
    try:
        return kind(value)
    except (ValueError, TypeError):
        names = ", ".join(repr(member.value) for member in kind)
        raise _problem(name, value, f"one of {names}", fix) from None


DEFAULTS = RangeTestSettings()
