"""Training schedules from a range test: the bounds of torch's one-cycle and cyclical LR policies.

Both rules read the curve the suggestions read (``lrexp.engine.suggest``), nothing of their own:

* the top of the cycle is where the loss stops falling: the top of the interval of LRs the
  curve supports (``Verdict.interval``). With a blow-up on the curve that is the blow-up LR / 5,
  a fixed distance below the edge of the stable LRs (the edge barely moves with noise, where
  the minimum of a noisy curve wanders by decades); without one, the LR of the smoothed minimum.
  One-cycle peaks lower (below).
* the bottom is where the loss starts to fall (``suggest.fall_start_lr``): where the zero-lag
  loss leaves the level the test started at for good, a tenth of its fall below it.

Cyclical LR (Smith 2017, "Cyclical Learning Rates for Training Neural Networks",
arXiv:1506.01186, section 3.3): run the range test, set base_lr where the loss starts to fall and
max_lr where it stops falling or turns ragged; or, knowing max_lr, base_lr = max_lr / 3 or / 4.
Here base_lr is the fall's start, but at least ``CYCLIC_MIN_RATIO`` below max_lr: a fall that
starts late, or one too small to see, still gets a cycle by his second rule.

One-cycle (Smith 2018, "A disciplined approach to neural network hyper-parameters: Part 1",
arXiv:1803.09820, section 4): the maximum LR from the range test, the minimum about 1/10 to
1/20 of it. Here max_lr is at most the top above, and from scratch the blow-up LR /
``ONECYCLE_PEAK_BELOW_BLOWUP``: a fixed distance below the edge of the stable LRs, the sharper
landmark. A pretrained net's blow-up (where its weights get wrecked) lies far above the LRs it
fine-tunes well at, as for the suggestion (``suggest``'s fine-tuning rule), so when fine-tuning
max_lr is that rule's LR times ``ONECYCLE_PEAK_OVER_SUGGESTION``: a one-cycle training passes
its peak briefly, so its best peak lies above the best constant LR. torch's ``OneCycleLR``
starts at max_lr / div_factor (default 25, fastai's). Here
div_factor puts the start where the loss starts to fall, within ``ONECYCLE_MIN_DIV`` (Smith's
tenth) and ``ONECYCLE_MAX_DIV`` (torch's 25): a fall that spans decades would put the start
where the loss barely moves, spending the warm-up there; where no start can be read it is 25.
(fastai's ``fit_one_cycle`` takes lr_max from its valley or steepest suggestion, points inside
the fall.)

A curve without a supported interval (too short, constant, or a loss that never fell below its
noise and never blew up: its suggestion is at most a rough guess) has no bounds:
``ScheduleBoundsError`` says why and what to do. The settings are as trustworthy as
the result's verdict (``RangeTestResult.verdict``), which says so where they are weak.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy.typing as npt

from lrexp.engine.suggest import assess, fall_start_lr, suggest

if TYPE_CHECKING:  # torch is imported when a scheduler is made, not with the rules
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "CYCLIC_MIN_RATIO", "ONECYCLE_DEFAULT_DIV", "ONECYCLE_MAX_DIV", "ONECYCLE_MIN_DIV",
    "ONECYCLE_PEAK_BELOW_BLOWUP", "ONECYCLE_PEAK_OVER_SUGGESTION",
    "TRAINING_SCHEDULES",
    "CyclicSettings", "OneCycleSettings", "ScheduleBoundsError", "TrainingSchedule",
    "cyclic_settings", "group_lr_ratios", "make_scheduler", "onecycle_settings",
    "schedule_settings",
]

CYCLIC_MIN_RATIO = 4.0  # Smith 2017, 3.3: "set base_lr to 1/3 or 1/4 of max_lr"
ONECYCLE_MIN_DIV = 10.0  # Smith 2018, section 4: the minimum LR 1/10 to 1/20 of the maximum
ONECYCLE_DEFAULT_DIV = 25.0  # torch's OneCycleLR default, after fastai
ONECYCLE_MAX_DIV = ONECYCLE_DEFAULT_DIV  # a start deeper in the plateau only slows the warm-up
# one-cycle's peak, at most the interval's top; chosen on the suggestion benchmark's one-cycle
# truth, tuning split only (rounds 1-13, 51 cases; scripts/bench_suggest.md), leaving one family
# out. From scratch: the blow-up LR / 15 (in all 14 folds; 56 of 84 trials, the fine-tuning
# rule's x 2 52). Fine-tuning: the suggestion x 2 (16 of 18; the blow-up / 15 4).
ONECYCLE_PEAK_BELOW_BLOWUP = 15.0
ONECYCLE_PEAK_OVER_SUGGESTION = 2.0


class ScheduleBoundsError(ValueError):
    """The range test's curve gives no bounds for a training schedule. The message is one
    paragraph: which schedule, why the curve cannot give them, and what to do."""


@dataclass(frozen=True)
class OneCycleSettings:
    """``torch.optim.lr_scheduler.OneCycleLR``'s LR bounds: the LR climbs from
    ``max_lr / div_factor`` (``initial_lr``) to ``max_lr``, then anneals far below the start
    (torch's other defaults stand). ``OneCycleLR(optimizer, **settings.kwargs(),
    total_steps=N)``, or ``RangeTestResult.make_scheduler``."""

    torch_class: ClassVar[str] = "OneCycleLR"
    max_lr: float
    div_factor: float

    @property
    def initial_lr(self) -> float:
        return self.max_lr / self.div_factor

    def kwargs(self) -> dict[str, float]:
        """The settings as torch's keyword arguments."""
        return {"max_lr": self.max_lr, "div_factor": self.div_factor}

    def __str__(self) -> str:
        return (f"{self.torch_class}: max_lr={self.max_lr:.3g}, div_factor={self.div_factor:.3g} "
                f"(starts at {self.initial_lr:.3g})")


