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

import functools
import math
from bisect import insort
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lrexp.engine.settings import DEFAULTS, RangeTestSettings

__all__ = [
    "WARMUP_STEPS", "CurveMonitor", "FloatArray", "Reading", "blowup_index", "divergence_step",
    "noise_scale", "read", "readable_end", "readable_losses", "smooth", "start_level", "zero_lag",
]

FloatArray = npt.NDArray[np.float64]

# Steps before the best is tracked and the rule may fire: the noise estimate needs some
# differences, and the smoothed loss some batches, to mean anything. Non-finite losses stop the
# test from step 0 on.
WARMUP_STEPS = 8


class CurveMonitor:
    """Debiased EMA of the loss (fastai's AvgSmoothLoss) plus the divergence rule.

    It takes ``beta`` and ``diverge_th`` as given: its makers check them first
    (``RangeTestSettings``), once, off the per-step path.
    """

    __slots__ = (
        "beta", "diverge_th", "count", "_ema", "smoothed", "best", "_peak", "drop",
        "_last_raw", "_sorted_abs_changes", "_beta_power", "_factor",
    )

    def __init__(
        self, beta: float = DEFAULTS.beta, diverge_th: float = DEFAULTS.diverge_th
    ) -> None:
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


def smooth(losses: npt.ArrayLike, beta: float = DEFAULTS.beta) -> FloatArray:
    """The debiased EMA of ``losses``; NaN from the first non-finite loss on."""
    RangeTestSettings(beta=beta)  # SettingError for a beta out of range
    monitor = CurveMonitor(beta, math.inf)
    values = np.asarray(losses, dtype=np.float64)
    out = np.full(len(values), np.nan)
    for i, loss in enumerate(values):
        if monitor.update(float(loss)) == "non-finite":
            break
        out[i] = monitor.smoothed
    return out


def divergence_step(
    losses: npt.ArrayLike, beta: float = DEFAULTS.beta, diverge_th: float = DEFAULTS.diverge_th
) -> tuple[int | None, str | None]:
    """(index, reason) of the step where the engine would stop on this curve, else (None, None)."""
    RangeTestSettings(beta=beta, diverge_th=diverge_th)  # SettingError for either out of range
    monitor = CurveMonitor(beta, diverge_th)
    for i, loss in enumerate(np.asarray(losses, dtype=np.float64)):
        reason = monitor.update(float(loss))
        if reason is not None:
            return i, reason
    return None, None


# -- reading a finished curve -----------------------------------------------------------------
# The online EMA above must be causal (it decides when to stop), and so it lags: with beta=0.98
# a steadily falling loss is read about 1/(1-beta) = 50 steps late, several decades of LR on a
# 100-point exponential sweep. Once the curve is finished nothing forces causality, so the
# suggestion rules read a two-sided smoothing of it instead (``zero_lag``).

# Bandwidths (in curve points) that the AICc criterion chooses between.
_BANDWIDTHS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)


def readable_end(losses: FloatArray) -> int:
    """Length of the curve's finite prefix: nothing after a NaN or inf is read."""
    finite = np.isfinite(np.asarray(losses, dtype=np.float64))
    return len(finite) if finite.all() else int(np.argmin(finite))


def noise_scale(losses: FloatArray) -> float:
    """Robust std of the step-to-step minibatch noise: the MAD of consecutive differences,
    scaled for a normal distribution and for differencing (which doubles the variance).
    A trend adds little to it, and a few exploding steps nothing."""
    changes = np.diff(np.asarray(losses, dtype=np.float64))
    changes = changes[np.isfinite(changes)]
    if not len(changes):
        return 0.0
    return float(1.4826 * np.median(np.abs(changes - np.median(changes))) / math.sqrt(2.0))


@dataclass(frozen=True)
class Reading:
    """A finished curve as the suggestion rules read it, computed once per curve (``read``)."""

    values: FloatArray  # the finite prefix, the diverged tail clipped (``readable_losses``)
    trend: FloatArray  # its zero-lag smoothing, one entry per value
    blowup: int | None  # where the loss blew up, an index into the whole curve


def read(losses: FloatArray) -> Reading:
    """The reading of ``losses``. Every rule, the verdict, the plot and the summary ask for
    it, so it is computed once per curve and kept (by content) for the next asker."""
    return _read(np.ascontiguousarray(losses, dtype=np.float64).tobytes())


@functools.lru_cache(maxsize=32)
def _read(data: bytes) -> Reading:
    raw = np.frombuffer(data, dtype=np.float64)
    values = readable_losses(raw)
    trend = _smooth(values) if len(values) >= 3 else values.copy()
    for array in (values, trend):
        array.setflags(write=False)  # shared by every caller of the cache
    return Reading(values, trend, _blowup(raw, values, trend))


