"""Learning-rate suggestions: pure functions of a curve's LRs and raw losses.

Every rule reads the zero-lag smoothing of the finished curve (``lrexp.engine.curve.zero_lag``), not
the lagging online EMA, and returns a ``Suggestion`` carrying the curve's confidence verdict.
A rule never raises on a poor curve: when the curve is too short, constant or non-finite,
``lr`` is None and ``reason`` says why (the peers crash there or answer silently).

* ``steepest``: steepest descent of the loss w.r.t. log LR, searched only up to the minimum so
  a drop after divergence is never picked (torch-lr-finder's rule, made safe).
* ``minimum``: the LR of the minimum divided by ``MINIMUM_DIVISOR`` (fastai's "minimum" divides
  the lagged minimum by 10; see that constant for why the unlagged one is divided by less).
* ``valley``: fastai's rule: the longest strictly decreasing stretch of the curve, and a point
  half-way down it.
* ``edge``: the LR where the loss blew up (``lrexp.engine.curve.blowup_index``) divided by
  ``EDGE_DIVISOR``: a fixed distance below the edge of the stable LRs. Divergence is explosive,
  so this anchor barely moves with minibatch noise, where the minimum of a noisy curve wanders
  by decades. Without a blow-up on the curve it falls back to ``minimum``.
* ``finetune``: the LR of the minimum divided by ``FINE_TUNING_DIVISOR``: the rule for a model
  that starts from pretrained weights.
* ``descent``: fastai's valley read off the lagging EMA (``descent_valley_lr``) times
  ``DESCENT_FACTOR``; where the loss fell less than ``FALL_HIGH`` noise widths before it blew
  up, the blow-up's LR / ``EDGE_DIVISOR`` (a valley that shallow is read off the noise).
* ``default``: per regime (``DEFAULT_METHODS``), the rule the suggestion benchmark
  (scripts/bench_suggest.py, chosen on its tuning families) found best: ``descent`` from
  scratch; ``finetune`` for pretrained weights (``suggest(..., pretrained=True)``), or the
  valley where the two part by more than ``FINE_TUNING_VALLEY_SWITCH`` decades. From scratch
  with an optimizer that keeps no momentum (``suggest(..., momentum=False)``: plain SGD,
  RMSprop's default) it is ``NO_MOMENTUM_FACTOR`` times higher.

The verdict (``assess``) compares how far the loss fell with its minibatch noise, checks that
the loss turned up again before the test ended, and gives the interval of LRs the curve
supports: from where the loss has made half its fall to where it bottoms out. A curve whose
loss never fell below its noise still gets the rule's LR, as a "low" rough guess (without an
interval: nothing on the curve bounds it); "none" (no LR) is left for curves that cannot be
read at all (too short, constant, non-finite). A suggestion past the zero-lag minimum (on
the rising side), or an interval wholly past it, is never "high"; nor is one that a second,
independent reading of the curve places more than ``AGREEMENT_DECADES`` away.

With repeated tests (``range_test(..., repeats=k)``) the rules read the median curve, and the
verdict also weighs how far the repeats' own suggestions disagree (``SuggestionSpread``,
``with_spread``): a suggestion the repeats do not agree on is never "high".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from lrexp.engine.curve import FloatArray, read, readable_end, smooth, start_level

__all__ = [
    "AGREEMENT_DECADES", "CONFIDENCE_LEVELS", "DEFAULT_METHOD", "DEFAULT_METHODS", "METHODS",
    "NO_MOMENTUM_FACTOR", "NO_MOMENTUM_LABEL", "REGIMES", "SPREAD_HIGH_DECADES", "Suggestion",
    "SuggestionSpread", "Verdict", "assess", "checked", "descent", "descent_valley_lr", "edge",
    "fall_start_lr", "finetune", "minimum", "regime_name", "spread_of", "steepest", "suggest",
    "valley", "with_spread",
]

# Fewer usable points than this cannot show a descent and a turn.
MIN_POINTS = 5
CONFIDENCE_LEVELS = ("none", "low", "high")
# A model trained from its initial weights, or one that starts from pretrained weights.
REGIMES = ("from scratch", "fine-tuning")
# How many noise widths the loss must fall: below NONE it never left its noise band; below
# HIGH it did, but not by enough for one reading of the minimum to be trusted.
FALL_NONE, FALL_HIGH = 2.0, 5.0
# fastai divides the LR at the EMA's minimum by 10. Part of that tenth cancels the EMA's lag
# (the EMA's minimum sits a fraction of a decade to several decades past the raw loss's);
# the rest keeps clear of the edge where the loss turns up. The unlagged minimum needs only
# that second part.
MINIMUM_DIVISOR = 2.0
# The rules' constants, chosen on the tuning families of scripts/bench_suggest.py only
# (scripts/bench_suggest.md): for the blow-up rule, hits on the tuning split are level from 10
# to 30 for EDGE_DIVISOR (the middle, 20, taken). Fine-tuning: a pretrained net's best constant LR
# lies further below its curve's minimum than a fresh one's (its weights are already good, and
# a large LR first wrecks them; on a few dozen labels the training loss keeps falling at LRs
# that overfit); the tuning split's fine-tuning curves hit most at 30.
EDGE_DIVISOR = 20.0
FINE_TUNING_DIVISOR = 30.0
# A "high" verdict needs a second, independent reading of the curve to agree within this many
# decades of the rule's own (``_second_reading``: the blow-up rule for the descent's valley,
# the valley for every other rule). Where they part, the curve does not pin the LR down. Chosen
# on the tuning split of rounds 1-7 (102 cases): the widest gap between the high and low hit
# rates with at least two fifths of the verdicts high.
AGREEMENT_DECADES = 0.7
# From scratch the default is the descent's valley (fastai's valley on the lagging EMA) times
# DESCENT_FACTOR; the zero-lag minimum / DESCENT_FALLBACK_DIVISOR where the curve is too short
# for a valley. Chosen on the tuning split of rounds 1-7 (102 cases) by leaving one family out:
# each family scored with the factor chosen on the others (scripts/bench_suggest_tune.py
# --cross-validate); every fold chose 1.5 (the 80-case split of the round before chose 2), 97
# of 150 trials against 86 for the blow-up rule capped at the valley, its two constants chosen
# the same way.
# Where the loss fell less than FALL_HIGH noise widths before it blew up, the descent reads the
# blow-up instead (``_read_off_blowup``; chosen on rounds 1-9's tuning split: 127 of 182 trials
# leaving one family out, EDGE_DIVISOR's 20 in every fold, against 117 for the valley alone;
# with it the factor 1.5 stays: 3 scores one hit more, 2 four fewer).
# Fine-tuning: the valley where the minimum / 30 parts from it by more than
# FINE_TUNING_VALLEY_SWITCH decades.
DESCENT_FACTOR = 1.5
DESCENT_FALLBACK_DIVISOR = 10.0
# From scratch with an optimizer that keeps no momentum (plain SGD, RMSprop's default), the
# default is this much higher, at most a fifth of the blow-up's LR. Such an optimizer makes
# less progress per step at a given LR, and its best constant LR lies closer to the edge of
# stability than the valley's reading says: on the tuning split of rounds 1-14 (274 trials
# from scratch, 74 of them without momentum) leaving one family out chose 1.5 in all 47
# folds, 198 hits against 193 for one factor for every optimizer (scripts/bench_suggest.md).
NO_MOMENTUM_FACTOR = 1.5
NO_MOMENTUM_LABEL = "no momentum"  # in the default's method name: "default (descent, no momentum)"
FINE_TUNING_VALLEY_SWITCH = 0.3
VALLEY_POINTS = 10  # the fewest points the valley is read on
INTERVAL_BELOW_EDGE = (100.0, 5.0)  # the supported interval: blow-up LR / 100 .. / 5
# The loss "starts to fall" (Smith 2017, section 3.3) where it leaves the level it started at for
# good: a tenth of its fall below that level, so the plateau's wobble is not read as the start.
FALL_START_FRACTION = 0.1
# The most the repeats' suggested LRs may spread (interquartile range, in decades) for a "high"
# verdict. Half a decade is a factor of 3.2: one step of the 1-3-10 grid LRs are tuned on. When
# the middle half of the repeats disagree by more than one grid step, one test's number does not
# pin the LR down better than a coarse grid search would. It is also well inside the 1.3 decades
# of the interval the default rule supports (blow-up LR / 100 .. / 5).
SPREAD_HIGH_DECADES = 0.5


@dataclass(frozen=True)
class Verdict:
    """How far a curve can be trusted: ``confidence`` in CONFIDENCE_LEVELS, the LR
    ``interval`` (low, high) the curve supports, and the ``reason`` in plain words."""

    confidence: str
    reason: str
    interval: tuple[float, float] | None = None
    fall_in_noise_widths: float | None = None
    blowup_lr: float | None = None  # where the raw loss blew up; None if it never did


@dataclass(frozen=True)
class Suggestion:
    """A suggested LR with the curve's verdict, or ``lr=None`` with the ``reason`` why not."""

    lr: float | None
    method: str
    index: int | None = None  # the curve point the rule picked (for minimum: the minimum itself)
    reason: str | None = None
    confidence: str = "none"
    interval: tuple[float, float] | None = None
    regime: str = "from scratch"  # in REGIMES: what the rule assumed of the model's start

    def __bool__(self) -> bool:
        return self.lr is not None


