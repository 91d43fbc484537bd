import numpy as np
import pytest

from lrexp.curve import smooth
from lrexp.suggest import METHODS, minimum, steepest, suggest, valley


def _sigmoid_curve(n=100, noise=0.0, seed=0):
    """Loss falls fastest at lr = 1e-3 (the tanh's centre), then explodes past 1e-1."""
    lrs = np.geomspace(1e-7, 10, n)
    x = np.log10(lrs)
    losses = 2.0 - np.tanh(x + 3) + np.exp(3 * (x + 0.5)).clip(max=50)
    return lrs, losses + noise * np.random.default_rng(seed).standard_normal(n)


def test_steepest_finds_the_steepest_point_of_a_noiseless_curve():
    lrs, losses = _sigmoid_curve()
    s = steepest(lrs, losses, beta=0.0)
    assert s.lr == pytest.approx(1e-3, rel=0.25)


def test_steepest_ignores_a_drop_after_the_minimum():
    lrs, losses = _sigmoid_curve()
    losses[85:] = [60, 80, 90, 95, 40, 10, 9, 8, 7, 6, 5, 4, 3, 3, 3]  # spikes after divergence
    assert np.argmin(np.gradient(losses)) > 85  # the peers' global rule would pick the crash
    s = steepest(lrs, losses, beta=0.0)
    assert s.lr < 1e-1


def test_minimum_is_a_tenth_of_the_smoothed_minimum():
    lrs, losses = _sigmoid_curve(noise=0.05)
    s = minimum(lrs, losses)
    assert s.lr == pytest.approx(lrs[np.argmin(smooth(losses))] / 10, rel=1e-12)


def test_valley_lies_inside_the_descent():
    lrs, losses = _sigmoid_curve(noise=0.02)
    s = valley(lrs, losses)
    assert 1e-5 < s.lr < lrs[np.argmin(smooth(losses))]


@pytest.mark.parametrize("method", ["default", *METHODS])
@pytest.mark.parametrize("losses", [[], [1.0, 2.0], [np.nan] * 20, [1.5] * 40,
                                    [1.0, np.nan, 2.0, 3.0, 4.0, 5.0]])
def test_poor_curves_give_a_reason_not_an_exception(method, losses):
    lrs = np.geomspace(1e-5, 1, len(losses)) if len(losses) else np.array([])
    s = suggest(lrs, np.asarray(losses, dtype=float), method)
    assert s.lr is None and s.reason


def test_unknown_method_lists_the_known_ones():
    lrs, losses = _sigmoid_curve()
    with pytest.raises(ValueError, match="steepest"):
        suggest(lrs, losses, "magic")
