"""Suggestion-quality benchmark: which LR rule lands on an LR that trains well, on cases it was
not tuned on?

Cases (small CPU problems: data x architecture x optimizer x loss x batch x training length) are
grouped in families, and the families are split once, here in the code, into a TUNING set and a
HELD-OUT set (``SPLIT``). Every constant of lrexp's rules, verdict and probe is chosen on the
tuning families only; the held-out families are the headline. The split was committed before
any rule changed.

For each case, 2 seeds:
1. Truth: train at each constant LR of a grid (3 per decade) for the case's whole training
   length; ``best`` = the lowest seed-mean validation loss on the grid. A second truth column
   trains torch's OneCycleLR with the grid's LRs as max_lr (div_factor 25, torch's default).
2. Per seed, lrexp's range test (1e-7 -> 10, 100 points, ``pretrained`` set for fine-tuning
   cases) on that seed's batches; a second test with the validation set (``val_loader``: the
   curve records the val loss). Every rule reads the same curves: lrexp's and the peers'
   (fastai minimum/10 and valley, torch-lr-finder steepest, Lightning steepest).
3. A probe table: from the initial weights, short trainings at the grid LRs below the blow-up,
   each measured at several horizons by its training loss, the loss on a slice of the train
   batches held out of the probe, and the val loss. The verify probe's variants are replayed
   on it offline; Spearman's rank correlation of each judge with the truth measures the
   short-horizon bias.
4. lrexp's own verify (``range_test(verify=True)``), timed against the range test alone.

A suggestion is a *hit* when its seed-mean val loss, interpolated in log10(LR) on the grid, is
<= 1.25 x best + 0.02. No suggestion is trained: every rule is scored the same way, so rule
variants re-score offline in seconds (``--offline PATH``).

    python scripts/bench_suggest.py                       # all cases, ~30 min on one core
    python scripts/bench_suggest.py --cases wine_mlp_adam --seeds 1
    python scripts/bench_suggest.py --offline outputs/bench_suggest.json    # seconds
    python scripts/bench_suggest.py --reuse outputs/bench_suggest.json      # new engine, old truth
    python scripts/bench_suggest.py --check outputs/bench_suggest.json      # train the answers
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lrexp
from lrexp.engine.curve import smooth

GRID = tuple(float(v) for v in 10.0 ** np.arange(-5, 1 + 1e-9, 1 / 3))  # 1e-5 .. 10
FT_GRID = tuple(float(v) for v in 10.0 ** np.arange(-6, 0 + 1e-9, 1 / 3))  # 1e-6 .. 1
SEEDS = (0, 1)
STEPS = 300
BATCH = 32
CURVE_POINTS = 100  # range-test batches per seed (the range test's default num_iter)
PROBE_HORIZONS = (10, 20, 30, 40)  # the probe table's measuring points (steps)
PROBE_DECADES = 3.0  # the table probes grid LRs down to this far below the blow-up
HOLDOUT_EVERY = 5  # the table's held-out slice: every 5th batch of the curve's batches
CACHE = Path("outputs/bench_cache")

# The split, by family. The first nine families were split 5/4 before any rule changed
# (commit 7210088). Each round's held-out families, once scored and reported, are seen: they
# join the tuning split, and new families, written and committed before that round's rule
# changes, become the held-out split the README reports (rounds: 7210088; "four new held-out
# families"; "five new held-out families"; "four new held-out families, a fourth round";
# "a fifth round"; "a sixth round"; "a seventh round": no rule changed before it ran; "an
# eighth round"; "a ninth round"; "a tenth round"; "an eleventh round", "a twelfth round" and
# "a thirteenth round": no suggestion rule changed before any of them ran; "a fourteenth round":
# one-cycle's peak changed before it; "a fifteenth round"; "a sixteenth round" and "a seventeenth
# round": no rule changed before either).
SPLIT = {
    "digits_classic": "tuning",
    "synthetic_mlp": "tuning",
    "regression_a": "tuning",
    "long_training": "tuning",
    "finetune_new_classes": "tuning",
    "small_tabular": "tuning",  # held-out until 2026-12-05
    "regression_b": "tuning",  # held-out until 2026-12-05
    "regularized": "tuning",  # held-out until 2026-12-05
    "finetune_shifted": "tuning",  # held-out until 2026-12-05
    "shapes_cnn": "tuning",  # held-out until the second session of 2026-12-05
    "tabular_mixed": "tuning",  # held-out until the second session of 2026-12-05
    "deep_dropout": "tuning",  # held-out until the second session of 2026-12-05
    "finetune_shapes": "tuning",  # held-out until the second session of 2026-12-05
    "residual_mlp": "tuning",  # held-out in this session's first round
    "wide_tabular": "tuning",  # held-out in this session's first round
    "image_mlp": "tuning",  # held-out in this session's first round
    "finetune_cross": "tuning",  # held-out in this session's first round
    "finetune_rotated": "tuning",  # held-out in this session's first round
    "quantiles_mixed": "tuning",  # held-out in this day's second session (round 4)
    "redundant_features": "tuning",  # held-out in round 4
    "long_quantiles": "tuning",  # held-out in round 4
    "finetune_noisy": "tuning",  # held-out in round 4
    "jittered_cnn": "tuning",  # held-out in round 5
    "small_regression": "tuning",  # held-out in round 5
    "imbalanced_batches": "tuning",  # held-out in round 5
    "finetune_inverted": "tuning",  # held-out in round 5
    "blobs_mixed": "tuning",  # held-out in round 6
    "small_digits": "tuning",  # held-out in round 6
    "roll_and_rank": "tuning",  # held-out in round 6
    "finetune_to_shapes": "tuning",  # held-out in round 6
    "multilabel_bce": "tuning",  # held-out in round 7
    "huber_outliers": "tuning",  # held-out in round 7
    "parity_cnn": "tuning",  # held-out in round 7
    "finetune_turned_shapes": "tuning",  # held-out in round 7
    "hard_clusters": "tuning",  # held-out in round 8
    "xor_bce": "tuning",  # held-out in round 8
    "sinc_regression": "tuning",  # held-out in round 8
    "finetune_cross_inverted": "tuning",  # held-out in round 8
    "noisy_digits_cnn": "tuning",  # held-out in round 9
    "checkerboard": "tuning",  # held-out in round 9
    "polynomial_regression": "tuning",  # held-out in round 9
    "finetune_blurred": "tuning",  # held-out in round 9
    "label_noise_tabular": "tuning",  # held-out in round 10
    "occluded_cnn": "tuning",  # held-out in round 10
    "heteroscedastic_regression": "tuning",  # held-out in round 10
    "finetune_occluded": "tuning",  # held-out in round 10
    "noisy_moons_deep": "tuning",  # held-out in round 11
    "noisy_shapes_cnn": "tuning",  # held-out in round 11
    "low_rank_wide_regression": "tuning",  # held-out in round 11
    "finetune_shifted_down": "tuning",  # held-out in round 11
    "contrast_digits_cnn": "tuning",  # held-out in round 12
    "piecewise_regression": "tuning",  # held-out in round 12
    "many_classes_tabular": "tuning",  # held-out in round 12
    "finetune_contrast": "tuning",  # held-out in round 12
    "signal_conv1d": "tuning",  # held-out in round 13
    "gru_sequences": "tuning",  # held-out in round 13
    "multioutput_regression": "tuning",  # held-out in round 13
    "digit_value_cnn": "tuning",  # held-out in round 13
    "finetune_dilated": "tuning",  # held-out in round 13
    "gratings_cnn": "tuning",  # held-out in round 14
    "digits_autoencoder": "tuning",  # held-out in round 14
    "rings_3d": "tuning",  # held-out in round 14
    "finetune_mirrored": "tuning",  # held-out in round 14
    "bar_counts_cnn": "tuning",  # held-out in round 15
    "xor_gaussians": "tuning",  # held-out in round 15
    "range_regression": "tuning",  # held-out in round 15
    "finetune_pixelated": "tuning",  # held-out in round 15
    "dot_counts_cnn": "tuning",  # held-out in round 16
    "sparse_parity": "tuning",  # held-out in round 16
    "product_regression": "tuning",  # held-out in round 16
    "finetune_binarized": "tuning",  # held-out in round 16
    "brightest_quadrant": "held-out",
    "largest_of_four": "held-out",
    "point_distance": "held-out",
    "finetune_eroded": "held-out",
}


# -- data ------------------------------------------------------------------------------------
def _split(x, y, regression: bool, seed: int = 0, train_fraction: float = 0.75):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x = x[order].astype(np.float32)
    y = y[order].astype(np.float32 if regression else np.int64)
    cut = int(train_fraction * len(x))
    mean, std = x[:cut].mean(0), x[:cut].std(0) + 1e-6
    x = (x - mean) / std
    if regression:
        # unit-variance targets, one column each
        y = ((y - y[:cut].mean(0)) / y[:cut].std(0)).reshape(len(y), -1)
    t = torch.from_numpy
    return (t(x[:cut]), t(y[:cut])), (t(x[cut:]), t(y[cut:]))


def digits(image: bool = False, label_noise: float = 0.0):
    from sklearn.datasets import load_digits

    d = load_digits()
    target = d.target.copy()
    if label_noise:  # flipped labels in both splits: the val loss has a floor, as in real data
        rng = np.random.default_rng(1)
        flip = rng.random(len(target)) < label_noise
        target[flip] = rng.integers(0, 10, flip.sum())
    train, val = _split(d.data, target, regression=False)
    if image:
        train, val = _as_images(train, val)
    return train, val


def _as_images(train, val):
    """Both splits' 64 features as 1x8x8 images, for the CNNs."""
    return [(x.reshape(-1, 1, 8, 8), y) for x, y in (train, val)]


def _sklearn(name: str, regression: bool, rows: int | None = None):
    import sklearn.datasets

    d = getattr(sklearn.datasets, name)()
    x, y = d.data, d.target
    if rows is not None:  # a random subset: small data
        keep = np.random.default_rng(3).permutation(len(x))[:rows]
        x, y = x[keep], y[keep]
    return _split(x, y, regression=regression)


def synthetic_classes():
    from sklearn.datasets import make_classification

    x, y = make_classification(3000, 20, n_informative=10, n_classes=5, random_state=0)
    return _split(x, y, regression=False)


def friedman(which: int = 1):
    import sklearn.datasets

    make = getattr(sklearn.datasets, f"make_friedman{which}")
    x, y = make(2000, noise=0.5 if which == 1 else 0.1, random_state=0)
    return _split(x, y, regression=True)


def moons():
    from sklearn.datasets import make_moons

    x, y = make_moons(2000, noise=0.2, random_state=0)
    return _split(x, y, regression=False)


def spirals(turns: float = 2.0, n: int = 2000):
    """Two interleaved spirals: a curvy boundary a small MLP learns only at a good LR."""
    rng = np.random.default_rng(0)
    t = np.sqrt(rng.random(n)) * turns * 2 * np.pi
    label = rng.integers(0, 2, n)
    angle = t + np.pi * label
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) + 0.5 * rng.standard_normal((n, 2))
    return _split(x, label, regression=False)


def sine():
    x = np.linspace(-np.pi, np.pi, 2000).reshape(-1, 1)
    y = np.sin(x).ravel() + 0.05 * np.random.default_rng(0).standard_normal(len(x))
    return _split(x, y, regression=True)


def wave2d():
    """sin(3x) cos(2y) on [-1.5, 1.5]^2 with a little noise: a curvy 2-D regression surface."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.5, 1.5, (2000, 2))
    y = np.sin(3 * x[:, 0]) * np.cos(2 * x[:, 1]) + 0.05 * rng.standard_normal(len(x))
    return _split(x, y, regression=True)


def sum_of_sines():
    """A sum of sines of random projections of 8 Gaussian inputs: smooth, many bumps."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 8))
    w = rng.standard_normal((8, 4))
    y = np.sin(x @ w).sum(1) + 0.1 * rng.standard_normal(len(x))
    return _split(x, y, regression=True)


def regression_nonlinear():
    """make_regression's linear target bent by a square and a tanh: no linear shortcut."""
    from sklearn.datasets import make_regression

    x, y = make_regression(3000, 12, n_informative=8, noise=5.0, random_state=0)
    y = y / y.std()
    return _split(x, np.tanh(2 * y) + 0.5 * y**2, regression=True)


# Fine-tuning data: digits as 8x8 images scaled to [0, 1], the same scaling in the source and
# the target (a pretrained net sees its inputs as it learned them).
def _digit_images():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def _few_labels(x, y, per_class: int, seed: int = 0):
    """``per_class`` labelled examples of each class to train on; every other one validates."""
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class]
                             for c in np.unique(y)])
    rest = np.setdiff1d(np.arange(len(y)), chosen)
    t = torch.from_numpy
    return (t(x[chosen]), t(y[chosen])), (t(x[rest]), t(y[rest]))


def new_classes_source():
    x, y = _digit_images()
    keep = y < 5
    return torch.from_numpy(x[keep]), torch.from_numpy(y[keep])


def new_classes_target():
    """Digits 5-9 (relabelled 0-4), 12 labels per class: a backbone pretrained on 0-4."""
    x, y = _digit_images()
    keep = y >= 5
    return _few_labels(x[keep], y[keep] - 5, per_class=12)


def _second_half_target(transform: Callable, per_class: int, seed: int = 0):
    """A fine-tuning target: the second half of the digits as 8x8 images through ``transform``,
    ``per_class`` labels per class (``_few_labels``; ``seed`` picks them)."""
    x, y = _digit_images()
    half = len(x) // 2
    images = transform(x[half:].reshape(-1, 8, 8)).reshape(-1, 64)
    return _few_labels(np.ascontiguousarray(images, dtype=np.float32), y[half:],
                       per_class=per_class, seed=seed)


def shifted_source():
    x, y = _digit_images()
    half = len(x) // 2
    return torch.from_numpy(x[:half]), torch.from_numpy(y[:half])