def zero_lag(losses: FloatArray, bandwidth: float | None = None) -> FloatArray:
    """A two-sided (zero-lag) smoothing of a finished curve; NaN past its finite prefix.

    Local linear regression with a Gaussian kernel over the curve's points (evenly spaced in
    log LR for the exp schedule): unlike an EMA it has no lag, and unlike a centred moving
    average it has no bias at the ends, where a range test's minimum often lies. The bandwidth
    (in points) is chosen by the corrected Akaike criterion of Hurvich, Simonoff and Tsai
    (1998) unless given, so a noisy curve is smoothed more than a clean one without a constant
    tuned to any case (generalized cross-validation under-smooths 100-point curves: pure noise
    then shows "minima" of several noise widths).

    The diverged tail cannot leak backwards: losses are clipped at the curve's starting level
    plus three noise widths, so a loss of 1e6 after the stop weighs no more than one that has
    merely climbed back to where the test began.
    """
    raw = np.asarray(losses, dtype=np.float64)
    out = np.full(len(raw), np.nan)
    if bandwidth is None:
        trend = read(raw).trend
    else:
        values = readable_losses(raw)
        trend = _local_linear(values, bandwidth)[0] if len(values) >= 3 else values
    out[:len(trend)] = trend
    return out


def _smooth(values: FloatArray) -> FloatArray:
    """The local linear fit whose bandwidth has the lowest AICc."""
    candidates = [h for h in _BANDWIDTHS if h <= max(1.0, len(values) / 4)]
    fits = [_local_linear(values, h) for h in candidates]
    return min(fits, key=lambda fit: _aicc(values, *fit))[0]


def readable_losses(losses: FloatArray) -> FloatArray:
    """The losses ``zero_lag`` smooths: the finite prefix, clipped at the starting level plus
    three noise widths (see ``zero_lag``)."""
    values = np.asarray(losses, dtype=np.float64)
    values = values[: readable_end(values)]
    if not len(values):
        return values.copy()
    ceiling = start_level(values) + 3.0 * noise_scale(values)
    return np.minimum(values, max(ceiling, float(_head(values).max())))


def _head(values: FloatArray) -> FloatArray:
    """Where the test began: its first tenth, at least 3 points."""
    return values[: max(3, len(values) // 10)]


def start_level(values: FloatArray) -> float:
    """The loss's level where the test began: the median of its first tenth (3 points at least)."""
    return float(np.median(_head(values)))


def blowup_index(losses: FloatArray) -> int | None:
    """Where the loss blew up: past the zero-lag minimum, the first of two raw losses in a row
    more than three noise widths above the level the test started at (the loss is worse than
    before any training: the explosion), or the first point of the final stretch in which the
    zero-lag loss stays two noise widths above that level, or the first non-finite loss,
    whichever comes first. None when the curve does not end blown up (the range ended first).

    The raw loss, not only its smoothing: an explosion the optimizer half recovers from (Adam's
    loss spikes, then settles back near where it began) keeps the smoothing under the level for
    a while, and the final stretch above it would mark the blow-up decades late.
    Divergence is explosive, so this point moves little with noise, unlike the minimum of a
    noisy curve; it marks the edge of the stable LRs."""
    return read(losses).blowup


def _blowup(raw: FloatArray, values: FloatArray, trend: FloatArray) -> int | None:
    end = len(values)
    cut_short = end < len(raw)  # a non-finite loss ends the readable part: a blow-up there
    if end < 3:
        return end if cut_short else None
    level, noise = start_level(values), noise_scale(values)
    # a relative floor: on a noiseless flat curve rounding alone must not look like a rise
    floor = 1e-9 * max(abs(level), 1.0)
    above = trend > level + max(2.0 * noise, floor)
    if not (above[-1] or cut_short):
        return None
    calm = np.flatnonzero(~above)
    final_stretch = int(calm[-1]) + 1 if len(calm) else 0
    best = int(np.argmin(trend))
    # two points in a row, so one unlucky batch is not an explosion
    high = raw[best:end] > level + max(3.0 * noise, floor)
    exploded = best + np.flatnonzero(high[:-1] & high[1:])
    candidates = [int(exploded[0])] if len(exploded) else []
    candidates.append(end if not above[-1] else final_stretch)
    return min(candidates)


def _local_linear(values: FloatArray, bandwidth: float) -> tuple[FloatArray, FloatArray]:
    """(fit, diagonal of the hat matrix) of a Gaussian-kernel local linear regression."""
    n = len(values)
    half_width = min(n - 1, int(math.ceil(4 * bandwidth)))
    s0, s1, s2, t0, t1 = (np.zeros(n) for _ in range(5))
    for offset in range(-half_width, half_width + 1):
        weight = math.exp(-0.5 * (offset / bandwidth) ** 2)
        lo, hi = max(0, -offset), min(n, n - offset)  # points i whose neighbour i+offset exists
        neighbour = values[lo + offset:hi + offset]
        s0[lo:hi] += weight
        s1[lo:hi] += weight * offset
        s2[lo:hi] += weight * offset * offset
        t0[lo:hi] += weight * neighbour
        t1[lo:hi] += weight * offset * neighbour
    det = s0 * s2 - s1 * s1
    fit = (s2 * t0 - s1 * t1) / det
    return fit, s2 / det  # the weight of point i on its own fit (kernel weight 1 at offset 0)


def _aicc(values: FloatArray, fit: FloatArray, leverage: FloatArray) -> float:
    """log(residual variance) + 1 + 2 (tr H + 1) / (n - tr H - 2): Hurvich et al. (1998)."""
    n, dof = len(values), float(leverage.sum())
    residual = float(np.mean((values - fit) ** 2))
    if n - dof - 2 <= 0:
        return math.inf
    if residual <= 0:  # an exact fit: the narrowest bandwidth is as good as any
        return -math.inf
    return math.log(residual) + 1 + 2 * (dof + 1) / (n - dof - 2)
