"""Loss smoothing and the divergence rule, written once and used online and offline.

The engine feeds ``CurveMonitor.update`` one loss per step (plain Python floats, a few
microseconds); ``smooth`` and ``divergence_step`` replay the same code over an array.

Divergence rule (shift-invariant). The classical rule "smoothed > th x best" measures the rise
against the distance of the best loss from zero, so adding a constant to the loss changes when
it fires, and a negative loss breaks it. Here the rise over the best smoothed loss is measured
against a scale that moves with the curve, not with zero:

    diverged  <=>  smoothed - best > (th - 1) * max(drop, noise)

* ``drop``: how far the smoothed loss fell before reaching its best (peak before best - best);
* ``noise``: the median absolute step-to-step change of the raw loss so far; a median, so the
  few exploding steps before the stop cannot inflate it.

The noise floor is what keeps the rule quiet in a flat start, where the drop so far is only
minibatch noise. Both terms shift with the loss and scale with it, so the stopping step is
unchanged by ``loss + c`` and ``k * loss``. With ``th = 4`` the loss must climb three drops
(or three noise widths) above its best.
"""

from __future__ import annotations

import math
from bisect import insort

import numpy as np

__all__ = ["WARMUP_STEPS", "CurveMonitor", "divergence_step", "smooth"]

# Steps before the best is tracked and the rule may fire: the noise estimate needs some
# differences, and the smoothed loss some batches, to mean anything. Non-finite losses stop the
# test from step 0 on.
WARMUP_STEPS = 8


class CurveMonitor:
    """Debiased EMA of the loss (fastai's AvgSmoothLoss) plus the divergence rule."""

    __slots__ = (
        "beta", "diverge_th", "count", "_ema", "smoothed", "best", "_peak", "drop",
        "_last_raw", "_sorted_abs_changes", "_beta_power", "_factor",
    )

    def __init__(self, beta: float = 0.98, diverge_th: float = 4.0) -> None:
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}; 0.98 is the usual choice.")
        if not diverge_th > 1:
            raise ValueError(
                f"diverge_th must be > 1, got {diverge_th!r}; use math.inf to never stop early."
            )
        self.beta = beta
        self.diverge_th = diverge_th
        self.count = 0
        self._ema = 0.0
        self.smoothed = math.nan
        self.best = math.inf
        self._peak = -math.inf
        self.drop = 0.0
        self._last_raw = math.nan
        self._sorted_abs_changes: list[float] = []
        self._beta_power = 1.0  # beta ** count, kept by multiplication (called every step)
        self._factor = diverge_th - 1.0

    def update(self, loss: float) -> str | None:
        """Take one raw loss; return "non-finite" or "diverged" when the test should stop."""
        if loss - loss != 0.0:  # NaN or +-inf; cheaper than math.isfinite on the hot path
            self.smoothed = math.nan
            return "non-finite"
        beta = self.beta
        count = self.count = self.count + 1
        self._beta_power *= beta
        self._ema = ema = beta * self._ema + (1.0 - beta) * loss
        smoothed = self.smoothed = ema / (1.0 - self._beta_power)
        if count > 1:
            insort(self._sorted_abs_changes, abs(loss - self._last_raw))
        self._last_raw = loss
        if smoothed > self._peak:
            self._peak = smoothed
        if count < WARMUP_STEPS:
            return None
        # The first smoothed values average only a few batches: a lucky one would become a
        # "best" that the curve's normal wobble later seems to rise far above.
        if smoothed < self.best:
            self.best = smoothed
            self.drop = self._peak - smoothed
            return None
        rise, factor = smoothed - self.best, self._factor
        # the median (noise) is looked up only once the rise beats the drop: it rarely does
        if rise > factor * self.drop and rise > factor * self.noise:
            return "diverged"
        return None

    @property
    def noise(self) -> float:
        """Median |raw change| between consecutive steps (0 before the second step)."""
        changes = self._sorted_abs_changes
        return changes[len(changes) // 2] if changes else 0.0


def smooth(losses: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """The debiased EMA of ``losses``; NaN from the first non-finite loss on."""
    monitor = CurveMonitor(beta, math.inf)
    out = np.full(len(losses), np.nan)
    for i, loss in enumerate(np.asarray(losses, dtype=np.float64)):
        if monitor.update(float(loss)) == "non-finite":
            break
        out[i] = monitor.smoothed
    return out


def divergence_step(
    losses: np.ndarray, beta: float = 0.98, diverge_th: float = 4.0
) -> tuple[int | None, str | None]:
    """(index, reason) of the step where the engine would stop on this curve, else (None, None)."""
    monitor = CurveMonitor(beta, diverge_th)
    for i, loss in enumerate(np.asarray(losses, dtype=np.float64)):
        reason = monitor.update(float(loss))
        if reason is not None:
            return i, reason
    return None, None
