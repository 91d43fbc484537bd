"""Repeated range tests: the seed of each repeat and the median curve with its spread.

``range_test(..., repeats=k)`` runs k tests from the same initial weights (restored between
them). Repeat 0 runs with the random state the caller left, exactly as ``repeats=1`` does;
repeat i >= 1 first reseeds Python's, numpy's and torch's generators, and the train loader's
own ``torch.Generator`` where it has one, with ``repeat_seed(base_seed, i)``. So the loader's
shuffle, dropout and augmentation differ between repeats, and the whole set is reproducible
from the base seed.

Every repeat follows the same LR schedule, so the curves share one LR grid: point j has the
same LR in each. A repeat that stopped early (diverged) simply has fewer points. The median
curve at point j is the median over the repeats that reached point j; it ends after the last
point that at least half of the repeats reached (fewer than half is a minority, whose median
would be one lucky curve's). A NaN loss counts as +inf: worse than any finite one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lrexp.engine.curve import FloatArray

__all__ = ["MedianCurve", "median_curve", "median_length", "repeat_seed", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators (torch's seeds every CUDA device too): the app
    seeds a run with it, the range test each repeat after the first."""
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def repeat_seed(base_seed: int, repeat: int) -> int:
    """The seed of repeat ``repeat`` (>= 1): numpy's SeedSequence of (base_seed, repeat), so
    neighbouring base seeds and repeats give unrelated streams. Fits every generator (< 2**32)."""
    sequence = np.random.SeedSequence([base_seed % 2**64, repeat])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def median_length(lengths: Sequence[int]) -> int:
    """How many points the median curve has: the most that at least half of the curves reach
    (the ceil(k/2)-th longest length)."""
    if not lengths:
        raise ValueError("median_length needs at least one curve.")
    ordered = sorted(lengths, reverse=True)
    return ordered[(len(ordered) + 1) // 2 - 1]


@dataclass(frozen=True)
class MedianCurve:
    """The median loss per point and its interquartile band over the repeats that reached it."""

    lrs: FloatArray
    median: FloatArray
    q25: FloatArray  # 25th percentile of the loss at each point
    q75: FloatArray  # 75th percentile
    counts: npt.NDArray[np.int64]  # how many repeats reached each point


def median_curve(lrs: Sequence[FloatArray], losses: Sequence[FloatArray]) -> MedianCurve:
    """The median curve of repeats on one LR grid (see the module docstring)."""
    if len(lrs) != len(losses) or not lrs:
        raise ValueError("median_curve needs one LR array per loss array, and at least one.")
    length = median_length([len(curve) for curve in losses])
    grid = max(lrs, key=len)
    for curve_lrs in lrs:
        if not np.array_equal(curve_lrs, grid[: len(curve_lrs)]):
            raise ValueError("The repeats do not share one LR grid: every repeat must use the "
                             "same min_lr, max_lr, num_iter and schedule.")
    table = np.full((len(losses), length), np.nan)
    for row, curve in enumerate(losses):
        values = np.asarray(curve, dtype=np.float64)[:length]
        table[row, : len(values)] = np.where(np.isnan(values), np.inf, values)
    counts = np.sum(~np.isnan(table), axis=0)
    # interpolating between two infinite losses gives NaN: the quantile is infinite there
    with np.errstate(invalid="ignore"):
        quartiles = np.nanquantile(table, [0.25, 0.5, 0.75], axis=0)
    quartiles = np.where(np.isnan(quartiles), np.inf, quartiles)
    return MedianCurve(np.array(grid[:length], dtype=np.float64), quartiles[1], quartiles[0],
                       quartiles[2], counts)