@dataclass(frozen=True)
class CyclicSettings:
    """``torch.optim.lr_scheduler.CyclicLR``'s bounds: the LR cycles between ``base_lr`` and
    ``max_lr``. ``CyclicLR(optimizer, **settings.kwargs(), step_size_up=N)``, or
    ``RangeTestResult.make_scheduler``."""

    torch_class: ClassVar[str] = "CyclicLR"
    base_lr: float
    max_lr: float

    def kwargs(self) -> dict[str, float]:
        """The settings as torch's keyword arguments."""
        return {"base_lr": self.base_lr, "max_lr": self.max_lr}

    def __str__(self) -> str:
        return f"{self.torch_class}: base_lr={self.base_lr:.3g}, max_lr={self.max_lr:.3g}"


TrainingSchedule = OneCycleSettings | CyclicSettings


def _bounds(lrs: npt.ArrayLike, losses: npt.ArrayLike, schedule: str, settings: str,
            pretrained: bool) -> tuple[float, float | None, float | None]:
    """(top, start, blow-up): where the loss stops falling, where it starts to and where it
    blew up (None: not seen)."""
    verdict = assess(lrs, losses, pretrained=pretrained)
    if verdict.interval is None:
        raise ScheduleBoundsError(
            f"No {schedule} bounds from this range test: they are read from where the loss "
            f"starts and stops falling, and this curve shows no such fall ({verdict.reason}) "
            f"Rerun the test as that says, or set {settings} by hand."
        )
    return verdict.interval[1], fall_start_lr(lrs, losses), verdict.blowup_lr


def onecycle_settings(lrs: npt.ArrayLike, losses: npt.ArrayLike,
                      pretrained: bool = False) -> OneCycleSettings:
    """One-cycle's bounds from a curve (module docstring: Smith 2018); ``pretrained`` as in
    ``suggest``."""
    top, start, blowup_lr = _bounds(lrs, losses, "one-cycle", "OneCycleLR's max_lr", pretrained)
    if pretrained:
        suggested = suggest(lrs, losses, pretrained=True).lr
        peak = top if suggested is None else min(top, suggested * ONECYCLE_PEAK_OVER_SUGGESTION)
    else:
        peak = top if blowup_lr is None else min(top, blowup_lr / ONECYCLE_PEAK_BELOW_BLOWUP)
    div_factor = (ONECYCLE_DEFAULT_DIV if start is None
                  else min(max(peak / start, ONECYCLE_MIN_DIV), ONECYCLE_MAX_DIV))
    return OneCycleSettings(max_lr=peak, div_factor=div_factor)


def cyclic_settings(lrs: npt.ArrayLike, losses: npt.ArrayLike,
                    pretrained: bool = False) -> CyclicSettings:
    """The cyclical LR's bounds from a curve (module docstring: Smith 2017)."""
    top, start, _ = _bounds(lrs, losses, "cyclic", "CyclicLR's base_lr and max_lr", pretrained)
    base_lr = top / CYCLIC_MIN_RATIO if start is None else min(start, top / CYCLIC_MIN_RATIO)
    return CyclicSettings(base_lr=base_lr, max_lr=top)


TRAINING_SCHEDULES: dict[str, Callable[..., TrainingSchedule]] = {  # (lrs, losses, pretrained)
    "onecycle": onecycle_settings,
    "cyclic": cyclic_settings,
}


def schedule_settings(lrs: npt.ArrayLike, losses: npt.ArrayLike, name: str,
                      pretrained: bool = False) -> TrainingSchedule:
    """The settings of training schedule ``name`` (a key of ``TRAINING_SCHEDULES``) for a model
    that trains from scratch or, ``pretrained``, fine-tunes."""
    if name not in TRAINING_SCHEDULES:
        raise ValueError(f"Unknown training schedule {name!r}; choose one of "
                         f"{sorted(TRAINING_SCHEDULES)}.")
    return TRAINING_SCHEDULES[name](lrs, losses, pretrained=pretrained)


def make_scheduler(optimizer: Optimizer, settings: TrainingSchedule,
                   **torch_kwargs: Any) -> LRScheduler:
    """torch's scheduler for ``settings`` on ``optimizer``; ``torch_kwargs`` go to it as given
    (``total_steps`` for OneCycleLR, ``step_size_up`` for CyclicLR, or any other) and win
    over the settings' own.

    The bounds are the first param group's, as the range test's LRs were; every other group
    keeps its LR ratio to the first (a backbone at 0.1x its head stays at 0.1x), as in the
    range test. torch takes one bound per group as a list."""
    from torch.optim import lr_scheduler

    kwargs: dict[str, Any] = dict(settings.kwargs())
    ratios = group_lr_ratios(optimizer)
    if len(ratios) > 1:
        for bound in ("max_lr", "base_lr"):
            if bound in kwargs:
                kwargs[bound] = [kwargs[bound] * ratio for ratio in ratios]
    scheduler_class = getattr(lr_scheduler, settings.torch_class)
    scheduler: LRScheduler = scheduler_class(optimizer, **{**kwargs, **torch_kwargs})
    return scheduler


def group_lr_ratios(optimizer: Optimizer) -> list[float]:
    """Each param group's LR over the first group's (1.0 each where the first is 0)."""
    lrs = [float(group["lr"]) for group in optimizer.param_groups]
    if not lrs[0] > 0:
        return [1.0] * len(lrs)
    return [lr / lrs[0] for lr in lrs]
