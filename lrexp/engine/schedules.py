"""Learning-rate schedules for the range test.

The schedule functions are pure: ``(min_lr, max_lr, num_iter) -> array of num_iter LRs``.
Point ``i`` of both schedules sits at the fraction ``i / num_iter`` of the way from ``min_lr``
to ``max_lr`` (the convention of the original ``FindLR``), so the last LR tried is just below
``max_lr``. They take the bounds as given; ``make_schedule`` checks them first
(``lrexp.engine.settings``).

``FindLR`` is the original blog post's scheduler, kept for code written against it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lrexp.engine.settings import DEFAULTS, RangeTestSettings, Schedule, SettingError

__all__ = [
    "SCHEDULES", "FindLR", "exp_schedule", "linear_schedule", "make_schedule", "schedule_lrs",
]

LRs = npt.NDArray[np.float64]


def _fractions(num_iter: int) -> LRs:
    return np.arange(num_iter, dtype=np.float64) / num_iter


def exp_schedule(min_lr: float, max_lr: float, num_iter: int) -> LRs:
    """lr_i = min_lr * (max_lr / min_lr) ** (i / num_iter): evenly spaced in log LR."""
    lrs: LRs = min_lr * (max_lr / min_lr) ** _fractions(num_iter)
    return lrs


def linear_schedule(min_lr: float, max_lr: float, num_iter: int) -> LRs:
    """lr_i = min_lr + (max_lr - min_lr) * i / num_iter: evenly spaced in LR."""
    lrs: LRs = min_lr + (max_lr - min_lr) * _fractions(num_iter)
    return lrs


# keyed by the Schedule members, which are the strings "exp" and "linear"
SCHEDULES: dict[str, Callable[[float, float, int], LRs]] = {
    Schedule.EXP: exp_schedule,
    Schedule.LINEAR: linear_schedule,
}


def schedule_lrs(settings: RangeTestSettings) -> LRs:
    """The LRs that checked ``settings`` ask for."""
    return SCHEDULES[settings.schedule](settings.min_lr, settings.max_lr, settings.num_iter)


def make_schedule(name: str, min_lr: float, max_lr: float, num_iter: int) -> LRs:
    """The LRs of schedule ``name``, after checking the settings (``SettingError``)."""
    return schedule_lrs(RangeTestSettings(min_lr=min_lr, max_lr=max_lr, num_iter=num_iter,
                                          schedule=name))


class FindLR(LRScheduler):
    """The original exponential range-test scheduler.

    Each param group's LR goes from its own base LR (taken from the optimizer) towards
    ``max_lr``: ``base * (max_lr / base) ** (last_epoch / num_iter)``. Call ``step()`` once
    per training iteration.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float = DEFAULTS.max_lr,
        num_iter: int = DEFAULTS.num_iter,
        last_epoch: int = -1,
    ) -> None:
        if num_iter < 1:
            raise SettingError(f"FindLR's num_iter must be >= 1; got num_iter={num_iter!r}. "
                               "It is the number of steps from the base LR to max_lr.")
        self.max_lr = max_lr
        self.num_iter = num_iter
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        fraction = self.last_epoch / self.num_iter
        return [base * (self.max_lr / base) ** fraction for base in self.base_lrs]
