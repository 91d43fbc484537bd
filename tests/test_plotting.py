"""The plot says what happened: checked on the figure's artists, not on pixels."""

import numpy as np
import pytest
from matplotlib.patches import Polygon, Rectangle

from lrexp.engine.curve import smooth
from lrexp.engine.result import RangeTestResult
from lrexp.plotting import plot, plot_overlay

BLOWUP_LR = 1.0  # the synthetic loss explodes from here


def _diverged_curve(points: int = 100) -> RangeTestResult:
    """Falls from 2.3 to 0.5 between 1e-4 and 0.1, flat to BLOWUP_LR, then explodes; a little
    noise so the reading has a noise width."""
    lrs = np.logspace(-6, 1.2, points)
    fall = 0.5 + 1.8 / (1 + (lrs / 3e-3) ** 2)
    explode = np.where(lrs > BLOWUP_LR, np.exp(4 * np.log(lrs / BLOWUP_LR) * 3) - 1, 0.0)
    losses = fall + explode + np.random.default_rng(0).normal(0, 0.01, points)
    return RangeTestResult(lrs, losses, smooth(losses), stop_reason="diverged")


def _spans(ax, label_start: str) -> list:
    return [patch for patch in ax.patches if isinstance(patch, (Polygon, Rectangle))
            and patch.get_label().startswith(label_start)]


def _x_extent(patch) -> tuple[float, float]:
    xs = patch.get_xy()[:, 0] if isinstance(patch, Polygon) else \
        [patch.get_x(), patch.get_x() + patch.get_width()]
    return float(min(xs)), float(max(xs))


def test_the_diverged_band_starts_where_the_loss_blew_up_not_at_the_minimum():
    result = _diverged_curve()
    ax = plot(result).axes[0]
    [band] = _spans(ax, "blew up from")
    start, end = _x_extent(band)
    assert start == pytest.approx(result.blowup_lr)
    assert result.blowup_lr > result.lr_at_min_loss  # the old band began at the minimum
    assert BLOWUP_LR <= start <= BLOWUP_LR * 2  # where the synthetic loss really explodes
    assert end == pytest.approx(result.lrs[-1])


def test_the_stop_line_stays_inside_the_axes():
    result = _diverged_curve()
    ax = plot(result).axes[0]
    [stop] = [line for line in ax.get_lines() if line.get_label().startswith("stopped")]
    x = float(np.asarray(stop.get_xdata())[0])
    low, high = ax.get_xlim()
    assert x == pytest.approx(result.diverged_lr) and low < x < high


def test_a_curve_that_never_blew_up_has_no_band_and_no_stop_line():
    lrs = np.logspace(-6, -1, 60)
    losses = 0.5 + 1.8 / (1 + (lrs / 3e-3) ** 2)
    ax = plot(RangeTestResult(lrs, losses, smooth(losses))).axes[0]
    assert not _spans(ax, "blew up from")
    assert not [line for line in ax.get_lines() if line.get_label().startswith("stopped")]


def test_only_major_gridlines_are_drawn():
    ax = plot(_diverged_curve()).axes[0]
    assert any(line.get_visible() for line in ax.xaxis.get_gridlines())
    minor = [tick.gridline.get_visible() for tick in ax.xaxis.get_minor_ticks()]
    assert not any(minor)


def test_the_overlay_marks_each_curves_suggestion():
    curves = {"a": _diverged_curve(), "b": _diverged_curve(80)}
    ax = plot_overlay(curves).axes[0]
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
    suggested = sorted(curve.suggest().lr for curve in curves.values())
    assert sorted(float(star.get_xdata()[0]) for star in stars) == pytest.approx(suggested)
