"""Learning-rate suggestions: pure functions of a curve's LRs and raw losses.

Every rule returns a ``Suggestion`` and never raises on a poor curve: when the curve is too
short, flat or non-finite, ``lr`` is None and ``reason`` says why (the peers crash there).

* ``steepest``: steepest descent of the smoothed loss w.r.t. log LR, searched only up to the
  smoothed minimum so a drop after divergence is never picked (torch-lr-finder's rule, made safe).
* ``minimum``: the LR of the smoothed minimum, divided by 10 (fastai's "minimum").
* ``valley``: fastai's rule: the longest strictly decreasing stretch of the smoothed curve, and a
  point half-way down it.
* ``default``: the rule the suggestion benchmark (scripts/bench_suggest.py) found best; see README.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lrexp.curve import smooth

__all__ = ["DEFAULT_METHOD", "METHODS", "Suggestion", "minimum", "steepest", "suggest", "valley"]

# Fewer usable points than this cannot show a descent and a turn.
MIN_POINTS = 5


@dataclass(frozen=True)
class Suggestion:
    """A suggested LR, or ``lr=None`` with the ``reason`` no LR could be suggested."""

    lr: float | None
    method: str
    index: int | None = None  # the curve point the rule picked (for minimum: the minimum itself)
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.lr is not None


@dataclass(frozen=True)
class _Curve:
    """The finite prefix of a curve and its smoothed loss."""

    lrs: np.ndarray
    raw: np.ndarray
    smoothed: np.ndarray

    @property
    def start(self) -> int:
        """First point the rules may pick: the debiased EMA of the first few points averages
        only a handful of batches, and a lucky one looks like a minimum or a steep drop.
        fastai skips the first tenth for the same reason."""
        return min(len(self.raw) // 10, len(self.raw) - MIN_POINTS)

    @property
    def best(self) -> int:
        """Index of the smoothed minimum, after ``start``."""
        return self.start + int(np.argmin(self.smoothed[self.start:]))


def _usable_curve(
    lrs: np.ndarray, losses: np.ndarray, beta: float, method: str
) -> _Curve | Suggestion:
    lrs = np.asarray(lrs, dtype=np.float64)
    raw = np.asarray(losses, dtype=np.float64)
    if lrs.shape != raw.shape or lrs.ndim != 1:
        raise ValueError(
            f"lrs and losses must be 1-D arrays of one length, got shapes {lrs.shape} and "
            f"{raw.shape}."
        )
    finite = np.isfinite(raw) & np.isfinite(lrs) & (lrs > 0)
    end = len(raw) if finite.all() else int(np.argmin(finite))
    if end < MIN_POINTS:
        what = "no finite loss" if end == 0 else f"only {end} finite point(s)"
        return Suggestion(
            None, method, reason=f"the curve has {what}; at least {MIN_POINTS} are needed "
            "(lower min_lr or raise num_iter)."
        )
    lrs, raw = lrs[:end], raw[:end]
    smoothed = smooth(raw, beta)
    spread = float(smoothed.max() - smoothed.min())
    if spread <= 1e-9 * float(np.abs(smoothed).max()):
        return Suggestion(
            None, method, reason=f"the loss is flat at {smoothed[0]:.6g} over the whole range; "
            "check that the loss depends on the model's parameters and that they require grad."
        )
    return _Curve(lrs, raw, smoothed)


def steepest(lrs, losses, *, beta: float = 0.98) -> Suggestion:
    """LR where the smoothed loss falls fastest per decade, before the smoothed minimum."""
    curve = _usable_curve(lrs, losses, beta, "steepest")
    if isinstance(curve, Suggestion):
        return curve
    start, best = curve.start, curve.best
    if best - start < 2:
        return Suggestion(
            None, "steepest", reason="the loss is lowest at the very start of the curve; "
            "lower min_lr so the descent is on the curve."
        )
    segment = slice(start, best + 1)
    slope = np.gradient(curve.smoothed[segment], np.log10(curve.lrs[segment]))
    index = start + int(np.argmin(slope))
    return Suggestion(float(curve.lrs[index]), "steepest", index)


def minimum(lrs, losses, *, beta: float = 0.98) -> Suggestion:
    """A tenth of the LR at the smoothed minimum (fastai's ``minimum``)."""
    curve = _usable_curve(lrs, losses, beta, "minimum")
    if isinstance(curve, Suggestion):
        return curve
    index = curve.best
    return Suggestion(float(curve.lrs[index]) / 10.0, "minimum", index)


def _longest_decreasing_run(values: np.ndarray) -> tuple[int, int]:
    """(start, end) of fastai's valley: the longest strictly decreasing subsequence ends at end,
    and start = end - its length."""
    n = len(values)
    lengths = np.ones(n, dtype=np.int64)
    max_start, max_end = 0, 0
    for i in range(1, n):
        higher_before = values[:i] > values[i]
        if higher_before.any():
            lengths[i] = lengths[:i][higher_before].max() + 1
        if lengths[i] > lengths[max_end]:
            max_end = i
            max_start = max_end - int(lengths[max_end])
    return max_start, max_end


def valley(lrs, losses, *, beta: float = 0.98) -> Suggestion:
    """fastai's ``valley``: 1/3 + 1/6 of the way along the longest descending valley.

    Like fastai, the first tenth and the last five points are left out.
    """
    curve = _usable_curve(lrs, losses, beta, "valley")
    if isinstance(curve, Suggestion):
        return curve
    start, stop = curve.start, len(curve.raw) - 5
    if stop - start < MIN_POINTS:
        stop = len(curve.raw)
    max_start, max_end = _longest_decreasing_run(curve.smoothed[start:stop])
    sections = (max_end - max_start) / 3
    index = start + max(max_start + int(sections) + int(sections / 2), 0)
    return Suggestion(float(curve.lrs[index]), "valley", index)


METHODS: dict[str, Callable[..., Suggestion]] = {
    "steepest": steepest,
    "minimum": minimum,
    "valley": valley,
}

# Picked by scripts/bench_suggest.py (hits per rule over its cases; table in the README).
DEFAULT_METHOD = "minimum"


def suggest(lrs, losses, method: str = "default", *, beta: float = 0.98) -> Suggestion:
    """The suggestion of ``method`` ("default" or a name in METHODS)."""
    name = DEFAULT_METHOD if method == "default" else method
    if name not in METHODS:
        raise ValueError(
            f"Unknown suggestion method {method!r}; choose 'default' or one of {sorted(METHODS)}."
        )
    result = METHODS[name](lrs, losses, beta=beta)
    return result if method != "default" else Suggestion(
        result.lr, f"default ({name})", result.index, result.reason
    )