def shifted_target():
    """The other half of the digits, inverted and moved one pixel right, 5 labels per class:
    a backbone pretrained on the first half as it was."""
    return _second_half_target(lambda images: np.roll(1.0 - images, 1, axis=2), per_class=5)


# Shapes: ten small stroke patterns at random places on an 8x8 canvas, random brightness, pixel
# noise; images in [0, 1] like the digits'. The held-out families' own data (written
# 2026-12-05, before any rule change of that day).
_SHAPES = [np.array(m, dtype=np.float32) for m in (
    [[1, 1, 1, 1]],  # horizontal bar
    [[1], [1], [1], [1]],  # vertical bar
    np.eye(4),  # diagonal
    np.fliplr(np.eye(4)),  # anti-diagonal
    [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]],  # square outline
    np.ones((3, 3)),  # filled square
    [[0, 1, 0], [1, 1, 1], [0, 1, 0]],  # plus
    [[1, 0, 1], [0, 1, 0], [1, 0, 1]],  # x
    [[1, 0, 0], [1, 0, 0], [1, 1, 1]],  # L
    [[1, 1, 1], [0, 1, 0], [0, 1, 0]],  # T
)]


def _shape_images(n: int = 3000, seed: int = 5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(_SHAPES), n)
    images = np.zeros((n, 8, 8), dtype=np.float32)
    for image, label in zip(images, labels, strict=True):
        mask = _SHAPES[label]
        row = rng.integers(0, 9 - mask.shape[0])
        col = rng.integers(0, 9 - mask.shape[1])
        image[row:row + mask.shape[0], col:col + mask.shape[1]] = mask * rng.uniform(0.5, 1.0)
    images += 0.2 * rng.standard_normal(images.shape).astype(np.float32)
    return images.reshape(n, 64), labels.astype(np.int64)


def shapes(image: bool = True):
    """The ten shapes, standardized per pixel like the other from-scratch data."""
    x, y = _shape_images()
    train, val = _split(x, y, regression=False)
    if image:
        train, val = _as_images(train, val)
    return train, val


def shapes_source():
    x, y = _shape_images()
    keep = y < 5
    return torch.from_numpy(x[keep]), torch.from_numpy(y[keep])


def shapes_target():
    """Shapes 5-9 (relabelled 0-4), drawn anew, 8 labels per class: a backbone pretrained on
    shapes 0-4."""
    x, y = _shape_images(seed=6)
    keep = y >= 5
    return _few_labels(x[keep], y[keep] - 5, per_class=8)


def tabular_classes():
    from sklearn.datasets import make_classification

    x, y = make_classification(2000, 30, n_informative=15, n_classes=3, class_sep=0.8,
                               flip_y=0.05, random_state=7)
    return _split(x, y, regression=False)


def circles():
    from sklearn.datasets import make_circles

    x, y = make_circles(2000, noise=0.1, factor=0.5, random_state=0)
    return _split(x, y, regression=False)


# The third round's held-out data (written before that round's rule changes).
def hastie():
    """make_hastie_10_2's 10 Gaussian inputs, label = whether their squared norm passes the
    chi-square median: a round boundary in 10-D."""
    from sklearn.datasets import make_hastie_10_2

    x, y = make_hastie_10_2(3000, random_state=2)
    return _split(x, (y > 0).astype(np.int64), regression=False)


def wide_small_classes():
    """600 rows of 100 features, 10 of them informative, 4 classes: few rows, many inputs."""
    from sklearn.datasets import make_classification

    x, y = make_classification(600, 100, n_informative=10, n_classes=4, random_state=11)
    return _split(x, y, regression=False)


def wide_regression():
    """make_regression's 50 inputs (20 informative) with noise, the target standardized."""
    from sklearn.datasets import make_regression

    x, y = make_regression(2000, 50, n_informative=20, noise=20.0, random_state=5)
    return _split(x, y / y.std(), regression=True)


def cross_source():
    x, y = _shape_images(seed=7)
    return torch.from_numpy(x), torch.from_numpy(y)


def cross_target():
    """Digits with 4 labels per class: a backbone pretrained on all ten shapes (another
    domain: same canvas and scale)."""
    x, y = _digit_images()
    return _few_labels(x, y, per_class=4, seed=1)


def rotated_target():
    """The second half of the digits turned a quarter and noisier, 6 labels per class: a
    backbone pretrained on the first half upright (``shifted``'s source)."""
    def turned(images):
        noise = 0.15 * np.random.default_rng(4).standard_normal(images.shape)
        return np.rot90(images, 1, axes=(1, 2)) + noise

    return _second_half_target(turned, per_class=6, seed=2)


# The fourth round's held-out data (written before that round's rule changes).
def gaussian_quantiles():
    """4 classes by the squared norm of 6 Gaussian inputs: nested shells."""
    from sklearn.datasets import make_gaussian_quantiles

    x, y = make_gaussian_quantiles(n_samples=2500, n_features=6, n_classes=4, random_state=3)
    return _split(x, y, regression=False)


def s_curve():
    """The S-curve's 3-D points, the target its position along the curve."""
    from sklearn.datasets import make_s_curve

    x, t = make_s_curve(2500, noise=0.1, random_state=4)
    return _split(x, t / t.std(), regression=True)


def sparse_uncorrelated():
    """make_sparse_uncorrelated: 4 of 10 inputs drive a linear target, with unit noise."""
    from sklearn.datasets import make_sparse_uncorrelated

    x, y = make_sparse_uncorrelated(2500, n_features=10, random_state=5)
    return _split(x, y / y.std(), regression=True)


def redundant_classes(rows: int = 1500):
    """Binary classes from 5 informative inputs among 40, 20 of them redundant, 10% flipped."""
    from sklearn.datasets import make_classification

    x, y = make_classification(rows, 40, n_informative=5, n_redundant=20, flip_y=0.1,
                               random_state=8)
    return _split(x, y, regression=False)


def many_features():
    """1000 rows of 200 features (15 informative), 3 classes."""
    from sklearn.datasets import make_classification

    x, y = make_classification(1000, 200, n_informative=15, n_classes=3, random_state=9)
    return _split(x, y, regression=False)


def noisy_target():
    """The second half of the digits with salt-and-pepper noise (8% of pixels), 8 labels per
    class: a backbone pretrained on the first half clean (``shifted``'s source)."""
    x, y = _digit_images()
    half = len(x) // 2
    rng = np.random.default_rng(6)
    images = x[half:].copy()
    flip = rng.random(images.shape) < 0.08
    images[flip] = rng.integers(0, 2, flip.sum())
    return _few_labels(images.astype(np.float32), y[half:], per_class=8, seed=3)


# The fifth round's held-out data (written before that round's rule changes).
def jittered_digits(image: bool = True):
    """The digits, each moved up to one pixel in each direction, with pixel noise."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(12)
    images = d.images.copy()
    for i, (down, right) in enumerate(rng.integers(-1, 2, (len(images), 2))):
        images[i] = np.roll(images[i], (down, right), axis=(0, 1))
    images += 1.5 * rng.standard_normal(images.shape)
    train, val = _split(images.reshape(len(images), 64), d.target, regression=False)
    if image:
        train, val = _as_images(train, val)
    return train, val


def small_friedman(rows: int = 300):
    """make_friedman1 with few rows and more noise: many epochs, where high LRs overfit."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(rows, noise=2.0, random_state=14)
    return _split(x, y, regression=True)


def small_linear_regression():
    """300 rows of 30 inputs, 10 informative, heavy noise: a linear target few rows pin."""
    from sklearn.datasets import make_regression

    x, y = make_regression(300, 30, n_informative=10, noise=40.0, random_state=15)
    return _split(x, y, regression=True)


def imbalanced_classes():
    """3 classes in proportions 70/20/10 from 8 informative inputs among 20."""
    from sklearn.datasets import make_classification

    x, y = make_classification(4000, 20, n_informative=8, n_classes=3,
                               weights=[0.7, 0.2, 0.1], random_state=13)
    return _split(x, y, regression=False)


def inverted_new_classes_target():
    """Digits 5-9 (relabelled 0-4) inverted, 4 labels per class: a backbone pretrained on
    digits 0-4 upright (``new_classes``'s source)."""
    x, y = _digit_images()
    keep = y >= 5
    return _few_labels((1.0 - x[keep]).astype(np.float32), y[keep] - 5, per_class=4, seed=4)


# The sixth round's held-out data (written before that round's rule changes).
def overlapping_blobs():
    """8 Gaussian blobs in 10-D, wide enough to overlap: a noisy multi-class boundary."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(3000, 10, centers=8, cluster_std=4.0, random_state=16)
    return _split(x, y, regression=False)


def small_digits(image: bool = False, rows: int = 400):
    """A random 400 of the digits (300 to train on): small data, many epochs."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.random.default_rng(17).permutation(len(d.data))[:rows]
    train, val = _split(d.data[keep], d.target[keep], regression=False)
    if image:
        train, val = _as_images(train, val)
    return train, val


def swiss_roll():
    """The Swiss roll's 3-D points with noise, the target its position along the roll."""
    from sklearn.datasets import make_swiss_roll

    x, t = make_swiss_roll(2500, noise=0.5, random_state=18)
    return _split(x, t, regression=True)


def low_rank_regression():
    """40 correlated inputs (effective rank 5), 10 informative, with noise."""
    from sklearn.datasets import make_regression

    x, y = make_regression(2500, 40, n_informative=10, effective_rank=5, noise=5.0,
                           random_state=19)
    return _split(x, y, regression=True)


def digits_to_shapes_target():
    """The ten shapes, drawn anew, 6 labels per class: a backbone pretrained on digits 0-4
    (``new_classes``'s source; another domain on the same canvas and scale)."""
    x, y = _shape_images(seed=8)
    return _few_labels(x, y, per_class=6, seed=5)


# The seventh round's held-out data (written before it ran; no rule changed for it).
def multilabel():
    """5 labels per row, any number of them on, from 20 inputs: a multi-label target for
    BCEWithLogitsLoss (float targets)."""
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(2500, 20, n_classes=5, n_labels=2, random_state=20)
    train, val = _split(x, y, regression=False)
    return [(x, y.float()) for x, y in (train, val)]


def regression_with_outliers():
    """A linear target of 20 inputs whose training rows carry 5% gross outliers (the
    validation rows do not): a robust loss's problem."""
    from sklearn.datasets import make_regression

    x, y = make_regression(2500, 20, n_informative=8, noise=10.0, random_state=21)
    y = y / y.std()
    rng = np.random.default_rng(21)
    (xt, yt), val = _split(x, y, regression=True)
    outliers = torch.from_numpy(rng.random(len(yt)) < 0.05)
    yt = yt.clone()
    yt[outliers] += torch.from_numpy(rng.normal(0, 10, (int(outliers.sum()), 1))).float()
    return (xt, yt), val