_Judged = TypeVar("_Judged", Suggestion, Verdict)


@dataclass(frozen=True)
class _Curve:
    """The readable prefix of a curve and its zero-lag smoothing (``trend``)."""

    lrs: FloatArray
    raw: FloatArray
    trend: FloatArray
    clipped: FloatArray  # what the smoothing read: raw, the diverged tail clipped
    blowup: int | None  # where the loss blew up (a non-finite loss may be past the prefix)
    blowup_lr: float | None

    @property
    def start(self) -> int:
        """First point the rules may pick: a two-sided smoothing has half its neighbours at
        the ends, so the first points are its noisiest (fastai skips the first tenth too)."""
        return min(len(self.raw) // 10, len(self.raw) - MIN_POINTS)

    @property
    def best(self) -> int:
        """Index of the smoothed minimum, after ``start``."""
        return self.start + int(np.argmin(self.trend[self.start:]))

    @property
    def noise(self) -> float:
        """Robust std of the minibatch noise: the scaled median distance of the raw loss from
        its smoothing (a median, so the diverged tail's few huge losses do not count)."""
        end = self.blowup if self.blowup is not None and self.blowup >= MIN_POINTS else None
        # before the blow-up only: the clipped tail would pass for a noiseless stretch
        return float(1.4826 * np.median(np.abs(self.clipped[:end] - self.trend[:end])))


def _readable_curve(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> _Curve | str:
    """The curve the rules read, or the reason there is none."""
    lrs = np.asarray(lrs, dtype=np.float64)
    raw = np.asarray(losses, dtype=np.float64)
    if lrs.shape != raw.shape or lrs.ndim != 1:
        raise ValueError(
            f"lrs and losses must be 1-D arrays of one length, got shapes {lrs.shape} and "
            f"{raw.shape}."
        )
    usable = np.isfinite(lrs) & (lrs > 0)
    end = min(readable_end(raw), len(raw) if usable.all() else int(np.argmin(usable)))
    if end < MIN_POINTS:
        what = "no finite loss" if end == 0 else f"only {end} finite point(s)"
        return (f"the curve has {what}; at least {MIN_POINTS} are needed to see the loss fall "
                "and turn (raise num_iter, or lower min_lr if the loss diverged at once).")
    reading = read(raw)
    blowup = reading.blowup if reading.blowup is not None and reading.blowup < len(lrs) else None
    blowup_lr = None if blowup is None else float(lrs[blowup])
    lrs, raw = lrs[:end], raw[:end]
    if float(raw.max() - raw.min()) <= 1e-9 * max(float(np.abs(raw).max()), 1e-30):
        return (f"the loss is flat at {raw[0]:.6g} over the whole range; check that the loss "
                "depends on the model's parameters and that they require grad.")
    return _Curve(lrs, raw, reading.trend[:end], reading.values[:end], blowup, blowup_lr)


def assess(lrs: npt.ArrayLike, losses: npt.ArrayLike, pretrained: bool = False) -> Verdict:
    """The confidence verdict of a curve (see the module docstring). With ``pretrained`` the
    same rules judge it (the benchmark's tuning split has too few fine-tuning curves to tune
    them apart), and the reason says the curve was read as a fine-tuning one."""
    curve = _readable_curve(lrs, losses)
    if isinstance(curve, str):
        return Verdict("none", curve)
    verdict = replace(_assess(curve), blowup_lr=curve.blowup_lr)
    if not pretrained:
        return verdict
    return replace(verdict, reason=f"{verdict.reason} Read as fine-tuning (pretrained weights): "
                   f"the default is the minimum's LR / {FINE_TUNING_DIVISOR:g}.")


def _assess(curve: _Curve) -> Verdict:
    trend, start, best = curve.trend, curve.start, curve.best
    noise = curve.noise
    peak = float(trend[: best + 1].max())
    fall = peak - float(trend[best])
    widths = fall / noise if noise > 0 else float("inf")
    fell = f"the loss fell {fall:.3g} ({widths:.1f} noise widths of {noise:.2g})"
    blowup = curve.blowup
    if widths < FALL_NONE:
        return _rough_guess(curve, fell, widths, peak, fall)
    interval = _interval(curve, peak, fall)
    rise_after = float(trend[best:].max() - trend[best])
    if blowup is None and rise_after < max(noise, 0.1 * fall):
        return Verdict("low", f"{fell} and was still falling at the end of the range (LR "
                       f"{curve.lrs[-1]:.3g}); the minimum was not reached: raise max_lr.",
                       interval, widths)
    if best - start < 2 or trend[start] - trend[best] < 0.5 * fall:
        return Verdict("low", f"{fell}, mostly before the first points the rules read (LR "
                       f"{curve.lrs[start]:.3g}); lower min_lr so the descent is on the curve.",
                       interval, widths)
    if widths < FALL_HIGH:
        return Verdict("low", f"{fell}: only a little more than its noise, so the reading "
                       "is uncertain; raise num_iter or batch_size.",
                       interval, widths)
    if interval[0] > curve.lrs[best]:
        return Verdict("low", f"{fell}, but the LRs it supports ({interval[0]:.3g} to "
                       f"{interval[1]:.3g}) all lie past its minimum (LR {curve.lrs[best]:.3g}), "
                       "where the loss is rising again; the curve's reading is uncertain.",
                       interval, widths)
    turned = (f"blew up at LR {curve.blowup_lr:.3g}" if blowup is not None
              else f"turned up after LR {curve.lrs[best]:.3g}")
    return Verdict("high", f"{fell} and {turned}.", interval, widths)


def _rough_guess(curve: _Curve, fell: str, widths: float, peak: float, fall: float) -> Verdict:
    """The verdict of a curve whose loss never fell below its noise: still a reading (on the
    benchmark's tuning split the default's LR on such curves trained well about as often as
    elsewhere), "low"; without a blow-up nothing bounds the LRs, so no interval (and no
    schedule bounds)."""
    if curve.blowup is None:
        return Verdict("low", f"{fell}: it never fell below its noise and never blew up, so "
                       "the suggestion is a rough guess; raise max_lr or num_iter, or check "
                       "that the model learns.", None, widths)
    return Verdict("low", f"{fell}: it never fell below its noise before it blew up (LR "
                   f"{curve.blowup_lr:.3g}), so the suggestion is a rough guess; raise "
                   "num_iter or batch_size, or lower min_lr if the loss was already low where "
                   "the test began.", _interval(curve, peak, fall), widths)


@dataclass(frozen=True)
class SuggestionSpread:
    """How far repeated tests' suggested LRs (one per repeat, None where a repeat gave none)
    disagree, in decades of LR: the interquartile range and the full range of their log10."""

    lrs: tuple[float | None, ...]
    median_lr: float | None
    iqr_decades: float | None  # None with fewer than two suggestions
    range_decades: float | None

    @property
    def suggested(self) -> int:
        """How many repeats gave a suggestion."""
        return sum(lr is not None for lr in self.lrs)

    def problem(self) -> str | None:
        """Why the repeats do not agree enough for a "high" verdict, in plain words; None when
        they do."""
        count, given = len(self.lrs), self.suggested
        if 2 * given < count:
            return (f"only {given} of the {count} repeats gave a suggestion, so the curve's "
                    "reading depends on the data order; raise batch_size or num_iter.")
        if self.iqr_decades is not None and self.iqr_decades > SPREAD_HIGH_DECADES:
            found = [lr for lr in self.lrs if lr is not None]
            return (f"the {count} repeats disagree: their suggested LRs spread "
                    f"{self.iqr_decades:.2f} decades (IQR; from {min(found):.3g} to "
                    f"{max(found):.3g}), more than the {SPREAD_HIGH_DECADES} a high confidence "
                    "allows, so the suggestion depends on the data order; raise batch_size "
                    "or num_iter.")
        return None


def spread_of(lrs: Sequence[float | None]) -> SuggestionSpread:
    """The spread of per-repeat suggested LRs (None: that repeat gave none)."""
    found = np.log10([lr for lr in lrs if lr is not None and lr > 0 and math.isfinite(lr)])
    if not len(found):
        return SuggestionSpread(tuple(lrs), None, None, None)
    q25, q50, q75 = np.quantile(found, [0.25, 0.5, 0.75])
    several = len(found) > 1
    return SuggestionSpread(tuple(lrs), float(10**q50),
                            float(q75 - q25) if several else None,
                            float(found.max() - found.min()) if several else None)


def with_spread(judged: _Judged, spread: SuggestionSpread) -> _Judged:
    """``judged`` (a Suggestion or a Verdict) with the repeats' disagreement weighed in: a
    "high" confidence becomes "low" when ``spread.problem()`` names one, and the reason says
    so; "low" keeps its level and gains the sentence; "none" stays as it is."""
    problem = spread.problem()
    if problem is None or judged.confidence == "none":
        return judged
    return replace(judged, confidence="low", reason=f"{judged.reason} But {problem}")


def _interval(curve: _Curve, peak: float, fall: float) -> tuple[float, float]:
    """With a blow-up on the curve: from a hundredth to a fifth of its LR (the band that held
    the best constant LR most often in scripts/bench_suggest.py). Without one: from the first
    LR where the loss has made half its fall to the LR of its minimum."""
    if curve.blowup_lr is not None:
        return curve.blowup_lr / INTERVAL_BELOW_EDGE[0], curve.blowup_lr / INTERVAL_BELOW_EDGE[1]
    best = curve.best
    halfway = np.flatnonzero(curve.trend[: best + 1] <= peak - 0.5 * fall)
    low = int(halfway[0]) if len(halfway) else best
    return float(curve.lrs[low]), float(curve.lrs[best])


def fall_start_lr(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> float | None:
    """The LR where the loss starts to fall: the first point of its final descent to the
    minimum, after the last point where the zero-lag loss was still within
    ``FALL_START_FRACTION`` of its fall of the level the test started at (the last, so a
    noise bump on the plateau is never the start). None when the curve cannot be read or falls
    by less than ``FALL_NONE`` noise widths (no start to see)."""
    curve = _readable_curve(lrs, losses)
    if isinstance(curve, str):
        return None
    trend, best = curve.trend, curve.best
    level = start_level(curve.clipped)
    fall = level - float(trend[best])
    if fall <= 0 or fall < FALL_NONE * curve.noise:
        return None
    still_up = np.flatnonzero(trend[: best + 1] >= level - FALL_START_FRACTION * fall)
    return float(curve.lrs[int(still_up[-1]) + 1 if len(still_up) else 0])


def _with_verdict(suggestion: Suggestion, curve: _Curve) -> Suggestion:
    """``suggestion`` with the curve's verdict; never "high" past the curve's minimum."""
    verdict = _assess(curve)  # "low" or "high": a readable curve always gives its reading
    judged = replace(suggestion, reason=verdict.reason, confidence=verdict.confidence,
                     interval=verdict.interval)
    return _past_minimum_checked(judged, curve)


def _past_minimum_checked(suggestion: Suggestion, curve: _Curve) -> Suggestion:
    minimum_lr = float(curve.lrs[curve.best])
    if suggestion.lr is None or suggestion.lr <= minimum_lr:
        return suggestion
    # past the minimum the loss is rising: that LR trains worse than ones below it
    return replace(suggestion, confidence="low", reason=(
        f"{suggestion.reason} But the suggestion (LR {suggestion.lr:.3g}) lies past the "
        f"curve's minimum (LR {minimum_lr:.3g}), on its rising side; prefer an LR below the "
        "minimum."))


def _second_reading(suggestion: Suggestion, curve: _Curve) -> tuple[float | None, str]:
    """An independent reading of the curve to weigh ``suggestion`` against, and its name: the
    blow-up rule's for the descent's valley, the valley for every other rule."""
    if suggestion.method not in ("descent", "default (descent)"):
        return _valley_of(curve), "the valley of its longest descent"
    if curve.blowup_lr is None:
        return (float(curve.lrs[curve.best]) / MINIMUM_DIVISOR,
                f"its minimum's LR / {MINIMUM_DIVISOR:g}")
    return curve.blowup_lr / EDGE_DIVISOR, f"the blow-up's LR / {EDGE_DIVISOR:g}"


def _agreement_checked(suggestion: Suggestion, curve: _Curve) -> Suggestion:
    second, name = _second_reading(suggestion, curve)
    apart = math.inf if second is None or not suggestion.lr else abs(
        math.log10(suggestion.lr / second))
    if apart <= AGREEMENT_DECADES:
        return suggestion
    where = "finds nothing" if second is None else f"says LR {second:.3g}"
    return replace(suggestion, confidence="low", reason=(
        f"{suggestion.reason} But a second reading of the curve ({name}) {where}, more than "
        f"{AGREEMENT_DECADES:g} decades from the rule's LR {suggestion.lr:.3g}: the curve "
        "does not pin the LR down."))


def checked(suggestion: Suggestion, lrs: npt.ArrayLike, losses: npt.ArrayLike,
            agreement: bool = True) -> Suggestion:
    """A "high" ``suggestion`` made "low" where it lies past the curve's minimum or (with
    ``agreement``) where a second reading of the curve (``_second_reading``) lies more than
    ``AGREEMENT_DECADES`` away."""
    curve = _readable_curve(lrs, losses)
    return suggestion if isinstance(curve, str) else _checked(suggestion, curve, agreement)


def _checked(suggestion: Suggestion, curve: _Curve, agreement: bool = True) -> Suggestion:
    if suggestion.lr is None or suggestion.confidence != "high":
        return suggestion
    judged = _past_minimum_checked(suggestion, curve)
    if not agreement or judged.confidence != "high":
        return judged
    return _agreement_checked(judged, curve)


def descent_valley_lr(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> float | None:
    """fastai's ``valley`` read off the lagging EMA (``lrexp.engine.curve.smooth``) of the
    curve's readable part: 1/3 + 1/6 of the way along the longest decreasing run, the first
    tenth and last five points left out; None when the curve cannot be read or too few points
    remain."""
    curve = _readable_curve(lrs, losses)
    return None if isinstance(curve, str) else _valley_of(curve)


def _valley_of(curve: _Curve) -> float | None:
    smoothed = smooth(curve.raw)
    n = len(curve.lrs)
    keep = slice(n // 10, max(n - 5, 0))
    lrs, smoothed = curve.lrs[keep], smoothed[keep]
    finite = np.isfinite(smoothed)
    lrs, smoothed = lrs[finite], smoothed[finite]
    if len(lrs) < VALLEY_POINTS:  # a few points show the plateau, not the descent
        return None
    start, end = _longest_decreasing_run(smoothed)
    sections = (end - start) / 3
    return float(lrs[max(start + int(sections) + int(sections / 2), 0)])


def _interval_holding(suggestion: Suggestion) -> Suggestion:
    """The supported interval widened to hold the suggestion, where a rule (the descent's
    factor, the fine-tuning rule's move to the valley) places it outside the LRs the curve
    alone supports."""
    if suggestion.lr is None or suggestion.interval is None:
        return suggestion
    low, high = suggestion.interval
    if low <= suggestion.lr <= high:
        return suggestion
    side = "below" if suggestion.lr < low else "above"
    return replace(suggestion, interval=(min(low, suggestion.lr), max(high, suggestion.lr)),
                   reason=f"{suggestion.reason} The supported interval ({low:.3g} to "
                          f"{high:.3g}) is widened to the suggestion, which the rule places "
                          f"{side} it.")


def _moved_by_valley(suggestion: Suggestion, curve: _Curve) -> Suggestion:
    """The fine-tuning default's LR after the second reading: the descent's valley where the
    rule's LR parts from it by more than ``FINE_TUNING_VALLEY_SWITCH`` decades, never up past
    the curve's minimum or a fifth of the blow-up (the rising side)."""
    valley = _valley_of(curve)
    if suggestion.lr is None or valley is None:
        return suggestion
    apart = abs(math.log10(suggestion.lr / valley))
    ceiling = min(float(curve.lrs[curve.best]),
                  curve.blowup_lr / INTERVAL_BELOW_EDGE[1] if curve.blowup_lr else math.inf)
    lr = min(valley, max(ceiling, suggestion.lr)) if apart > FINE_TUNING_VALLEY_SWITCH \
        else suggestion.lr
    if lr == suggestion.lr:
        return suggestion
    return replace(suggestion, lr=lr, reason=(
        f"{suggestion.reason} The rule's LR {suggestion.lr:.3g} becomes {lr:.3g}: the valley "
        f"of the curve's longest descent (LR {valley:.3g}), {apart:.2g} decades away."))


def _raised_without_momentum(suggestion: Suggestion, curve: _Curve,
                             top_tested: float) -> Suggestion:
    """The from-scratch default for an optimizer that keeps no momentum: ``NO_MOMENTUM_FACTOR``
    times the rule's LR, at most the blow-up's LR / 5 (the top of the supported interval) and
    the last LR tested, and never lowered by those caps."""
    if suggestion.lr is None:
        return suggestion
    lr = min(suggestion.lr * NO_MOMENTUM_FACTOR,
             max(_descent_ceiling(curve, top_tested), suggestion.lr))
    if lr == suggestion.lr:
        return suggestion
    return replace(suggestion, lr=lr, index=_nearest_point(curve, lr), reason=(
        f"{suggestion.reason} The optimizer keeps no momentum, so the rule's LR "
        f"{suggestion.lr:.3g} is raised to {lr:.3g} ({lr / suggestion.lr:.2g}x): such an "
        "optimizer trains best closer to the blow-up."))


def steepest(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> Suggestion:
    """LR where the loss falls fastest per decade, before its minimum."""
    curve = _readable_curve(lrs, losses)
    if isinstance(curve, str):
        return Suggestion(None, "steepest", reason=curve)
    start, best = curve.start, curve.best
    if best - start < 2:
        return _with_verdict(Suggestion(None, "steepest"), curve)
    segment = slice(start, best + 1)
    slope = np.gradient(curve.trend[segment], np.log10(curve.lrs[segment]))
    index = start + int(np.argmin(slope))
    return _with_verdict(Suggestion(float(curve.lrs[index]), "steepest", index), curve)


def _below_minimum(lrs: npt.ArrayLike, losses: npt.ArrayLike, divisor: float,
                   method: str) -> Suggestion:
    """The LR at the loss's zero-lag minimum divided by ``divisor``, as rule ``method``."""
    curve = _readable_curve(lrs, losses)
    if isinstance(curve, str):
        return Suggestion(None, method, reason=curve)
    index = curve.best
    return _with_verdict(Suggestion(float(curve.lrs[index]) / divisor, method, index), curve)


def minimum(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> Suggestion:
    """The LR at the loss's minimum divided by ``MINIMUM_DIVISOR``."""
    return _below_minimum(lrs, losses, MINIMUM_DIVISOR, "minimum")


def finetune(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> Suggestion:
    """The LR at the loss's minimum divided by ``FINE_TUNING_DIVISOR`` (pretrained weights)."""
    return _below_minimum(lrs, losses, FINE_TUNING_DIVISOR, "finetune")


def edge(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> Suggestion:
    """The LR where the loss blew up divided by ``EDGE_DIVISOR``; ``minimum`` without one."""
    curve = _readable_curve(lrs, losses)
    if isinstance(curve, str):
        return Suggestion(None, "edge", reason=curve)
    if curve.blowup_lr is None:
        return replace(minimum(lrs, losses), method="edge")
    suggestion = _with_verdict(Suggestion(curve.blowup_lr / EDGE_DIVISOR, "edge", curve.blowup),
                               curve)
    return _below_range_checked(suggestion, curve)


def _longest_decreasing_run(values: FloatArray) -> tuple[int, int]:
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


def valley(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> Suggestion:
    """fastai's ``valley``: 1/3 + 1/6 of the way along the longest descending valley.

    Like fastai, the first tenth and the last five points are left out.
    """
    curve = _readable_curve(lrs, losses)
    if isinstance(curve, str):
        return Suggestion(None, "valley", reason=curve)
    start, stop = curve.start, len(curve.raw) - 5
    if stop - start < MIN_POINTS:
        stop = len(curve.raw)
    max_start, max_end = _longest_decreasing_run(curve.trend[start:stop])
    sections = (max_end - max_start) / 3
    index = start + max(max_start + int(sections) + int(sections / 2), 0)
    return _with_verdict(Suggestion(float(curve.lrs[index]), "valley", index), curve)


def descent(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> Suggestion:
    """The descent's valley (``descent_valley_lr``) times ``DESCENT_FACTOR``, at most the
    blow-up's LR / 5 (the top of the supported interval); the LR at the loss's minimum /
    ``DESCENT_FALLBACK_DIVISOR`` where the curve is too short for a valley; the blow-up's LR /
    ``EDGE_DIVISOR`` where the valley is there but the loss fell less than ``FALL_HIGH`` noise
    widths before it blew up (``_read_off_blowup``)."""
    curve = _readable_curve(lrs, losses)
    if isinstance(curve, str):
        return Suggestion(None, "descent", reason=curve)
    valley_lr = _valley_of(curve)
    if valley_lr is None:
        suggestion = _below_minimum(lrs, losses, DESCENT_FALLBACK_DIVISOR, "descent")
    elif (noisy := _read_off_blowup(curve)) is not None:
        suggestion = noisy
    else:
        # the factor was chosen on exponential ramps; on a linear one DESCENT_FACTOR times
        # the valley can land past the blow-up, and on a curve stopped early past every LR
        # the test reached
        lr = min(valley_lr * DESCENT_FACTOR, _descent_ceiling(curve, float(np.max(lrs))))
        suggestion = _with_verdict(Suggestion(lr, "descent", _nearest_point(curve, lr)), curve)
    return _below_range_checked(suggestion, curve)


def _descent_ceiling(curve: _Curve, top_tested: float) -> float:
    """The most the descent's factors may lift an LR to: the blow-up's LR / 5 (the top of the
    supported interval) and the last LR the test reached."""
    blowup_top = curve.blowup_lr / INTERVAL_BELOW_EDGE[1] if curve.blowup_lr else math.inf
    return min(blowup_top, top_tested)


def _nearest_point(curve: _Curve, lr: float) -> int:
    """Index of the curve point whose LR is nearest ``lr`` (in log)."""
    return int(np.argmin(np.abs(np.log(curve.lrs / lr))))


def _read_off_blowup(curve: _Curve) -> Suggestion | None:
    """The descent's reading of a curve whose loss fell less than ``FALL_HIGH`` noise widths
    before it blew up: there the valley is read off the noise, and the blow-up, where the loss
    explodes, is the sharper landmark; "low". None for any other curve. On the tuning split
    (rounds 1-9, 182 trials from scratch) this hit 127 trials against 117 for the valley on
    every curve, 127 leaving one family out (scripts/bench_suggest.md)."""
    verdict = _assess(curve)
    widths = verdict.fall_in_noise_widths
    if curve.blowup_lr is None or widths is None or widths >= FALL_HIGH:
        return None
    lr = curve.blowup_lr / EDGE_DIVISOR
    minimum_lr = float(curve.lrs[curve.best])
    # not held below the curve's minimum, unlike the other rules: a minimum this close to the
    # noise wanders (on the tuning split half these LRs lay past it, and held there they hit
    # 6 trials fewer)
    past = (f" It lies past the curve's minimum (LR {minimum_lr:.3g}), which a fall this "
            "shallow does not place." if lr > minimum_lr else "")
    return Suggestion(lr, "descent", curve.blowup, confidence="low", interval=verdict.interval,
                      reason=(
        f"the loss fell {widths * curve.noise:.3g} ({widths:.1f} noise widths of "
        f"{curve.noise:.2g}) before it blew up at LR {curve.blowup_lr:.3g}: too little for its "
        f"valley or its minimum to be read, so the suggestion is the blow-up's LR / "
        f"{EDGE_DIVISOR:g}, a rough guess.{past} Raise num_iter or batch_size for a clearer "
        "curve."))


def _below_range_checked(suggestion: Suggestion, curve: _Curve) -> Suggestion:
    """"low", saying so, where a rule's distance puts the LR below the tested range."""
    if suggestion.lr is None or suggestion.lr >= curve.lrs[0]:
        return suggestion
    return replace(suggestion, confidence="low", reason=(
        f"the suggestion (LR {suggestion.lr:.3g}) lies below the tested range (from LR "
        f"{curve.lrs[0]:.3g}): the curve's descent came too soon; lower min_lr. "
        f"{suggestion.reason}"))


METHODS: dict[str, Callable[..., Suggestion]] = {
    "descent": descent,
    "edge": edge,
    "finetune": finetune,
    "minimum": minimum,
    "steepest": steepest,
    "valley": valley,
}

# Picked by scripts/bench_suggest.py on its tuning families, per regime (scripts/bench_suggest.md).
DEFAULT_METHODS = {REGIMES[0]: "descent", REGIMES[1]: "finetune"}
DEFAULT_METHOD = DEFAULT_METHODS[REGIMES[0]]


def regime_name(pretrained: bool) -> str:
    """The regime a suggestion assumes (in REGIMES): "fine-tuning" for pretrained weights."""
    return REGIMES[1] if pretrained else REGIMES[0]


def suggest(lrs: npt.ArrayLike, losses: npt.ArrayLike, method: str = "default",
            pretrained: bool = False, momentum: bool = True) -> Suggestion:
    """The suggestion of ``method`` ("default" or a name in METHODS). ``pretrained``: the
    model started from pretrained weights, and the default is the fine-tuning rule
    (``DEFAULT_METHODS``); the reason says which regime was assumed. ``momentum=False``: the
    optimizer keeps no momentum (``keeps_momentum``), and the from-scratch default is
    ``NO_MOMENTUM_FACTOR`` times higher."""
    regime = regime_name(pretrained)
    name = DEFAULT_METHODS[regime] if method == "default" else method
    if name not in METHODS:
        raise ValueError(
            f"Unknown suggestion method {method!r}; choose 'default' or one of {sorted(METHODS)}."
        )
    result = METHODS[name](lrs, losses)
    curve = _readable_curve(lrs, losses)  # read once for the checks and the moves below
    without_momentum = method == "default" and not pretrained and not momentum
    if not isinstance(curve, str):
        if without_momentum:  # before the checks, which then judge the LR it gives
            result = _raised_without_momentum(result, curve, float(np.max(lrs)))
        # the verdict weighs the rule's own reading against a second one; the fine-tuning
        # default then moves to the valley where the two part
        result = _checked(result, curve)
        if method == "default" and pretrained:
            result = _moved_by_valley(result, curve)
    result = _interval_holding(result)
    start = "starts from pretrained weights" if pretrained else "trains from its initial weights"
    optimizer = ", with an optimizer that keeps no momentum" if without_momentum else ""
    assumed = f"Assumed regime: {regime} (the model {start}{optimizer})."
    result = replace(result, regime=regime,
                     reason=f"{result.reason} {assumed}" if result.reason else assumed)
    if method != "default":
        return result
    label = f"{name}, {NO_MOMENTUM_LABEL}" if without_momentum else name
    return replace(result, method=f"default ({label})")
