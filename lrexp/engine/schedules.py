"""Learning-rate schedules for the range test.

The schedule functions are pure: ``(min_lr, max_lr, num_iter) -> array of num_iter LRs``.
Point ``i`` of both schedules sits at the fraction ``i / num_iter`` of the way from ``min_lr``
to ``max_lr`` (the convention of the original ``FindLR``), so the last LR tried is just below
``max_lr``.

``FindLR`` is the original blog post's scheduler, kept for code written against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["SCHEDULES", "FindLR", "exp_schedule", "linear_schedule", "make_schedule"]


def _fractions(num_iter: int) -> np.ndarray:
    if num_iter < 2:
        raise ValueError(f"num_iter must be at least 2 to make a curve, got {num_iter}.")
    return np.arange(num_iter, dtype=np.float64) / num_iter


def exp_schedule(min_lr: float, max_lr: float, num_iter: int) -> np.ndarray:
    """lr_i = min_lr * (max_lr / min_lr) ** (i / num_iter): evenly spaced in log LR."""
    return min_lr * (max_lr / min_lr) ** _fractions(num_iter)


def linear_schedule(min_lr: float, max_lr: float, num_iter: int) -> np.ndarray:
    """lr_i = min_lr + (max_lr - min_lr) * i / num_iter: evenly spaced in LR."""
    return min_lr + (max_lr - min_lr) * _fractions(num_iter)


SCHEDULES: dict[str, Callable[[float, float, int], np.ndarray]] = {
    "exp": exp_schedule,
    "linear": linear_schedule,
}


def make_schedule(name: str, min_lr: float, max_lr: float, num_iter: int) -> np.ndarray:
    """The LRs of schedule ``name``, after checking the bounds."""
    if name not in SCHEDULES:
        raise ValueError(
            f"Unknown schedule {name!r}; choose one of {sorted(SCHEDULES)} "
            "(exp for a range spanning decades, linear for a narrow one)."
        )
    if not 0 < min_lr < max_lr < math.inf:
        raise ValueError(
            f"The LR range must satisfy 0 < min_lr < max_lr < inf, got min_lr={min_lr!r} and "
            f"max_lr={max_lr!r}; pass finite bounds, e.g. min_lr=1e-7 and max_lr=10."
        )
    return SCHEDULES[name](min_lr, max_lr, num_iter)


class FindLR(LRScheduler):
    """The original exponential range-test scheduler.

    Each param group's LR goes from its own base LR (taken from the optimizer) towards
    ``max_lr``: ``base * (max_lr / base) ** (last_epoch / num_iter)``. Call ``step()`` once
    per training iteration.
    """

    def __init__(
        self, optimizer: Optimizer, max_lr: float = 10.0, num_iter: int = 100, last_epoch: int = -1
    ) -> None:
        if num_iter < 1:
            raise ValueError(f"FindLR needs num_iter >= 1, got {num_iter}.")
        self.max_lr = max_lr
        self.num_iter = num_iter
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        fraction = self.last_epoch / self.num_iter
        return [base * (self.max_lr / base) ** fraction for base in self.base_lrs]