def digit_parity(image: bool = True):
    """The digits as images, labelled even or odd: a two-class task over ten shapes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    train, val = _split(d.data, d.target % 2, regression=False)
    if image:
        train, val = _as_images(train, val)
    return train, val


def turned_shapes_target():
    """Shapes 5-9 (relabelled 0-4), drawn anew and turned a quarter, 5 labels per class: a
    backbone pretrained on shapes 0-4 upright (``shapes``'s source)."""
    x, y = _shape_images(seed=9)
    keep = y >= 5
    images = np.rot90(x[keep].reshape(-1, 8, 8), 1, axes=(1, 2)).reshape(-1, 64)
    return _few_labels(images.astype(np.float32), y[keep] - 5, per_class=5, seed=6)


# The eighth round's held-out data (written before that round's rule changes).
def hard_clusters():
    """4 classes, each 3 clusters in 12 informative dimensions of 30, close together."""
    from sklearn.datasets import make_classification

    x, y = make_classification(3000, 30, n_informative=12, n_classes=4, n_clusters_per_class=3,
                               class_sep=0.6, random_state=22)
    return _split(x, y, regression=False)


def noisy_xor():
    """The sign of the product of the first two of 6 Gaussian inputs, 10% flipped, as a float
    target for one logit (BCEWithLogitsLoss)."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((3000, 6))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    flip = rng.random(len(y)) < 0.1
    y[flip] = 1 - y[flip]
    train, val = _split(x, y, regression=False)
    return [(x, y.float().reshape(-1, 1)) for x, y in (train, val)]


def sinc_regression():
    """sinc of the norm of 5 uniform inputs, with noise."""
    rng = np.random.default_rng(24)
    x = rng.uniform(-3, 3, (2500, 5))
    y = np.sinc(np.linalg.norm(x, axis=1)) + 0.05 * rng.standard_normal(2500)
    return _split(x, y, regression=True)


def cross_inverted_target():
    """The digits inverted, 5 labels per class: a backbone pretrained on all ten shapes
    (``cross``'s source: another domain, and the other polarity)."""
    x, y = _digit_images()
    return _few_labels((1.0 - x).astype(np.float32), y, per_class=5, seed=7)


# The ninth round's held-out data (written before that round's rule changes).
def noisy_digit_images():
    """The digits as 8x8 images with Gaussian pixel noise (a third of the pixel range)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(31)
    images = d.images / 16.0 + 0.33 * rng.standard_normal(d.images.shape)
    train, val = _split(images.reshape(len(images), 64), d.target, regression=False)
    return _as_images(train, val)


def checkerboard():
    """A 4x4 checkerboard on the unit square, 5% of the labels flipped."""
    rng = np.random.default_rng(32)
    x = rng.uniform(0, 1, (3000, 2))
    y = ((np.floor(4 * x[:, 0]) + np.floor(4 * x[:, 1])) % 2).astype(np.int64)
    flip = rng.random(len(y)) < 0.05
    y[flip] = 1 - y[flip]
    return _split(x, y, regression=False)


def polynomial_regression():
    """A cubic polynomial of 8 inputs with pairwise terms, with noise."""
    rng = np.random.default_rng(33)
    x = rng.standard_normal((2500, 8))
    y = (x[:, 0] * x[:, 1] - 0.5 * x[:, 2] ** 3 + x[:, 3] * x[:, 4] * x[:, 5]
         + np.sin(2 * x[:, 6]) + 0.3 * rng.standard_normal(2500))
    return _split(x, y, regression=True)


def blurred_target():
    """All ten digits blurred by a 3x3 box filter, 3 labels per class (30 labels): a backbone
    pretrained on the first half of the digits sharp (``shifted``'s source)."""
    from scipy.ndimage import uniform_filter

    x, y = _digit_images()
    images = uniform_filter(x.reshape(-1, 8, 8), size=(1, 3, 3), mode="constant") * 2.0
    return _few_labels(images.reshape(-1, 64).astype(np.float32), y, per_class=3, seed=9)


# The tenth round's held-out data (written before that round's rule changes).
def label_noise_classes():
    """5 classes in 20-D, 30% of the labels replaced at random."""
    from sklearn.datasets import make_classification

    x, y = make_classification(3000, 20, n_informative=8, n_classes=5, flip_y=0.3,
                               random_state=41)
    return _split(x, y, regression=False)


def _occluded(images, seed: int):
    """Each 8x8 image with a random 3x3 patch set to zero."""
    rng = np.random.default_rng(seed)
    images = images.reshape(-1, 8, 8).copy()
    for image, (row, col) in zip(images, rng.integers(0, 6, (len(images), 2)), strict=True):
        image[row:row + 3, col:col + 3] = 0.0
    return images.reshape(-1, 64)


def occluded_digits():
    """The digits as 8x8 images, each with a 3x3 patch blacked out."""
    x, y = _digit_images()
    train, val = _split(_occluded(x, seed=42), y, regression=False)
    return _as_images(train, val)


def heteroscedastic_regression():
    """sin of one input plus a product of two, noise growing with a fourth input."""
    rng = np.random.default_rng(43)
    x = rng.standard_normal((2500, 6))
    noise = 0.1 + 0.5 * np.abs(x[:, 3])
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + noise * rng.standard_normal(2500)
    return _split(x, y, regression=True)


def occluded_target():
    """All ten digits with a 3x3 patch blacked out, 4 labels per class: a backbone pretrained
    on the digits 0-4 whole (``new_classes``'s source)."""
    x, y = _digit_images()
    return _few_labels(_occluded(x, seed=44).astype(np.float32), y, per_class=4, seed=10)


# The eleventh round's held-out data (written after round 10, with no rule change before it).
def noisy_moons():
    """Two moons with heavy noise (0.3)."""
    from sklearn.datasets import make_moons

    x, y = make_moons(3000, noise=0.3, random_state=51)
    return _split(x, y, regression=False)


def noisy_shapes():
    """The ten shapes with twice the pixel noise, as images."""
    x, y = _shape_images(seed=52)
    rng = np.random.default_rng(52)
    x = x + 0.2 * rng.standard_normal(x.shape).astype(np.float32)
    train, val = _split(x, y, regression=False)
    return _as_images(train, val)


def low_rank_wide_regression():
    """30 inputs of effective rank 5, 10 informative, with noise."""
    from sklearn.datasets import make_regression

    x, y = make_regression(2500, 30, n_informative=10, effective_rank=5, noise=5.0,
                           random_state=53)
    return _split(x, y, regression=True)


def shifted_down_target():
    """The second half of the digits moved one pixel down, 6 labels per class: a backbone
    pretrained on all ten shapes (``cross``'s source: another domain)."""
    return _second_half_target(lambda images: np.roll(images, 1, axis=1), per_class=6, seed=11)


# The twelfth round's held-out data (written after round 11, with no rule change before it).
def _contrast(images, seed: int):
    """Each image scaled by its own contrast (0.3-1.7) and shifted by its own brightness."""
    rng = np.random.default_rng(seed)
    gain = rng.uniform(0.3, 1.7, (len(images), 1))
    offset = rng.uniform(-0.3, 0.3, (len(images), 1))
    return (images * gain + offset).astype(np.float32)


def contrast_digits():
    """The digits as 8x8 images, each with its own contrast and brightness."""
    x, y = _digit_images()
    train, val = _split(_contrast(x, seed=61), y, regression=False)
    return _as_images(train, val)


def piecewise_regression():
    """A target with kinks and steps: |x0|, a jump in x1, floor(x2), a product, and noise."""
    rng = np.random.default_rng(62)
    x = rng.uniform(-2, 2, (2500, 6))
    y = (np.abs(x[:, 0]) + 1.5 * (x[:, 1] > 0) + 0.5 * np.floor(x[:, 2]) + 0.3 * x[:, 3] * x[:, 4]
         + 0.2 * rng.standard_normal(2500))
    return _split(x, y, regression=True)


def many_classes():
    """Ten classes in 40 features, 15 informative, 5% of the labels flipped."""
    from sklearn.datasets import make_classification

    x, y = make_classification(4000, 40, n_informative=15, n_redundant=5, n_classes=10,
                               n_clusters_per_class=1, flip_y=0.05, random_state=63)
    return _split(x, y, regression=False)


def contrast_target():
    """The second half of the digits, each with its own contrast and brightness, 5 labels per
    class: a backbone pretrained on the first half as it was (``shifted``'s source)."""
    return _second_half_target(lambda images: _contrast(images.reshape(-1, 64), seed=64),
                               per_class=5, seed=12)


# The thirteenth round's held-out data (written after round 12, with no rule change before it).
_WAVEFORMS = 5


def signals():
    """1-D signals of 32 samples, one of five waveforms (sine, square, sawtooth, a chirp, a
    decaying burst) with its own frequency, phase and amplitude, in noise; as 1x32 rows."""
    rng = np.random.default_rng(71)
    n, t = 3000, np.linspace(0, 1, 32)
    kind = rng.integers(0, _WAVEFORMS, n)
    freq, phase = rng.uniform(1.5, 4.0, (n, 1)), rng.uniform(0, 2 * np.pi, (n, 1))
    angle = 2 * np.pi * freq * t + phase
    waves = np.stack([np.sin(angle), np.sign(np.sin(angle)), 2 * ((angle / (2 * np.pi)) % 1) - 1,
                      np.sin(2 * np.pi * freq * t * t * 2 + phase),
                      np.exp(-4 * t) * np.sin(3 * angle)], axis=1)
    x = waves[np.arange(n), kind] * rng.uniform(0.5, 1.5, (n, 1))
    x = x + 0.5 * rng.standard_normal(x.shape)
    (xt, yt), (xv, yv) = _split(x, kind, regression=False)
    return (xt.reshape(-1, 1, 32), yt), (xv.reshape(-1, 1, 32), yv)


def sequences():
    """Sequences of 12 steps of 4 features; the class (4) is how many steps have a positive
    first feature (0-3, 4-6, 7-9, 10-12 steps) - a count a recurrent net has to carry."""
    rng = np.random.default_rng(72)
    n = 3000
    x = rng.standard_normal((n, 12, 4)).astype(np.float32)
    count = (x[:, :, 0] > 0).sum(1)
    y = np.digitize(count, [4, 7, 10]).astype(np.int64)
    cut = int(0.75 * n)
    t = torch.from_numpy
    return (t(x[:cut]), t(y[:cut])), (t(x[cut:]), t(y[cut:]))


def multioutput_regression():
    """Three targets from eight inputs (a sine plus a square, a product, a hinge minus a
    linear term), noise on each; every target standardized on the training rows."""
    rng = np.random.default_rng(73)
    x = rng.uniform(-2, 2, (2500, 8))
    y = np.stack([np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2, x[:, 2] * x[:, 3],
                  np.maximum(x[:, 4], 0) - x[:, 5]], axis=1)
    y = y + 0.2 * rng.standard_normal(y.shape)
    return _split(x, y, regression=True)


def digit_values():
    """The digits as 8x8 images with the digit's value (0-9, standardized) as a regression
    target: a CNN trained by MSE."""
    x, y = _digit_images()
    train, val = _split(x, y.astype(np.float32), regression=True)
    return _as_images(train, val)


def dilated_target():
    """The second half of the digits with every stroke thickened (a 3x3 maximum filter), 5
    labels per class: a backbone pretrained on the first half as it was (``shifted``'s
    source)."""
    from scipy.ndimage import maximum_filter

    return _second_half_target(lambda images: maximum_filter(images, size=(1, 3, 3)),
                               per_class=5, seed=13)


# The fourteenth round's held-out data (written after round 13; the suggestion rules unchanged,
# one-cycle's peak chosen again on rounds 1-13 before it runs).
def gratings():
    """8x8 gratings at one of four orientations (0, 45, 90, 135 degrees), each with its own
    frequency, phase and contrast, in pixel noise: a CNN's task."""
    rng = np.random.default_rng(81)
    n = 3000
    angle = rng.integers(0, 4, n)
    theta = angle * np.pi / 4
    freq, phase = rng.uniform(0.6, 1.4, n), rng.uniform(0, 2 * np.pi, n)
    rows, cols = np.mgrid[0:8, 0:8]
    along = (np.cos(theta)[:, None, None] * cols + np.sin(theta)[:, None, None] * rows)
    images = rng.uniform(0.3, 1.0, (n, 1, 1)) * np.sin(freq[:, None, None] * along
                                                         + phase[:, None, None])
    images = images + 0.6 * rng.standard_normal(images.shape)
    train, val = _split(images.reshape(n, 64), angle, regression=False)
    return _as_images(train, val)


def digit_reconstruction():
    """The digits as 8x8 images, each its own target (an autoencoder's reconstruction, MSE)."""
    x, _ = _digit_images()
    (xt, _), (xv, _) = _split(x, np.zeros(len(x)), regression=False)
    (it, _), (iv, _) = _as_images((xt, xt), (xv, xv))
    return (it, it), (iv, iv)


def rings_3d():
    """Points on three noisy concentric spherical shells in 3-D (radius 1, 2, 3), one class
    each; 10 % of the labels flipped."""
    rng = np.random.default_rng(83)
    n = 3000
    y = rng.integers(0, 3, n)
    direction = rng.standard_normal((n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    x = direction * (y + 1 + 0.35 * rng.standard_normal(n))[:, None]
    flip = rng.random(n) < 0.1
    y = np.where(flip, rng.integers(0, 3, n), y)
    return _split(x, y, regression=False)


def mirrored_target():
    """The second half of the digits mirrored left to right, 5 labels per class: a backbone
    pretrained on the first half as it was (``shifted``'s source)."""
    return _second_half_target(lambda images: images[:, :, ::-1], per_class=5, seed=14)


# The fifteenth round's held-out data (written after round 14, before any rule changed).
def bar_counts():
    """8x8 images holding 0 to 4 full-length bars, each horizontal or vertical at a random row
    or column, in pixel noise; the target is the number of bars (a CNN's regression, MSE)."""
    rng = np.random.default_rng(91)
    n = 3000
    counts = rng.integers(0, 5, n)
    images = 0.5 * rng.standard_normal((n, 8, 8))
    for image, count in zip(images, counts):
        for _ in range(count):
            where = rng.integers(0, 8)
            if rng.random() < 0.5:
                image[where, :] += 1.0
            else:
                image[:, where] += 1.0
    train, val = _split(images.reshape(n, 64), counts.astype(np.float32), regression=True)
    return _as_images(train, val)


def xor_gaussians():
    """Four Gaussian clusters at the corners of a square in 2 of 12 dimensions, opposite
    corners one class (XOR), the other 10 dimensions noise."""
    rng = np.random.default_rng(93)
    n = 3000
    corner = rng.integers(0, 4, n)
    centres = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=float)
    x = rng.standard_normal((n, 12))
    x[:, :2] = centres[corner] + 0.45 * rng.standard_normal((n, 2))
    return _split(x, (corner >= 2).astype(np.int64), regression=False)


def range_regression():
    """The spread (maximum minus minimum) of 12 uniform features, plus noise: a target an MLP
    must build from comparisons."""
    rng = np.random.default_rng(95)
    x = rng.uniform(-1, 1, (3000, 12))
    y = x.max(1) - x.min(1) + 0.05 * rng.standard_normal(3000)
    return _split(x, y, regression=True)


def pixelated_target():
    """The second half of the digits pixelated (each 2x2 block its mean), 5 labels per class:
    a backbone pretrained on the first half as it was (``shifted``'s source)."""
    def pixelate(images):
        blocks = images.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4))
        return blocks.repeat(2, axis=1).repeat(2, axis=2)

    return _second_half_target(pixelate, per_class=5, seed=15)


# The sixteenth round's held-out data (written after round 15, before any rule changed).
def dot_counts():
    """8x8 images holding 1 to 4 bright dots at random pixels, random brightness, in pixel
    noise; the class is the number of dots (4 classes)."""
    rng = np.random.default_rng(97)
    n = 3000
    counts = rng.integers(1, 5, n)
    images = 0.3 * rng.standard_normal((n, 64))
    for image, count in zip(images, counts):
        image[rng.choice(64, count, replace=False)] += rng.uniform(1.0, 2.0, count)
    train, val = _split(images, counts - 1, regression=False)
    return _as_images(train, val)


def sparse_parity():
    """The parity of 3 of 10 random +-1 features, 5% of the labels flipped: an MLP must find
    the three among the ten and their product."""
    rng = np.random.default_rng(99)
    x = rng.choice([-1.0, 1.0], size=(3000, 10))
    y = (x[:, 1] * x[:, 4] * x[:, 7] > 0).astype(np.int64)
    flip = rng.random(3000) < 0.05
    y[flip] = 1 - y[flip]
    return _split(x, y, regression=False)


def product_regression():
    """A sum of pairwise products of 8 uniform features, plus noise: x0 x1 + x2 x3 - x4 x5."""
    rng = np.random.default_rng(101)
    x = rng.uniform(-1, 1, (3000, 8))
    y = x[:, 0] * x[:, 1] + x[:, 2] * x[:, 3] - x[:, 4] * x[:, 5]
    return _split(x, y + 0.1 * rng.standard_normal(3000), regression=True)


def binarized_target():
    """The second half of the digits binarized (each pixel 1 above its image's mean, else 0),
    5 labels per class: a backbone pretrained on the first half as it was (``shifted``'s
    source)."""
    def binarize(images):
        return (images > images.mean(axis=(1, 2), keepdims=True)).astype(np.float32)

    return _second_half_target(binarize, per_class=5, seed=16)


# The seventeenth round's held-out data (written after round 16 was scored, before any rule
# changed).
def brightest_quadrant():
    """8x8 images in pixel noise with a blob in each quadrant, one of them brighter; the class
    is the quadrant of the brightest (4 classes)."""
    rng = np.random.default_rng(103)
    n = 3000
    brightest = rng.integers(0, 4, n)
    images = 0.4 * rng.standard_normal((n, 8, 8))
    for image, quadrant in zip(images, brightest):
        for q in range(4):
            row, col = 4 * (q // 2) + rng.integers(0, 3), 4 * (q % 2) + rng.integers(0, 3)
            brightness = (1.4, 2.0) if q == quadrant else (0.4, 1.2)
            image[row:row + 2, col:col + 2] += rng.uniform(*brightness)
    train, val = _split(images.reshape(n, 64), brightest, regression=False)
    return _as_images(train, val)


def largest_of_four():
    """Which of the first 4 of 10 Gaussian features is the largest (4 classes); the other 6
    are noise."""
    rng = np.random.default_rng(105)
    x = rng.standard_normal((3000, 10))
    return _split(x, np.argmax(x[:, :4], axis=1), regression=False)


def point_distance():
    """The distance between two points in 3-D given as 6 uniform features, plus noise."""
    rng = np.random.default_rng(107)
    x = rng.uniform(-1, 1, (3000, 6))
    y = np.linalg.norm(x[:, :3] - x[:, 3:], axis=1)
    return _split(x, y + 0.05 * rng.standard_normal(3000), regression=True)


def eroded_target():
    """The second half of the digits with thinner strokes (a 2x2 minimum filter), 5 labels per
    class: a backbone pretrained on the first half as it was (``shifted``'s source)."""
    from scipy.ndimage import minimum_filter

    return _second_half_target(lambda images: minimum_filter(images, size=(1, 2, 2)),
                               per_class=5, seed=17)


# -- models ----------------------------------------------------------------------------------
def mlp(inputs, outputs, hidden=128, bn=False, act=nn.ReLU, depth=2, dropout=0.0):
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inputs if i == 0 else hidden, hidden)]
        layers += ([nn.BatchNorm1d(hidden)] if bn else []) + [act()]
        layers += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(hidden, outputs))


def cnn(bn: bool, classes: int = 10):
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1)] + ([nn.BatchNorm2d(cout)] if bn else []) + [
            nn.ReLU()]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))


class ResidualMLP(nn.Module):
    """Pre-norm residual blocks (LayerNorm, Linear, GELU, Linear) around a linear stem."""

    def __init__(self, inputs: int, outputs: int, width: int = 64, blocks: int = 3):
        super().__init__()
        self.stem = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                          nn.Linear(2 * width, width)) for _ in range(blocks))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, outputs))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


class _Image(nn.Module):
    """Flat 64-pixel rows as 1x8x8 images."""

    def forward(self, x):
        return x.reshape(-1, 1, 8, 8)


class _RowTransformer(nn.Module):
    """A small transformer encoder over an 8x8 digit's rows as 8 tokens; mean-pooled."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.embed = nn.Linear(8, width)
        self.position = nn.Parameter(0.02 * torch.randn(1, 8, width))
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, x):
        tokens = self.embed(x.reshape(-1, 8, 8)) + self.position
        return self.norm(self.encoder(tokens).mean(1))


def conv1d_net(bn: bool, classes: int = _WAVEFORMS):
    def block(cin, cout):
        return [nn.Conv1d(cin, cout, 5, padding=2)] + ([nn.BatchNorm1d(cout)] if bn else []) + [
            nn.ReLU()]

    return nn.Sequential(*block(1, 16), nn.MaxPool1d(2), *block(16, 32), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten(), nn.Linear(32, classes))


class GRUClassifier(nn.Module):
    """A one-layer GRU over the sequence; its last hidden state classifies."""

    def __init__(self, inputs: int = 4, hidden: int = 32, classes: int = 4):
        super().__init__()
        self.gru = nn.GRU(inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.gru(x)[1][-1])


def autoencoder(bn: bool) -> nn.Module:
    """A small convolutional autoencoder for 1x8x8 images: 8x8 -> 4x4 (16 channels) -> 8x8."""
    norm: list[nn.Module] = [nn.BatchNorm2d(16)] if bn else []
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), *norm, nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(),
                         nn.Upsample(scale_factor=2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 1, 3, padding=1))


BACKBONES: dict[str, tuple[Callable[[], nn.Module], int]] = {  # (builder, feature width)
    "cnn": (lambda: nn.Sequential(_Image(), *list(cnn(False).children())[:-1]), 32),
    "mlp": (lambda: nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU()),
            128),
    "transformer": (_RowTransformer, 32),
}


def pretrained_backbone(arch: str, source: str) -> dict:
    """The backbone's weights after training on the source task, cached on disk."""
    path = CACHE / f"{source}_{arch}.pt"
    if path.exists():
        return torch.load(path)
    x, y = {"new_classes": new_classes_source, "shifted": shifted_source,
            "shapes": shapes_source, "cross": cross_source}[source]()
    torch.manual_seed(0)
    build, width = BACKBONES[arch]
    backbone = build()
    model = nn.Sequential(backbone, nn.Linear(width, int(y.max()) + 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(800):
        index = torch.randint(len(x), (64,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[index]), y[index]).backward()
        optimizer.step()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(backbone.state_dict(), path)
    return backbone.state_dict()


def finetune_model(arch: str, source: str, classes: int) -> nn.Module:
    """A pretrained backbone and a fresh head (seeded by the caller)."""
    build, width = BACKBONES[arch]
    backbone = build()
    head = nn.Linear(width, classes)  # built first: its init follows the caller's seed
    backbone.load_state_dict(pretrained_backbone(arch, source))
    return nn.Sequential(backbone, head)


# -- cases -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    family: str
    data: Callable
    model: Callable[[], nn.Module]
    optimizer: Callable[[list, float], torch.optim.Optimizer]
    loss: Callable[[], nn.Module]
    batch: int = BATCH  # for the grid trainings and the range test alike
    steps: int = STEPS  # the whole training the truth is measured over
    pretrained: bool = False

    @property
    def grid(self) -> tuple[float, ...]:
        return FT_GRID if self.pretrained else GRID

    @property
    def split(self) -> str:
        return SPLIT[self.family]


def sgd(momentum=0.0, nesterov=False, weight_decay=0.0):
    return lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=momentum,
                                              nesterov=nesterov, weight_decay=weight_decay)


def adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


def adamw(weight_decay=1e-2):
    return lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def rmsprop(params, lr):
    return torch.optim.RMSprop(params, lr=lr)


CE, MSE = nn.CrossEntropyLoss, nn.MSELoss
_IMAGES = partial(digits, image=True)


def _finetune_cases(family: str, source: str, target: Callable, classes: int,
                    weight_decay: float = 1e-2, batch: int = 16,
                    steps: int = 200) -> list[Case]:
    return [Case(f"{family}_{arch}_adamw", family, target,
                 partial(finetune_model, arch, source, classes), adamw(weight_decay), CE,
                 batch=batch, steps=steps, pretrained=True)
            for arch in ("cnn", "mlp", "transformer")]


CASES = [
    # tuning
    Case("digits_mlp_sgd_momentum", "digits_classic", digits, lambda: mlp(64, 10), sgd(0.9), CE),
    Case("digits_mlp_sgd_plain", "digits_classic", digits, lambda: mlp(64, 10), sgd(0.0), CE),
    Case("digits_cnn_bn_sgd_nesterov", "digits_classic", _IMAGES, lambda: cnn(bn=True),
         sgd(0.9, nesterov=True), CE, steps=200),
    Case("digits_cnn_adam", "digits_classic", _IMAGES, lambda: cnn(bn=False), adam, CE,
         steps=200),
    Case("synthetic_bn_mlp_sgd_plain", "synthetic_mlp", synthetic_classes,
         lambda: mlp(20, 5, bn=True), sgd(0.0), CE),
    Case("moons_tanh_mlp_rmsprop", "synthetic_mlp", moons, lambda: mlp(2, 2, hidden=32,
                                                                       act=nn.Tanh), rmsprop, CE),
    Case("spirals_mlp_adam", "synthetic_mlp", spirals, lambda: mlp(2, 2, hidden=64), adam, CE),
    Case("synthetic_wide_mlp_adamw", "synthetic_mlp", synthetic_classes,
         lambda: mlp(20, 5, hidden=1024, depth=1), adamw(0.1), CE),
    Case("sine_mlp_adam", "regression_a", sine, lambda: mlp(1, 1, hidden=64, act=nn.Tanh), adam,
         MSE),
    Case("friedman_mlp_sgd_momentum", "regression_a", friedman, lambda: mlp(10, 1, hidden=64),
         sgd(0.9), MSE),
    Case("wave2d_tanh_mlp_adam", "regression_a", wave2d,
         lambda: mlp(2, 1, hidden=64, act=nn.Tanh), adam, MSE),
    Case("digits_mlp_adam_long", "long_training", digits, lambda: mlp(64, 10, hidden=64), adam,
         CE, steps=1500),
    Case("spirals_mlp_sgd_momentum_long", "long_training", spirals, lambda: mlp(2, 2, hidden=64),
         sgd(0.9), CE, steps=2000),
    Case("synthetic_mlp_rmsprop_long", "long_training", synthetic_classes,
         lambda: mlp(20, 5, hidden=64), rmsprop, CE, steps=1500),
    *_finetune_cases("finetune_new_classes", "new_classes", new_classes_target, 5),
    # held-out
    Case("wine_mlp_adam", "small_tabular", partial(_sklearn, "load_wine", False),
         lambda: mlp(13, 3, hidden=64), adam, CE, batch=16, steps=400),
    Case("cancer_small_mlp_sgd_momentum", "small_tabular",
         partial(_sklearn, "load_breast_cancer", False, 200), lambda: mlp(30, 2, hidden=64),
         sgd(0.9), CE, batch=16, steps=400),
    Case("iris_mlp_rmsprop", "small_tabular", partial(_sklearn, "load_iris", False),
         lambda: mlp(4, 3, hidden=32), rmsprop, CE, batch=16, steps=400),
    Case("diabetes_mlp_adamw", "small_tabular", partial(_sklearn, "load_diabetes", True),
         lambda: mlp(10, 1, hidden=64), adamw(), MSE, batch=16, steps=500),
    Case("sines_gelu_mlp_sgd_nesterov", "regression_b", sum_of_sines,
         lambda: mlp(8, 1, hidden=64, act=nn.GELU), sgd(0.9, nesterov=True), MSE),
    Case("regression_nonlinear_mlp_rmsprop_b8", "regression_b", regression_nonlinear,
         lambda: mlp(12, 1, hidden=64), rmsprop, MSE, batch=8),
    Case("friedman2_mlp_adamw", "regression_b", partial(friedman, 2),
         lambda: mlp(4, 1, hidden=64), adamw(), MSE),
    Case("digits_cnn_label_smoothing_sgd_momentum", "regularized", _IMAGES,
         lambda: cnn(bn=False), sgd(0.9), lambda: nn.CrossEntropyLoss(label_smoothing=0.2),
         steps=200),
    Case("digits_mlp_adamw_heavy_decay", "regularized", digits, lambda: mlp(64, 10),
         adamw(0.5), CE),
    Case("digits_noisy_labels_mlp_sgd_momentum_b8", "regularized",
         partial(digits, label_noise=0.2), lambda: mlp(64, 10, hidden=64), sgd(0.9), CE,
         batch=8),
    Case("synthetic_mlp_sgd_decay_label_smoothing", "regularized", synthetic_classes,
         lambda: mlp(20, 5), sgd(0.9, weight_decay=5e-3),
         lambda: nn.CrossEntropyLoss(label_smoothing=0.1)),
    *_finetune_cases("finetune_shifted", "shifted", shifted_target, 10),
    # held-out since 2026-12-05 (written before that day's rule changes)
    Case("shapes_cnn_rmsprop", "shapes_cnn", shapes, lambda: cnn(bn=False), rmsprop, CE),
    Case("shapes_cnn_bn_adamw", "shapes_cnn", shapes, lambda: cnn(bn=True), adamw(0.05), CE,
         steps=200),
    Case("shapes_cnn_sgd_momentum_b16", "shapes_cnn", shapes, lambda: cnn(bn=False), sgd(0.9),
         CE, batch=16),
    Case("tabular_classes_mlp_adam_b64", "tabular_mixed", tabular_classes,
         lambda: mlp(30, 3), adam, CE, batch=64),
    Case("friedman3_mlp_rmsprop", "tabular_mixed", partial(friedman, 3),
         lambda: mlp(4, 1, hidden=64), rmsprop, MSE),
    Case("circles_tanh_mlp_sgd_nesterov", "tabular_mixed", circles,
         lambda: mlp(2, 2, hidden=32, act=nn.Tanh), sgd(0.9, nesterov=True), CE),
    Case("digits_deep_dropout_mlp_adam", "deep_dropout", digits,
         lambda: mlp(64, 10, depth=4, dropout=0.2), adam, CE, steps=600),
    Case("synthetic_deep_bn_dropout_mlp_sgd_momentum", "deep_dropout", synthetic_classes,
         lambda: mlp(20, 5, depth=4, bn=True, dropout=0.1), sgd(0.9), CE, steps=400),
    Case("wave2d_deep_silu_mlp_adamw", "deep_dropout", wave2d,
         lambda: mlp(2, 1, hidden=64, depth=4, act=nn.SiLU), adamw(), MSE, steps=600),
    *_finetune_cases("finetune_shapes", "shapes", shapes_target, 5),
    # held-out since the second session of 2026-12-05 (written before its rule changes)
    Case("spirals3_residual_mlp_adamw", "residual_mlp", partial(spirals, 3.0),
         lambda: ResidualMLP(2, 2), adamw(), CE, steps=500),
    Case("friedman1_residual_mlp_sgd_momentum", "residual_mlp", friedman,
         lambda: ResidualMLP(10, 1), sgd(0.9), MSE),
    Case("synthetic_residual_mlp_rmsprop_b64", "residual_mlp", synthetic_classes,
         lambda: ResidualMLP(20, 5, width=128, blocks=2), rmsprop, CE, batch=64),
    Case("hastie_mlp_sgd_nesterov", "wide_tabular", hastie, lambda: mlp(10, 2, hidden=64),
         sgd(0.9, nesterov=True), CE, steps=400),
    Case("wide_small_mlp_adam_b16", "wide_tabular", wide_small_classes,
         lambda: mlp(100, 4, hidden=128), adam, CE, batch=16, steps=400),
    Case("wide_regression_mlp_adamw", "wide_tabular", wide_regression,
         lambda: mlp(50, 1, hidden=128), adamw(0.05), MSE),
    Case("shapes_flat_mlp_sgd_plain", "image_mlp", partial(shapes, image=False),
         lambda: mlp(64, 10, hidden=256), sgd(0.0), CE),
    Case("digits_tanh_mlp_adam_b8", "image_mlp", digits, lambda: mlp(64, 10, act=nn.Tanh),
         adam, CE, batch=8),
    Case("digits_bn_mlp_rmsprop_b64", "image_mlp", digits, lambda: mlp(64, 10, bn=True),
         rmsprop, CE, batch=64),
    *_finetune_cases("finetune_cross", "cross", cross_target, 10, weight_decay=0.05, batch=8,
                     steps=250),
    *_finetune_cases("finetune_rotated", "shifted", rotated_target, 10, steps=300),
    # held-out since the fourth round (written before its rule changes)
    Case("quantiles_mlp_adam_b16", "quantiles_mixed", gaussian_quantiles,
         lambda: mlp(6, 4, hidden=64), adam, CE, batch=16, steps=400),
    Case("s_curve_mlp_rmsprop", "quantiles_mixed", s_curve, lambda: mlp(3, 1, hidden=64),
         rmsprop, MSE),
    Case("sparse_uncorrelated_mlp_sgd_nesterov", "quantiles_mixed", sparse_uncorrelated,
         lambda: mlp(10, 1, hidden=64), sgd(0.9, nesterov=True), MSE),
    Case("redundant_mlp_rmsprop_b16", "redundant_features", redundant_classes,
         lambda: mlp(40, 2, hidden=64), rmsprop, CE, batch=16),
    Case("many_features_mlp_adamw", "redundant_features", many_features,
         lambda: mlp(200, 3, hidden=128), adamw(0.05), CE),
    Case("redundant_small_bn_mlp_sgd_momentum_b64", "redundant_features",
         partial(redundant_classes, 500), lambda: mlp(40, 2, hidden=64, bn=True), sgd(0.9), CE,
         batch=64, steps=400),
    Case("quantiles_mlp_sgd_momentum_long", "long_quantiles", gaussian_quantiles,
         lambda: mlp(6, 4, hidden=64), sgd(0.9), CE, steps=1200),
    Case("s_curve_tanh_mlp_adam_long", "long_quantiles", s_curve,
         lambda: mlp(3, 1, hidden=64, act=nn.Tanh), adam, MSE, steps=1200),
    *_finetune_cases("finetune_noisy", "shifted", noisy_target, 10),
    # held-out since the fifth round (written before its rule changes)
    Case("jittered_cnn_adamw", "jittered_cnn", jittered_digits, lambda: cnn(bn=False),
         adamw(0.01), CE),
    Case("jittered_cnn_bn_rmsprop_b16", "jittered_cnn", jittered_digits, lambda: cnn(bn=True),
         rmsprop, CE, batch=16),
    Case("jittered_cnn_sgd_plain_b64", "jittered_cnn", jittered_digits, lambda: cnn(bn=False),
         sgd(0.0), CE, batch=64),
    Case("small_friedman_mlp_adam_b16", "small_regression", small_friedman,
         lambda: mlp(10, 1, hidden=64), adam, MSE, batch=16, steps=500),
    Case("small_linear_mlp_sgd_momentum_b16", "small_regression", small_linear_regression,
         lambda: mlp(30, 1, hidden=64), sgd(0.9), MSE, batch=16, steps=400),
    Case("small_friedman_tanh_mlp_adamw", "small_regression", small_friedman,
         lambda: mlp(10, 1, hidden=64, act=nn.Tanh), adamw(), MSE, steps=400),
    Case("imbalanced_mlp_adam_b256", "imbalanced_batches", imbalanced_classes,
         lambda: mlp(20, 3), adam, CE, batch=256),
    Case("imbalanced_mlp_sgd_nesterov_b128_long", "imbalanced_batches", imbalanced_classes,
         lambda: mlp(20, 3, hidden=64), sgd(0.9, nesterov=True), CE, batch=128, steps=1000),
    *_finetune_cases("finetune_inverted", "new_classes", inverted_new_classes_target, 5,
                     batch=8),
    # held-out since the sixth round (written before its rule changes)
    Case("blobs_mlp_adam", "blobs_mixed", overlapping_blobs, lambda: mlp(10, 8), adam, CE),
    Case("blobs_mlp_sgd_plain_b16", "blobs_mixed", overlapping_blobs,
         lambda: mlp(10, 8, hidden=64), sgd(0.0), CE, batch=16, steps=400),
    Case("blobs_residual_mlp_adamw_b64", "blobs_mixed", overlapping_blobs,
         lambda: ResidualMLP(10, 8), adamw(0.05), CE, batch=64),
    Case("small_digits_mlp_rmsprop_b16", "small_digits", small_digits,
         lambda: mlp(64, 10, hidden=64), rmsprop, CE, batch=16, steps=400),
    Case("small_digits_cnn_sgd_momentum", "small_digits", partial(small_digits, image=True),
         lambda: cnn(bn=False), sgd(0.9), CE),
    Case("swiss_roll_mlp_sgd_nesterov", "roll_and_rank", swiss_roll,
         lambda: mlp(3, 1, hidden=64), sgd(0.9, nesterov=True), MSE),
    Case("low_rank_mlp_rmsprop_b64", "roll_and_rank", low_rank_regression,
         lambda: mlp(40, 1, hidden=64), rmsprop, MSE, batch=64),
    Case("low_rank_mlp_adam_long", "roll_and_rank", low_rank_regression,
         lambda: mlp(40, 1, hidden=64), adam, MSE, steps=1200),
    *_finetune_cases("finetune_to_shapes", "new_classes", digits_to_shapes_target, 10),
    # held-out since the seventh round (written before it ran)
    Case("multilabel_mlp_adam", "multilabel_bce", multilabel, lambda: mlp(20, 5),
         adam, nn.BCEWithLogitsLoss),
    Case("multilabel_mlp_sgd_momentum_b64", "multilabel_bce", multilabel,
         lambda: mlp(20, 5, hidden=64), sgd(0.9), nn.BCEWithLogitsLoss, batch=64, steps=400),
    Case("outliers_mlp_rmsprop_huber", "huber_outliers", regression_with_outliers,
         lambda: mlp(20, 1, hidden=64), rmsprop, nn.HuberLoss),
    Case("outliers_mlp_adamw_huber_b16", "huber_outliers", regression_with_outliers,
         lambda: mlp(20, 1, hidden=64), adamw(), nn.HuberLoss, batch=16),
    Case("outliers_mlp_sgd_nesterov_mse", "huber_outliers", regression_with_outliers,
         lambda: mlp(20, 1, hidden=64), sgd(0.9, nesterov=True), MSE),
    Case("parity_cnn_sgd_nesterov", "parity_cnn", digit_parity, lambda: cnn(bn=False, classes=2),
         sgd(0.9, nesterov=True), CE),
    Case("parity_cnn_bn_rmsprop_b16", "parity_cnn", digit_parity,
         lambda: cnn(bn=True, classes=2), rmsprop, CE, batch=16),
    Case("parity_cnn_adam_b64", "parity_cnn", digit_parity, lambda: cnn(bn=False, classes=2),
         adam, CE, batch=64),
    *_finetune_cases("finetune_turned_shapes", "shapes", turned_shapes_target, 5),
    # held-out since the eighth round (written before its rule changes)
    Case("hard_clusters_mlp_adam", "hard_clusters", hard_clusters, lambda: mlp(30, 4), adam, CE),
    Case("hard_clusters_mlp_rmsprop_b128", "hard_clusters", hard_clusters,
         lambda: mlp(30, 4, hidden=64), rmsprop, CE, batch=128),
    Case("hard_clusters_bn_mlp_sgd_momentum_long", "hard_clusters", hard_clusters,
         lambda: mlp(30, 4, bn=True), sgd(0.9), CE, steps=1000),
    Case("xor_mlp_sgd_momentum_bce", "xor_bce", noisy_xor, lambda: mlp(6, 1, hidden=64),
         sgd(0.9), nn.BCEWithLogitsLoss),
    Case("xor_mlp_adamw_bce_b16", "xor_bce", noisy_xor, lambda: mlp(6, 1, hidden=64), adamw(),
         nn.BCEWithLogitsLoss, batch=16),
    Case("sinc_tanh_mlp_adam", "sinc_regression", sinc_regression,
         lambda: mlp(5, 1, hidden=64, act=nn.Tanh), adam, MSE),
    Case("sinc_mlp_sgd_nesterov_b64", "sinc_regression", sinc_regression,
         lambda: mlp(5, 1, hidden=64), sgd(0.9, nesterov=True), MSE, batch=64),
    Case("sinc_mlp_rmsprop_b16", "sinc_regression", sinc_regression,
         lambda: mlp(5, 1, hidden=64), rmsprop, MSE, batch=16),
    *_finetune_cases("finetune_cross_inverted", "cross", cross_inverted_target, 10),
    # held-out since the ninth round (written before its rule changes)
    Case("noisy_digits_cnn_bn_adam", "noisy_digits_cnn", noisy_digit_images,
         lambda: cnn(bn=True), adam, CE),
    Case("noisy_digits_cnn_sgd_momentum_b16", "noisy_digits_cnn", noisy_digit_images,
         lambda: cnn(bn=False), sgd(0.9), CE, batch=16),
    Case("noisy_digits_cnn_adamw_long", "noisy_digits_cnn", noisy_digit_images,
         lambda: cnn(bn=False), adamw(0.05), CE, steps=1000),
    Case("checkerboard_mlp_adam_b64_long", "checkerboard", checkerboard,
         lambda: mlp(2, 2, hidden=128, depth=3), adam, CE, batch=64, steps=1200),
    Case("checkerboard_mlp_sgd_nesterov", "checkerboard", checkerboard,
         lambda: mlp(2, 2, hidden=128, depth=3), sgd(0.9, nesterov=True), CE, steps=600),
    Case("polynomial_mlp_rmsprop", "polynomial_regression", polynomial_regression,
         lambda: mlp(8, 1, hidden=128, depth=3), rmsprop, MSE),
    Case("polynomial_mlp_sgd_plain_b16", "polynomial_regression", polynomial_regression,
         lambda: mlp(8, 1, hidden=64), sgd(0.0), MSE, batch=16),
    Case("polynomial_mlp_adamw_b64", "polynomial_regression", polynomial_regression,
         lambda: mlp(8, 1, hidden=128), adamw(0.05), MSE, batch=64, steps=500),
    *_finetune_cases("finetune_blurred", "shifted", blurred_target, 10, batch=8, steps=250),
    # held-out since the tenth round (written before its rule changes)
    Case("label_noise_mlp_adam", "label_noise_tabular", label_noise_classes, lambda: mlp(20, 5),
         adam, CE),
    Case("label_noise_mlp_sgd_momentum_long", "label_noise_tabular", label_noise_classes,
         lambda: mlp(20, 5, hidden=64), sgd(0.9), CE, steps=800),
    Case("label_noise_mlp_rmsprop_b16", "label_noise_tabular", label_noise_classes,
         lambda: mlp(20, 5, hidden=64), rmsprop, CE, batch=16),
    Case("occluded_cnn_bn_sgd_nesterov", "occluded_cnn", occluded_digits, lambda: cnn(bn=True),
         sgd(0.9, nesterov=True), CE),
    Case("occluded_cnn_adamw_b64", "occluded_cnn", occluded_digits, lambda: cnn(bn=False),
         adamw(0.01), CE, batch=64),
    Case("heteroscedastic_mlp_adam_b16", "heteroscedastic_regression",
         heteroscedastic_regression, lambda: mlp(6, 1, hidden=64), adam, MSE, batch=16),
    Case("heteroscedastic_mlp_sgd_momentum", "heteroscedastic_regression",
         heteroscedastic_regression, lambda: mlp(6, 1, hidden=64), sgd(0.9), MSE),
    Case("heteroscedastic_tanh_mlp_rmsprop_long", "heteroscedastic_regression",
         heteroscedastic_regression, lambda: mlp(6, 1, hidden=64, act=nn.Tanh), rmsprop, MSE,
         steps=800),
    *_finetune_cases("finetune_occluded", "new_classes", occluded_target, 10),
    # held-out since the eleventh round (written after round 10; no rule changed before it)
    Case("noisy_moons_deep_mlp_adam", "noisy_moons_deep", noisy_moons,
         lambda: mlp(2, 2, hidden=64, depth=4), adam, CE),
    Case("noisy_moons_deep_mlp_sgd_nesterov_b16", "noisy_moons_deep", noisy_moons,
         lambda: mlp(2, 2, hidden=64, depth=4), sgd(0.9, nesterov=True), CE, batch=16),
    Case("noisy_shapes_cnn_bn_adamw", "noisy_shapes_cnn", noisy_shapes, lambda: cnn(bn=True),
         adamw(0.01), CE),
    Case("noisy_shapes_cnn_rmsprop_b16", "noisy_shapes_cnn", noisy_shapes,
         lambda: cnn(bn=False), rmsprop, CE, batch=16),
    Case("noisy_shapes_cnn_sgd_plain", "noisy_shapes_cnn", noisy_shapes, lambda: cnn(bn=False),
         sgd(0.0), CE),
    Case("low_rank_wide_mlp_adam_b64", "low_rank_wide_regression", low_rank_wide_regression,
         lambda: mlp(30, 1, hidden=128), adam, MSE, batch=64),
    Case("low_rank_wide_mlp_sgd_momentum_huber", "low_rank_wide_regression",
         low_rank_wide_regression, lambda: mlp(30, 1, hidden=64), sgd(0.9), nn.HuberLoss),
    Case("low_rank_wide_tanh_mlp_rmsprop_long", "low_rank_wide_regression",
         low_rank_wide_regression, lambda: mlp(30, 1, hidden=64, act=nn.Tanh), rmsprop, MSE,
         steps=1000),
    *_finetune_cases("finetune_shifted_down", "cross", shifted_down_target, 10),
    # held-out since the twelfth round (written after round 11; no rule changed before it)
    Case("contrast_cnn_bn_sgd_momentum_b16", "contrast_digits_cnn", contrast_digits,
         lambda: cnn(bn=True), sgd(0.9), CE, batch=16),
    Case("contrast_cnn_adam_b64", "contrast_digits_cnn", contrast_digits, lambda: cnn(bn=False),
         adam, CE, batch=64),
    Case("contrast_cnn_adamw", "contrast_digits_cnn", contrast_digits, lambda: cnn(bn=False),
         adamw(0.05), CE),
    Case("piecewise_mlp_adam", "piecewise_regression", piecewise_regression,
         lambda: mlp(6, 1, hidden=64), adam, MSE),
    Case("piecewise_deep_mlp_sgd_momentum_b16", "piecewise_regression", piecewise_regression,
         lambda: mlp(6, 1, hidden=128, depth=3), sgd(0.9), MSE, batch=16),
    Case("piecewise_tanh_mlp_rmsprop_long", "piecewise_regression", piecewise_regression,
         lambda: mlp(6, 1, hidden=64, act=nn.Tanh), rmsprop, MSE, steps=1000),
    Case("many_classes_deep_mlp_sgd_nesterov", "many_classes_tabular", many_classes,
         lambda: mlp(40, 10, hidden=128, depth=3), sgd(0.9, nesterov=True), CE),
    Case("many_classes_bn_mlp_adamw_b64", "many_classes_tabular", many_classes,
         lambda: mlp(40, 10, bn=True), adamw(0.05), CE, batch=64),
    Case("many_classes_dropout_mlp_rmsprop_b16", "many_classes_tabular", many_classes,
         lambda: mlp(40, 10, dropout=0.3), rmsprop, CE, batch=16),
    *_finetune_cases("finetune_contrast", "shifted", contrast_target, 10, weight_decay=0.05,
                     batch=8, steps=300),
    # held-out since the thirteenth round (written after round 12; no rule changed before it)
    Case("signal_conv1d_bn_sgd_nesterov_b16", "signal_conv1d", signals,
         lambda: conv1d_net(bn=True), sgd(0.9, nesterov=True), CE, batch=16),
    Case("signal_conv1d_adam", "signal_conv1d", signals, lambda: conv1d_net(bn=False), adam, CE),
    Case("signal_conv1d_adamw_b64", "signal_conv1d", signals, lambda: conv1d_net(bn=False),
         adamw(), CE, batch=64),
    Case("gru_adam", "gru_sequences", sequences, GRUClassifier, adam, CE),
    Case("gru_rmsprop_b16", "gru_sequences", sequences, GRUClassifier, rmsprop, CE, batch=16),
    Case("gru_sgd_momentum_long", "gru_sequences", sequences, GRUClassifier, sgd(0.9), CE,
         steps=1000),
    Case("multioutput_mlp_adam_b16", "multioutput_regression", multioutput_regression,
         lambda: mlp(8, 3, hidden=64), adam, MSE, batch=16),
    Case("multioutput_mlp_sgd_plain", "multioutput_regression", multioutput_regression,
         lambda: mlp(8, 3, hidden=128), sgd(0.0), MSE),
    Case("multioutput_residual_mlp_adamw_long", "multioutput_regression",
         multioutput_regression, lambda: ResidualMLP(8, 3), adamw(), MSE, steps=1000),
    Case("digit_value_cnn_sgd_momentum", "digit_value_cnn", digit_values, lambda: cnn(False, 1),
         sgd(0.9), MSE),
    Case("digit_value_cnn_bn_adam_b64", "digit_value_cnn", digit_values, lambda: cnn(True, 1),
         adam, MSE, batch=64),
    Case("digit_value_cnn_rmsprop_b16", "digit_value_cnn", digit_values, lambda: cnn(False, 1),
         rmsprop, MSE, batch=16),
    *_finetune_cases("finetune_dilated", "shifted", dilated_target, 10, steps=250),
    # held-out since the fourteenth round (written after round 13; no suggestion rule changed
    # before it)
    Case("gratings_cnn_bn_sgd_nesterov", "gratings_cnn", gratings, lambda: cnn(bn=True, classes=4),
         sgd(0.9, nesterov=True), CE),
    Case("gratings_cnn_adamw_b16", "gratings_cnn", gratings, lambda: cnn(bn=False, classes=4),
         adamw(), CE, batch=16),
    Case("gratings_cnn_sgd_plain_b64", "gratings_cnn", gratings,
         lambda: cnn(bn=False, classes=4), sgd(0.0), CE, batch=64),
    Case("autoencoder_adam", "digits_autoencoder", digit_reconstruction,
         lambda: autoencoder(bn=False), adam, MSE),
    Case("autoencoder_bn_sgd_momentum_b16", "digits_autoencoder", digit_reconstruction,
         lambda: autoencoder(bn=True), sgd(0.9), MSE, batch=16),
    Case("autoencoder_rmsprop_long", "digits_autoencoder", digit_reconstruction,
         lambda: autoencoder(bn=False), rmsprop, MSE, steps=1000),
    Case("rings_mlp_adam_b64", "rings_3d", rings_3d, lambda: mlp(3, 3, hidden=64), adam, CE,
         batch=64),
    Case("rings_deep_mlp_sgd_momentum", "rings_3d", rings_3d,
         lambda: mlp(3, 3, hidden=64, depth=4), sgd(0.9), CE),
    Case("rings_tanh_mlp_rmsprop_b16", "rings_3d", rings_3d,
         lambda: mlp(3, 3, hidden=64, act=nn.Tanh), rmsprop, CE, batch=16),
    *_finetune_cases("finetune_mirrored", "shifted", mirrored_target, 10, batch=8),
    # held-out in the fifteenth round (written after round 14, before any rule changed)
    Case("bar_counts_cnn_sgd_plain", "bar_counts_cnn", bar_counts, lambda: cnn(False, 1),
         sgd(0.0), MSE),
    Case("bar_counts_cnn_bn_adam_b16", "bar_counts_cnn", bar_counts, lambda: cnn(True, 1),
         adam, MSE, batch=16),
    Case("bar_counts_cnn_rmsprop_b64", "bar_counts_cnn", bar_counts, lambda: cnn(False, 1),
         rmsprop, MSE, batch=64),
    Case("xor_gaussians_mlp_sgd_plain_b16", "xor_gaussians", xor_gaussians,
         lambda: mlp(12, 2, hidden=64), sgd(0.0), CE, batch=16),
    Case("xor_gaussians_mlp_adamw", "xor_gaussians", xor_gaussians,
         lambda: mlp(12, 2, hidden=128), adamw(), CE),
    Case("xor_gaussians_deep_mlp_sgd_momentum_long", "xor_gaussians", xor_gaussians,
         lambda: mlp(12, 2, hidden=64, depth=3), sgd(0.9), CE, steps=1000),
    Case("range_mlp_sgd_plain_long", "range_regression", range_regression,
         lambda: mlp(12, 1, hidden=128), sgd(0.0), MSE, steps=1000),
    Case("range_mlp_rmsprop_b16", "range_regression", range_regression,
         lambda: mlp(12, 1, hidden=64), rmsprop, MSE, batch=16),
    Case("range_residual_mlp_adam_b64", "range_regression", range_regression,
         lambda: ResidualMLP(12, 1), adam, MSE, batch=64),
    *_finetune_cases("finetune_pixelated", "shifted", pixelated_target, 10, batch=8),
    # held-out in the sixteenth round (written after round 15; no rule changed before it ran)
    Case("dot_counts_cnn_bn_sgd_momentum_b16", "dot_counts_cnn", dot_counts,
         lambda: cnn(True, 4), sgd(0.9), CE, batch=16),
    Case("dot_counts_cnn_adam", "dot_counts_cnn", dot_counts, lambda: cnn(False, 4), adam, CE),
    Case("dot_counts_cnn_sgd_plain_b64", "dot_counts_cnn", dot_counts, lambda: cnn(False, 4),
         sgd(0.0), CE, batch=64),
    Case("sparse_parity_mlp_adamw_b16", "sparse_parity", sparse_parity,
         lambda: mlp(10, 2, hidden=128), adamw(), CE, batch=16),
    Case("sparse_parity_mlp_rmsprop", "sparse_parity", sparse_parity,
         lambda: mlp(10, 2, hidden=64), rmsprop, CE),
    Case("sparse_parity_deep_mlp_sgd_nesterov_long", "sparse_parity", sparse_parity,
         lambda: mlp(10, 2, hidden=64, depth=3), sgd(0.9, nesterov=True), CE, steps=1000),
    Case("product_mlp_sgd_plain_b16", "product_regression", product_regression,
         lambda: mlp(8, 1, hidden=128), sgd(0.0), MSE, batch=16),
    Case("product_tanh_mlp_adam_long", "product_regression", product_regression,
         lambda: mlp(8, 1, hidden=64, act=nn.Tanh), adam, MSE, steps=1000),
    Case("product_residual_mlp_sgd_momentum_b64", "product_regression", product_regression,
         lambda: ResidualMLP(8, 1), sgd(0.9), MSE, batch=64),
    *_finetune_cases("finetune_binarized", "shifted", binarized_target, 10, batch=8),
    # held-out since the seventeenth round (written after round 16 was scored, before any rule
    # changed)
    Case("quadrant_cnn_bn_adamw", "brightest_quadrant", brightest_quadrant,
         lambda: cnn(True, 4), adamw(), CE),
    Case("quadrant_cnn_sgd_nesterov_b16", "brightest_quadrant", brightest_quadrant,
         lambda: cnn(False, 4), sgd(0.9, nesterov=True), CE, batch=16),
    Case("quadrant_cnn_rmsprop_b64", "brightest_quadrant", brightest_quadrant,
         lambda: cnn(False, 4), rmsprop, CE, batch=64),
    Case("largest_mlp_adam_b16", "largest_of_four", largest_of_four,
         lambda: mlp(10, 4, hidden=64), adam, CE, batch=16),
    Case("largest_mlp_sgd_plain", "largest_of_four", largest_of_four,
         lambda: mlp(10, 4, hidden=128), sgd(0.0), CE),
    Case("largest_deep_mlp_adamw_long", "largest_of_four", largest_of_four,
         lambda: mlp(10, 4, hidden=64, depth=3), adamw(), CE, steps=1000),
    Case("distance_mlp_rmsprop", "point_distance", point_distance,
         lambda: mlp(6, 1, hidden=128), rmsprop, MSE),
    Case("distance_residual_mlp_sgd_momentum_b16", "point_distance", point_distance,
         lambda: ResidualMLP(6, 1), sgd(0.9), MSE, batch=16),
    Case("distance_tanh_mlp_adamw_b64", "point_distance", point_distance,
         lambda: mlp(6, 1, hidden=64, act=nn.Tanh), adamw(), MSE, batch=64),
    *_finetune_cases("finetune_eroded", "shifted", eroded_target, 10, batch=8),
]


# -- training --------------------------------------------------------------------------------
def batches(train, seed: int, steps: int, batch: int = BATCH):
    x, y = train
    gen = torch.Generator().manual_seed(seed)
    batch = min(batch, len(x))
    out = []
    while len(out) < steps:
        order = torch.randperm(len(x), generator=gen)
        out += [(x[order[i:i + batch]], y[order[i:i + batch]])
                for i in range(0, len(x) - batch + 1, batch)]
    return out[:steps]


def fresh_model(case: Case, seed: int) -> nn.Module:
    torch.manual_seed(1000 + seed)
    return case.model()


def _hopeless(loss: float, first: float) -> bool:
    """A training that went non-finite or climbed far above where it began: diverged."""
    return not math.isfinite(loss) or loss > 100 * abs(first) + 10


def val_loss_after_training(case: Case, data, lr: float, seed: int,
                            onecycle: bool = False) -> float:
    train, (xv, yv) = data
    model = fresh_model(case, seed)
    optimizer = case.optimizer(model.parameters(), lr)
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr,
                                                     total_steps=case.steps)
                 if onecycle else None)
    loss_fn = case.loss()
    model.train()
    first = None
    for x, y in batches(train, seed, case.steps, case.batch):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        value = loss.item()
        first = value if first is None else first
        if _hopeless(value, first):
            return math.inf
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    model.eval()
    with torch.no_grad():
        value = loss_fn(model(xv), yv).item()
    return value if math.isfinite(value) else math.inf


def truth_grid(case: Case, data, seeds, onecycle: bool) -> dict[float, float]:
    """Seed-mean val loss per grid LR, ascending; past two diverged LRs in a row, the rest
    counts as diverged too (divergence only gets worse with the LR)."""
    grid: dict[float, float] = {}
    diverged = 0
    for lr in case.grid:
        if diverged >= 2:
            grid[lr] = math.inf
            continue
        grid[lr] = float(np.mean([val_loss_after_training(case, data, lr, s, onecycle)
                                  for s in seeds]))
        diverged = diverged + 1 if not math.isfinite(grid[lr]) else 0
    return grid


def is_hit(val_loss: float | None, best: float) -> bool:
    """The benchmark's one criterion: within 25% (+0.02 for losses near zero) of the best."""
    return val_loss is not None and val_loss <= 1.25 * best + 0.02


# -- the peers' rules, recomputed on our curves ----------------------------------------------
def torch_lr_finder_steepest(lrs, losses):
    """torch-lr-finder: EMA (smooth_f=0.05, not debiased), skip 10 / 5, gradient per index."""
    smoothed = [losses[0]]
    for loss in losses[1:]:
        smoothed.append(0.05 * loss + 0.95 * smoothed[-1])
    lrs, smoothed = lrs[10:-5], np.asarray(smoothed[10:-5])
    if len(smoothed) < 2 or not np.isfinite(smoothed).any():
        return None
    return float(lrs[np.nanargmin(np.gradient(smoothed))])


def _fastai_trimmed(lrs, losses):
    smoothed = smooth(losses)
    n = len(lrs)
    return lrs[n // 10:-5], smoothed[n // 10:-5]


def fastai_minimum(lrs, losses):
    lrs, smoothed = _fastai_trimmed(lrs, losses)
    if not len(lrs) or not np.isfinite(smoothed).any():
        return None
    return float(lrs[np.nanargmin(smoothed)] / 10)


def fastai_valley(lrs, losses):
    """fastai's valley on its EMA: the engine computes the same reading for its verdict."""
    from lrexp.engine.suggest import descent_valley_lr

    return descent_valley_lr(lrs, losses)


def lightning_steepest(lrs, losses):
    """Lightning: debiased EMA 0.98, skip 10 / 1, gradient per index."""
    smoothed = smooth(losses)[10:-1]
    if len(smoothed) < 2 or not np.isfinite(smoothed).any():
        return None
    return float(lrs[10:-1][np.nanargmin(np.gradient(smoothed))])


PEER_RULES = {
    "fastai minimum/10": fastai_minimum,
    "fastai valley": fastai_valley,
    "torch-lr-finder steepest": torch_lr_finder_steepest,
    "Lightning steepest": lightning_steepest,
}


# -- one case --------------------------------------------------------------------------------
def _engine_takes(name: str) -> bool:
    return name in inspect.signature(lrexp.range_test).parameters


def _range_test(case: Case, data, seed: int, **kwargs):
    """One seed's range test from the seed's initial weights, timed."""
    model = fresh_model(case, seed)
    optimizer = case.optimizer(model.parameters(), 1e-7)
    curve = batches(data[0], 100 + seed, CURVE_POINTS, case.batch)
    if case.pretrained and _engine_takes("pretrained"):
        kwargs["pretrained"] = True
    start = time.perf_counter()
    result = lrexp.range_test(model, curve, case.loss(), optimizer, progress=False,
                              device="cpu", **kwargs)
    return result, time.perf_counter() - start


def probe_table(case: Case, data, seed: int, blowup_lr: float | None,
                lrs_at_min: float) -> list[dict]:
    """Short trainings from the initial weights at the grid LRs below the blow-up (without
    one: up to 3x the curve's minimum), on the range test's batches less a held-out slice;
    each measured at ``PROBE_HORIZONS`` by its mean training loss over the last third so far,
    the held-out slice's loss and the val loss."""
    top = blowup_lr if blowup_lr is not None else 3 * lrs_at_min
    lrs = [lr for lr in case.grid if top / 10**PROBE_DECADES <= lr < top]
    curve = batches(data[0], 100 + seed, CURVE_POINTS, case.batch)
    held = curve[::HOLDOUT_EVERY]
    trained = [b for i, b in enumerate(curve) if i % HOLDOUT_EVERY]
    xv, yv = data[1]
    loss_fn = case.loss()
    rows = []
    for lr in lrs:
        model = fresh_model(case, seed)
        optimizer = case.optimizer(model.parameters(), lr)
        losses, at = [], {}
        for step in range(max(PROBE_HORIZONS)):
            x, y = trained[step % len(trained)]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            losses.append(loss.item())
            if _hopeless(losses[-1], losses[0]):
                break
            loss.backward()
            optimizer.step()
            if step + 1 in PROBE_HORIZONS:
                at[step + 1] = _measure(model, loss_fn, losses, held, (xv, yv))
        rows.append({"lr": lr, "losses": losses,
                     "at": {h: at.get(h, {"train": math.inf, "holdout": math.inf,
                                          "val": math.inf}) for h in PROBE_HORIZONS}})
    return rows


def _measure(model, loss_fn, losses, held, val) -> dict[str, float]:
    tail = losses[-max(1, len(losses) // 3):]
    model.eval()
    with torch.no_grad():
        holdout = float(np.mean([loss_fn(model(x), y).item() for x, y in held]))
        value = loss_fn(model(val[0]), val[1]).item()
    model.train()
    clean = [v if math.isfinite(v) else math.inf for v in (float(np.mean(tail)), holdout, value)]
    return dict(zip(("train", "holdout", "val"), clean, strict=True))


def _curve_record(result, seconds: float) -> dict:
    return {"lrs": result.lrs.tolist(), "losses": result.losses.tolist(),
            "stop_reason": result.stop_reason, "seconds": seconds,
            "blowup_lr": result.blowup_lr, "lr_at_min_loss": result.lr_at_min_loss}


def _verify_record(result, seconds: float) -> dict:
    verification = result.verification
    suggestion = result.suggest()
    return {"lr": suggestion.lr, "method": suggestion.method,
            "confidence": suggestion.confidence, "seconds": seconds,
            "probe_seconds": None if verification is None else verification.seconds,
            "verification": None if verification is None else verification.to_dict()}


def run_trial(case: Case, data, seed: int, verify_only: bool = False) -> dict:
    verified, verify_seconds = _range_test(case, data, seed, verify=True)
    trial = {"seed": seed, "verify": _verify_record(verified, verify_seconds)}
    if verify_only:
        return trial
    result, seconds = _range_test(case, data, seed)
    val_result, val_seconds = _range_test(case, data, seed, val_loader=[data[1]])
    trial["curve"] = _curve_record(result, seconds)
    trial["val_curve"] = _curve_record(val_result, val_seconds)
    trial["probes"] = probe_table(case, data, seed, result.blowup_lr,
                                  result.lr_at_min_loss or case.grid[-1])
    return trial


def run_case(case: Case, seeds=SEEDS, reuse: dict | None = None,
             onecycle: bool = True, keep_curves: bool = False) -> dict:
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = case.data()
    if reuse is not None:  # the saved truth and curves; the engine's verify and the probe
        for trial in reuse["trials"]:  # table (its LRs depend on the engine's blow-up) rerun
            seed = trial["seed"]
            trial["verify"] = run_trial(case, data, seed, verify_only=True)["verify"]
            if keep_curves:  # the curve and the probe table are the engine's as they were
                continue
            result, seconds = _range_test(case, data, seed)
            trial["curve"] = _curve_record(result, seconds)
            trial["probes"] = probe_table(case, data, seed, result.blowup_lr,
                                          result.lr_at_min_loss or case.grid[-1])
        return reuse
    record = {"case": case.name, "family": case.family, "split": case.split,
              "pretrained": case.pretrained, "momentum": case_keeps_momentum(case.name),
              "steps": case.steps, "batch": case.batch,
              "grid": truth_grid(case, data, seeds, onecycle=False),
              "onecycle_grid": truth_grid(case, data, seeds, onecycle=True) if onecycle else {}}
    record["trials"] = [run_trial(case, data, seed) for seed in seeds]
    record["seconds"] = time.perf_counter() - start
    return record


# -- scoring (offline: every rule on the saved curves, interpolated on the grid) -------------
def _read_text(path: Path) -> str:
    """A saved run's text; gzipped where the name ends in .gz (the committed results)."""
    if path.suffix == ".gz":
        import gzip

        return gzip.decompress(path.read_bytes()).decode()
    return path.read_text()


def load_results(*paths: str | Path) -> list[dict]:
    """Saved runs (several: their cases joined, a later file's case replacing an earlier's),
    with the grids' LR keys back as floats (JSON object keys are strings) and each case's
    split as ``SPLIT`` says now (a saved run keeps the split of its day)."""
    joined = {r["case"]: r for path in paths for r in json.loads(_read_text(Path(path)))}
    order = {c.name: i for i, c in enumerate(CASES)}
    results = sorted(joined.values(), key=lambda r: order.get(r["case"], len(order)))
    for r in results:
        r["split"] = SPLIT[r["family"]]
        r["momentum"] = case_keeps_momentum(r["case"])
        for key in ("grid", "onecycle_grid"):
            r[key] = {float(lr): float(loss) for lr, loss in r[key].items()}
        r.setdefault("best_lr", min(r["grid"], key=r["grid"].get))
        for t in r["trials"]:
            for row in t.get("probes", []):
                row["at"] = {int(h): v for h, v in row["at"].items()}
            if "curve" in t:  # the keys scripts/bench_spread.py reads
                t.setdefault("lrs", t["curve"]["lrs"])
                t.setdefault("losses", t["curve"]["losses"])
    return results


def case_keeps_momentum(name: str) -> bool:
    """Whether a case's optimizer keeps momentum, as ``range_test`` tells the rules (True for a
    case no longer in CASES: the rule's assumption for an unknown optimizer)."""
    from lrexp.engine.rangetest import keeps_momentum

    case = next((c for c in CASES if c.name == name), None)
    return case is None or keeps_momentum(case.optimizer([nn.Parameter(torch.zeros(1))], 1e-3))


def estimated_val_loss(grid: dict[float, float], lr: float) -> float:
    """The grid's seed-mean val loss interpolated linearly in log10(LR).

    inf above the largest grid LR (nothing says it trains there) and between a finite and an
    inf point (divergence sets in somewhere between them); below the smallest grid LR the
    smallest's loss (the loss only flattens towards LR 0).
    """
    lrs = np.array(sorted(grid))
    losses = np.array([grid[lr] for lr in lrs])
    x = math.log10(lr)
    xs = np.log10(lrs)
    if x > xs[-1] + 1e-6:
        return math.inf
    if x <= xs[0]:
        return float(losses[0])
    right = min(int(np.searchsorted(xs, x - 1e-6)), len(xs) - 1)
    if abs(xs[right] - x) <= 1e-6:  # on a grid point
        return float(losses[right])
    left = right - 1
    if not (math.isfinite(losses[left]) and math.isfinite(losses[right])):
        return math.inf
    w = (x - xs[left]) / (xs[right] - xs[left])
    return float((1 - w) * losses[left] + w * losses[right])


def hit(grid: dict[float, float], lr: float | None) -> bool:
    return (lr is not None and lr > 0 and math.isfinite(lr)
            and is_hit(estimated_val_loss(grid, lr), min(grid.values())))


Rule = Callable[..., "float | None"]  # (lrs, losses, pretrained, momentum) -> lr


def lrexp_rule(method: str) -> Rule:
    def rule(lrs, losses, pretrained=False, momentum=True):
        return _lrexp_suggestion(lrs, losses, method, pretrained, momentum).lr
    return rule


def _lrexp_suggestion(lrs, losses, method: str, pretrained: bool, momentum: bool = True):
    """The engine's suggestion, told what it can take of the case (an older engine, run for a
    comparison, may not take the regime or the optimizer's momentum)."""
    from lrexp.engine.suggest import suggest

    told = {"pretrained": pretrained, "momentum": momentum}
    takes = inspect.signature(suggest).parameters
    return suggest(lrs, losses, method, **{k: v for k, v in told.items() if k in takes})


def curve_rules() -> dict[str, Rule]:
    from lrexp.engine.suggest import METHODS

    rules = {"lrexp default": lrexp_rule("default")}
    rules |= {f"lrexp {name}": lrexp_rule(name) for name in METHODS}
    return rules | {name: _ignoring_regime(rule) for name, rule in PEER_RULES.items()}


def _ignoring_regime(rule):
    return lambda lrs, losses, pretrained=False, momentum=True: rule(np.asarray(lrs),
                                                                    np.asarray(losses))


def rule_hits(results, rule: Rule, curve: str = "curve", grid: str = "grid") -> dict[str, list]:
    """{case: [hit per seed]} of ``rule`` on the saved curves."""
    return {r["case"]: [hit(r[grid], rule(np.asarray(t[curve]["lrs"]),
                                          np.asarray(t[curve]["losses"]), r["pretrained"],
                                          r["momentum"]))
                        for t in r["trials"]] for r in results if r[grid]}


def verify_hits(results) -> dict[str, list]:
    return {r["case"]: [hit(r["grid"], t["verify"]["lr"]) for t in r["trials"]]
            for r in results}


def _onecycle_rule(lrs, losses, pretrained=False, momentum=True):
    """The one-cycle max_lr lrexp recommends (``res.schedule("onecycle")``)."""
    result = lrexp.RangeTestResult(np.asarray(lrs), np.asarray(losses), smooth(losses))
    if hasattr(result, "pretrained"):
        result.pretrained = pretrained
    try:
        return result.schedule("onecycle").max_lr
    except ValueError:
        return None


def _count(per_case: dict[str, list], cases) -> tuple[int, int]:
    chosen = [per_case[c] for c in cases if c in per_case]
    return sum(sum(h) for h in chosen), sum(len(h) for h in chosen)


def _split_cases(results, split: str, pretrained: bool | None = None) -> list[str]:
    return [r["case"] for r in results if r["split"] == split
            and (pretrained is None or r["pretrained"] == pretrained)]


def score_table(results) -> tuple[list[str], dict[str, dict[str, list]]]:
    """Every scored row's per-case hits, in report order."""
    rows: dict[str, dict[str, list]] = {}
    for name, rule in curve_rules().items():
        rows[name] = rule_hits(results, rule)
    if all("verify" in t for r in results for t in r["trials"]):
        rows["lrexp verify"] = verify_hits(results)
    rows["lrexp default, val curve"] = rule_hits(results, lrexp_rule("default"), "val_curve")
    rows["fastai minimum/10, val curve"] = rule_hits(results, _ignoring_regime(fastai_minimum),
                                                     "val_curve")
    return list(rows), rows


def onecycle_table(results) -> dict[str, dict[str, list]]:
    rows = {"lrexp onecycle schedule": rule_hits(results, _onecycle_rule, grid="onecycle_grid")}
    for name in ("lrexp default", *PEER_RULES):
        rule = curve_rules()[name]
        rows[f"{name} as max_lr"] = rule_hits(results, rule, grid="onecycle_grid")
    return rows


def _hits_table(results, rows: dict[str, dict[str, list]]) -> list[str]:
    head = ["held-out from scratch", "held-out fine-tuning", "held-out all",
            "tuning from scratch", "tuning fine-tuning", "tuning all"]
    groups = [_split_cases(results, s, p) for s in ("held-out", "tuning")
              for p in (False, True, None)]
    lines = ["| rule | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, per_case in rows.items():
        cells = []
        for cases in groups:
            hits, total = _count(per_case, cases)
            cells.append(f"{hits}/{total}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _family_table(results, rows) -> list[str]:
    families = list(dict.fromkeys(r["family"] for r in results))
    names = list(rows)
    lines = ["| family (split) | cases | " + " | ".join(names) + " |",
             "|---" * (len(names) + 2) + "|"]
    for family in families:
        cases = [r["case"] for r in results if r["family"] == family]
        cells = ["{}/{}".format(*_count(rows[n], cases)) for n in names]
        lines.append(f"| {family} ({SPLIT[family]}) | {len(cases)} | " + " | ".join(cells) + " |")
    return lines


def _case_table(results) -> list[str]:
    lines = ["| case | split | best LR | best val | one-cycle best max_lr | seed: default LR "
             "(confidence) / verify LR / fastai min/10 |", "|---|---|---|---|---|---|"]
    for r in results:
        best_lr = min(r["grid"], key=r["grid"].get)
        best_oc = min(r["onecycle_grid"], key=r["onecycle_grid"].get, default=math.nan)
        cells = []
        for t in r["trials"]:
            lrs, losses = np.asarray(t["curve"]["lrs"]), np.asarray(t["curve"]["losses"])
            s = _lrexp_suggestion(lrs, losses, "default", r["pretrained"], r["momentum"])
            fa = fastai_minimum(lrs, losses)
            cells.append(f"{_fmt(s.lr)} ({s.confidence}) / {_fmt(t['verify']['lr'])} / "
                         f"{_fmt(fa)}")
        lines.append(f"| {r['case']} | {r['split']} | {best_lr:.2g} | {r['grid'][best_lr]:.3f} | "
                     f"{best_oc:.2g} | " + "; ".join(cells) + " |")
    return lines


def _fmt(lr) -> str:
    return "-" if lr is None else f"{lr:.2g}"


def verdict_lines(results) -> list[str]:
    """Hits of the default by its confidence, per split."""
    lines = []
    for split in ("held-out", "tuning"):
        levels: dict[str, list[bool]] = {}
        for r in results:
            if r["split"] != split:
                continue
            for t in r["trials"]:
                lrs, losses = np.asarray(t["curve"]["lrs"]), np.asarray(t["curve"]["losses"])
                s = _lrexp_suggestion(lrs, losses, "default", r["pretrained"], r["momentum"])
                levels.setdefault(s.confidence, []).append(hit(r["grid"], s.lr))
        lines.append(f"{split}: default's hits by confidence: " + ", ".join(
            f"{level} {sum(v)}/{len(v)} ({100 * sum(v) / len(v):.0f}%)"
            for level, v in sorted(levels.items())))
    return lines


def verify_cost_lines(results) -> list[str]:
    """The probe's price per split: its seconds over the range test's own (the curve alone)."""
    lines = []
    for split in ("held-out", "tuning"):
        trials = [t for r in results if r["split"] == split for t in r["trials"]]
        ratios = [t["verify"]["probe_seconds"] / t["curve"]["seconds"] for t in trials
                  if t["verify"].get("probe_seconds") is not None and "curve" in t]
        if not ratios:
            lines.append(f"Verify cost, {split}: no probe ran.")
            continue
        lines.append(f"Verify cost, {split}: probe seconds / range-test seconds, median "
                     f"{statistics.median(ratios):.2f} (quartiles "
                     f"{np.quantile(ratios, 0.25):.2f} .. {np.quantile(ratios, 0.75):.2f}; "
                     f"probe ran in {len(ratios)} of {len(trials)} trials).")
    return lines


# -- the probe table: short-horizon bias, offline ---------------------------------------------
def spearman(a, b) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return None
    ra = np.argsort(np.argsort(a[keep]))
    rb = np.argsort(np.argsort(b[keep]))
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_correlation_lines(results) -> list[str]:
    """Per trial, Spearman's rho between a probe judge (kind, horizon) and the truth's val
    loss at the probed LRs; the median over trials, per split."""
    lines = ["| probe judge | horizon (steps) | median rho, held-out | median rho, tuning |",
             "|---|---|---|---|"]
    saved = sorted({h for r in results for t in r["trials"] for p in t["probes"] for h in p["at"]})
    for kind in ("train", "holdout", "val"):
        for horizon in saved:  # a run saved with other horizons reports its own
            cells = []
            for split in ("held-out", "tuning"):
                rhos = [rho for r in results if r["split"] == split for t in r["trials"]
                        if (rho := spearman([p["at"][horizon][kind] for p in t["probes"]],
                                            [estimated_val_loss(r["grid"], p["lr"])
                                             for p in t["probes"]])) is not None]
                cells.append(f"{statistics.median(rhos):.2f} ({len(rhos)})" if rhos else "-")
            lines.append(f"| {kind} | {horizon} | " + " | ".join(cells) + " |")
    return lines


def replay_verify(results, anchor: Rule, factors, kind: str, horizon: int,
                  tolerance: float, halving_at: int | None = None,
                  keep_default: bool = False) -> dict[str, list]:
    """A verify variant replayed on the probe table: candidates = the anchor rule's LR times
    ``factors``, each snapped to the nearest probed LR (within a third of a decade); the
    lowest candidate whose measure is within ``tolerance`` (relative) of the best wins, or,
    with ``keep_default``, the anchor itself unless the best beats it by more than
    ``tolerance`` (the engine's rule). With ``halving_at``, the worse half of the candidates
    is dropped at that horizon (successive halving) before the rest are judged at
    ``horizon``."""
    per_case = {}
    for r in results:
        hits = []
        for t in r["trials"]:
            lrs, losses = np.asarray(t["curve"]["lrs"]), np.asarray(t["curve"]["losses"])
            lr = anchor(lrs, losses, r["pretrained"], r["momentum"])
            choice = _replayed_choice(t["probes"], lr, factors, kind, horizon, tolerance,
                                      halving_at, keep_default)
            hits.append(hit(r["grid"], choice))
        per_case[r["case"]] = hits
    return per_case


def _replayed_choice(probes, lr, factors, kind, horizon, tolerance, halving_at, keep_default):
    if lr is None or not probes:
        return lr
    rows = {}
    for factor in factors:
        row = min(probes, key=lambda p: abs(math.log10(p["lr"] / (lr * factor))))
        if abs(math.log10(row["lr"] / (lr * factor))) <= 0.17:
            rows[lr * factor] = row
    if halving_at is not None and len(rows) > 2:
        ranked = sorted(rows, key=lambda k: rows[k]["at"][halving_at][kind])
        rows = {k: rows[k] for k in ranked[: (len(ranked) + 1) // 2]}
    finite = {k: v["at"][horizon][kind] for k, v in rows.items()
              if math.isfinite(v["at"][horizon][kind])}
    if not finite:
        return lr
    best = min(finite.values())
    if keep_default:
        default = finite.get(lr)
        if default is not None and best >= default - tolerance * abs(default):
            return lr
        return min(finite, key=finite.get)
    return min(k for k, v in finite.items() if v <= best + tolerance * abs(best))


# -- report ----------------------------------------------------------------------------------
def report(results) -> str:
    names, rows = score_table(results)
    lines = ["Hits: a suggestion's seed-mean val loss (interpolated in log10 LR on the truth "
             "grid) <= 1.25 x the grid's best + 0.02; one per case and seed.", "",
             "Constant-LR truth:", "", *_hits_table(results, rows), "",
             "One-cycle truth (the rule's LR as OneCycleLR's max_lr):", "",
             *_hits_table(results, onecycle_table(results)), "",
             "Per family (constant-LR truth):", "",
             *_family_table(results, {n: rows[n] for n in names
                                      if "val curve" not in n}), "",
             *verdict_lines(results), "", *verify_cost_lines(results), "",
             "Probe judges against the whole training (rank correlation over the probed LRs):",
             "", *rank_correlation_lines(results), "", "Cases:", "", *_case_table(results), "",
             _sensitivity_line(results)]
    return "\n".join(lines)


def _sensitivity_line(results) -> str:
    """A case only tests the rules if its LR matters and its best LR is inside the grid."""
    flagged = []
    for r in results:
        grid = r["grid"]
        best_lr = min(grid, key=grid.get)
        finite = [v for v in grid.values() if math.isfinite(v)]
        if best_lr in (min(grid), max(grid)) or is_hit(max(finite), min(finite)):
            flagged.append(r["case"])
    return f"Cases not LR-sensitive or best at the grid's edge: {', '.join(flagged) or 'none'}."


def trained_check(results, names=("lrexp default", "lrexp verify", "fastai minimum/10",
                                   "fastai valley")) -> str:
    """How far the interpolation can be trusted: train each named rule's suggestion for the
    case's whole length (the truth's seeds) and compare the trained hit with the interpolated
    one; also the trained hit counts per split."""
    rules = curve_rules()
    agree = total = 0
    trained_hits: dict[tuple[str, str], list[bool]] = {}
    for r in results:
        case = next(c for c in CASES if c.name == r["case"])
        data = case.data()
        cache: dict[float, float] = {}
        best = min(r["grid"].values())
        for t in r["trials"]:
            for name in names:
                if name == "lrexp verify":
                    lr = t["verify"]["lr"]
                else:
                    lr = rules[name](np.asarray(t["curve"]["lrs"]),
                                     np.asarray(t["curve"]["losses"]), r["pretrained"],
                                     r["momentum"])
                if lr is None:
                    trained = False
                else:
                    key = float(f"{lr:.6g}")
                    if key not in cache:
                        cache[key] = float(np.mean([val_loss_after_training(case, data, key, s)
                                                    for s in SEEDS]))
                    trained = is_hit(cache[key], best)
                agree += trained == hit(r["grid"], lr)
                total += 1
                trained_hits.setdefault((name, r["split"]), []).append(trained)
    lines = [f"Trained at the suggested LR: the interpolated verdict matches the trained one in "
             f"{agree} of {total} suggestions.", "", "| rule | held-out (trained) | tuning "
             "(trained) |", "|---|---|---|"]
    for name in names:
        cells = [f"{sum(trained_hits[(name, s)])}/{len(trained_hits[(name, s)])}"
                 for s in ("held-out", "tuning")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=[c.name for c in CASES],
                        choices=[c.name for c in CASES])
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0 .. N-1")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_suggest.json"))
    parser.add_argument("--offline", type=Path, metavar="PATH", nargs="+",
                        help="re-score saved runs (their cases joined) without training, "
                             "then exit")
    parser.add_argument("--reuse", type=Path, metavar="PATH",
                        help="keep a saved run's truth; rerun the engine's curves, verify and "
                             "probe table (after an engine change)")
    parser.add_argument("--keep-curves", action="store_true",
                        help="with --reuse: keep the curves and probe table too, rerun only the "
                             "engine's verify (after a change to verify or to the rules alone)")
    parser.add_argument("--no-onecycle", action="store_true",
                        help="skip the one-cycle truth column (half the training time)")
    parser.add_argument("--check", type=Path, metavar="PATH",
                        help="train a saved run's suggestions (default, verify, fastai) to check "
                             "the interpolation, then exit")
    args = parser.parse_args()
    if args.keep_curves and not args.reuse:
        parser.error("--keep-curves keeps a saved run's curves: give that run with --reuse PATH")
    if args.check:
        torch.set_num_threads(1)
        print(trained_check(load_results(args.check)))
        return
    if args.offline:
        print(report(load_results(*args.offline)))
        return
    torch.set_num_threads(1)  # one core: the benchmark shares the machine
    start = time.perf_counter()
    saved = {r["case"]: r for r in load_results(args.reuse)} if args.reuse else {}
    results = []
    for name in args.cases:
        case = next(c for c in CASES if c.name == name)
        results.append(run_case(case, tuple(range(args.seeds)), saved.get(name),
                                onecycle=not args.no_onecycle, keep_curves=args.keep_curves))
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str))
    print(report(results))
    print(f"\n(raw results in {args.out}; wall time {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
