import numpy as np
import pytest

from lrexp.engine.curve import smooth, zero_lag
from lrexp.engine.result import RangeTestResult
from lrexp.engine.suggest import (
    DESCENT_FACTOR,
    DESCENT_FALLBACK_DIVISOR,
    EDGE_DIVISOR,
    FALL_HIGH,
    METHODS,
    MINIMUM_DIVISOR,
    assess,
    descent_valley_lr,
    minimum,
    steepest,
    suggest,
    valley,
)


def _sigmoid_curve(n=100, noise=0.0, seed=0, centre=-3.0):
    """Loss falls fastest at lr = 1e-3 (the tanh's centre), bottoms out near 3.5e-2, then
    explodes (the minimum of 2 - tanh(x+3) + exp(3(x+0.5)) in x = log10 lr, found numerically).
    ``centre`` moves the fall (log10 of its steepest LR)."""
    lrs = np.geomspace(1e-7, 10, n)
    x = np.log10(lrs)
    losses = 2.0 - np.tanh(x - centre) + np.exp(3 * (x + 0.5)).clip(max=50)
    return lrs, losses + noise * np.random.default_rng(seed).standard_normal(n)


def _true_minimum_lr():
    x = np.linspace(-7, 1, 100_001)
    return 10 ** x[np.argmin(2.0 - np.tanh(x + 3) + np.exp(3 * (x + 0.5)))]


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_zero_lag_reading_finds_the_minimum_within_a_quarter_decade(noise):
    truth = _true_minimum_lr()
    for seed in range(10):
        lrs, losses = _sigmoid_curve(noise=noise, seed=seed)
        found = lrs[np.nanargmin(zero_lag(losses))]
        assert abs(np.log10(found / truth)) <= 0.25, (seed, found, truth)


def test_zero_lag_reading_finds_the_minimum_under_heavy_noise():
    """Noise of 0.3 on a fall of 2: the raw curve is a cloud. The reading is within a quarter
    decade in the median over seeds and never off by more than half a decade; the EMA's
    minimum is off by more than half a decade in the median."""
    truth = _true_minimum_lr()
    errors, ema_errors = [], []
    for seed in range(20):
        lrs, losses = _sigmoid_curve(noise=0.3, seed=seed)
        errors.append(abs(np.log10(lrs[np.nanargmin(zero_lag(losses))] / truth)))
        ema_errors.append(abs(np.log10(lrs[np.nanargmin(smooth(losses))] / truth)))
    assert np.median(errors) <= 0.25 and max(errors) <= 0.5, errors
    assert np.median(ema_errors) > 0.5


def test_the_online_ema_lags_where_the_zero_lag_reading_does_not():
    lrs, losses = _sigmoid_curve()
    truth = _true_minimum_lr()
    lag_ema = np.log10(lrs[np.nanargmin(smooth(losses))] / truth)
    lag_zero = np.log10(lrs[np.nanargmin(zero_lag(losses))] / truth)
    assert lag_ema > 0.4 and abs(lag_zero) < 0.1


def test_a_huge_diverged_tail_does_not_move_the_minimum():
    lrs, losses = _sigmoid_curve(noise=0.05)
    tame = losses.copy()
    tame[90:] = 5.0  # back above where the test started
    wild = losses.copy()
    wild[90:] = [1e3, 1e5, 1e6, 1e8, 1e9, 1e10, 1e12, 1e15, 1e20, np.inf]
    assert np.nanargmin(zero_lag(wild)) == np.nanargmin(zero_lag(tame))
    assert np.isnan(zero_lag(wild)[-1])  # nothing is read past a non-finite loss


def test_steepest_finds_the_steepest_point_of_a_noiseless_curve():
    lrs, losses = _sigmoid_curve()
    assert steepest(lrs, losses).lr == pytest.approx(1e-3, rel=0.25)


def test_steepest_ignores_a_drop_after_the_minimum():
    lrs, losses = _sigmoid_curve()
    losses[85:] = [60, 80, 90, 95, 40, 10, 9, 8, 7, 6, 5, 4, 3, 3, 3]  # spikes after divergence
    assert np.argmin(np.gradient(losses)) > 85  # the peers' global rule would pick the crash
    assert steepest(lrs, losses).lr < 1e-1


def test_minimum_divides_the_zero_lag_minimum():
    lrs, losses = _sigmoid_curve(noise=0.05)
    s = minimum(lrs, losses)
    assert s.lr == pytest.approx(lrs[np.nanargmin(zero_lag(losses))] / MINIMUM_DIVISOR, rel=1e-12)


def test_valley_lies_inside_the_descent():
    lrs, losses = _sigmoid_curve(noise=0.02)
    s = valley(lrs, losses)
    assert 1e-5 < s.lr < lrs[np.nanargmin(zero_lag(losses))]


def test_a_clean_curve_gets_high_confidence_and_an_interval_below_its_blowup():
    from lrexp.engine.curve import blowup_index
    from lrexp.engine.suggest import AGREEMENT_DECADES, INTERVAL_BELOW_EDGE, descent_valley_lr

    # the fall is steepest at 10^-1.5, about where the edge rule (blow-up near 0.6, / 20)
    # lands, so the two readings agree
    lrs, losses = _sigmoid_curve(noise=0.05, centre=-1.5)
    s = suggest(lrs, losses)
    assert s.confidence == "high", s.reason
    assert abs(np.log10(s.lr / descent_valley_lr(lrs, losses))) <= AGREEMENT_DECADES
    blowup_lr = lrs[blowup_index(losses)]
    assert s.interval == pytest.approx((blowup_lr / INTERVAL_BELOW_EDGE[0],
                                        blowup_lr / INTERVAL_BELOW_EDGE[1]))
    assert s.interval[0] <= s.lr <= s.interval[1]


def test_a_suggestion_far_from_the_blowup_rule_is_never_high():
    """The fall ends at 1e-2 and the loss stays flat for 1.5 decades before it blows up: the
    default (twice the descent's valley, near the tanh's centre 1e-3) and the blow-up rule
    (blow-up / 20) part by more than AGREEMENT_DECADES; the verdict says so with both LRs."""
    from lrexp.engine.suggest import (
        AGREEMENT_DECADES,
        DESCENT_FACTOR,
        descent_valley_lr,
        edge,
    )

    lrs, losses = _sigmoid_curve(noise=0.05)
    valley = descent_valley_lr(lrs, losses)
    assert abs(np.log10(valley / 1e-3)) <= 0.3  # the valley sits in the steep part
    s = suggest(lrs, losses)
    assert s.lr == pytest.approx(DESCENT_FACTOR * valley)
    second = edge(lrs, losses).lr
    assert abs(np.log10(second / s.lr)) > AGREEMENT_DECADES
    assert s.confidence == "low"
    assert "second reading" in s.reason and f"{second:.3g}" in s.reason


def test_fine_tuning_takes_the_valley_where_the_minimums_reading_parts_from_it():
    from lrexp.engine.suggest import (
        FINE_TUNING_DIVISOR,
        FINE_TUNING_VALLEY_SWITCH,
        descent_valley_lr,
        finetune,
    )

    # the fall near 10^-1.5 ends close to the minimum: the minimum / 30 lies well below the
    # valley of the fall, more than FINE_TUNING_VALLEY_SWITCH decades away
    lrs, losses = _sigmoid_curve(noise=0.05, centre=-1.5)
    valley = descent_valley_lr(lrs, losses)
    by_minimum = finetune(lrs, losses).lr
    assert by_minimum == pytest.approx(lrs[np.nanargmin(zero_lag(losses))] / FINE_TUNING_DIVISOR)
    assert abs(np.log10(by_minimum / valley)) > FINE_TUNING_VALLEY_SWITCH
    tuned = suggest(lrs, losses, pretrained=True)
    assert tuned.lr == pytest.approx(valley) and "becomes" in tuned.reason
    # a fall three decades below the minimum: the two readings agree, the minimum's stands
    lrs, losses = _sigmoid_curve(noise=0.05, centre=-4.0)
    by_minimum = finetune(lrs, losses).lr
    assert abs(np.log10(by_minimum / descent_valley_lr(lrs, losses))) <= FINE_TUNING_VALLEY_SWITCH
    assert suggest(lrs, losses, pretrained=True).lr == pytest.approx(by_minimum)


def test_a_verified_suggestion_keeps_the_curves_second_reading():
    """verify=True must not turn a curve whose readings disagree back into "high"."""
    from lrexp.engine.result import Probe, RangeTestResult, Verification

    lrs, losses = _sigmoid_curve(noise=0.05)
    result = RangeTestResult(lrs, losses, losses)
    default = result.suggest()
    assert default.confidence == "low"
    result.verification = Verification(
        [Probe(default.lr / 3, "default x0.333", 1.0), Probe(default.lr, "default", 0.9)],
        chosen=1, steps=30, seconds=0.1, loss_kind="holdout")
    verified = result.suggest()
    assert verified.method == "verified" and verified.lr == default.lr
    assert verified.confidence == "low" and "second reading" in verified.reason


def test_without_a_blowup_the_interval_runs_from_half_the_fall_to_the_minimum():
    lrs = np.geomspace(1e-7, 10, 100)
    x = np.log10(lrs)
    losses = 2.0 - np.tanh(x + 3) + 0.05 * np.exp(x + 0.5)  # falls fastest at 1e-3, no blow-up
    low, high = suggest(lrs, losses).interval
    assert low == pytest.approx(1e-3, rel=0.3)  # half the fall is made at the tanh's centre
    assert high == pytest.approx(lrs[np.nanargmin(zero_lag(losses))])


@pytest.mark.parametrize("seed", range(5))
def test_a_flat_noisy_curve_gets_a_low_guess_and_the_reason(seed):
    lrs = np.geomspace(1e-7, 10, 100)
    losses = 2.3 + 0.1 * np.random.default_rng(seed).standard_normal(100)
    for method in ["default", *METHODS]:
        s = suggest(lrs, losses, method)
        assert s.lr is not None and s.confidence == "low"
        assert "never fell below its noise" in s.reason and "rough guess" in s.reason


def test_a_two_point_curve_gets_confidence_none_with_the_reason():
    s = suggest(np.array([1e-7, 10.0]), np.array([2.3, 2.2]))
    assert (s.lr, s.confidence) == (None, "none")
    assert "only 2 finite point(s)" in s.reason and "num_iter" in s.reason


def test_a_curve_still_falling_at_max_lr_is_low_confidence_and_says_raise_max_lr():
    lrs = np.geomspace(1e-7, 1e-2, 100)
    losses = 2.3 - 0.3 * np.log10(lrs / 1e-7) + 0.02 * np.random.default_rng(0).standard_normal(100)
    s = suggest(lrs, losses)
    assert s.confidence == "low" and "raise max_lr" in s.reason


def test_a_curve_whose_descent_is_off_the_left_edge_says_lower_min_lr():
    lrs = np.geomspace(1e-3, 10, 100)
    x = np.log10(lrs)
    losses = 0.3 + np.exp(3 * (x + 0.5)).clip(max=50)  # already low at min_lr, then explodes
    losses = losses + 0.01 * np.random.default_rng(0).standard_normal(100)
    s = suggest(lrs, losses)
    assert s.confidence in ("low", "none") and "min_lr" in s.reason


def test_a_small_fall_in_heavy_noise_is_low_confidence():
    lrs, losses = _sigmoid_curve()
    # the same shape at a tenth of the depth (a fall of 0.2), in noise of 0.06
    shallow = 2.0 + 0.1 * (losses - 2.0).clip(max=2) \
        + 0.06 * np.random.default_rng(3).standard_normal(100)
    verdict = assess(lrs, shallow)
    assert verdict.confidence == "low", verdict
    assert 2 <= verdict.fall_in_noise_widths < 5


@pytest.mark.parametrize("method", ["default", *METHODS])
@pytest.mark.parametrize("losses", [[], [1.0, 2.0], [np.nan] * 20, [1.5] * 40,
                                    [1.0, np.nan, 2.0, 3.0, 4.0, 5.0]])
def test_poor_curves_give_a_reason_not_an_exception(method, losses):
    lrs = np.geomspace(1e-5, 1, len(losses)) if len(losses) else np.array([])
    s = suggest(lrs, np.asarray(losses, dtype=float), method)
    assert s.lr is None and s.reason and s.confidence == "none"


def test_unknown_method_lists_the_known_ones():
    lrs, losses = _sigmoid_curve()
    with pytest.raises(ValueError, match="steepest"):
        suggest(lrs, losses, "magic")


def test_edge_is_a_fixed_fraction_of_where_the_loss_blows_up():
    from lrexp.engine.suggest import EDGE_DIVISOR, edge

    lrs, losses = _sigmoid_curve(noise=0.05)
    losses[80:] = 10.0 ** np.arange(1, 21)  # a blow-up at point 80, far above the start (2.0)
    s = edge(lrs, losses)
    assert 78 <= s.index <= 83  # within a quarter decade (3 points) of the true blow-up
    assert s.lr == pytest.approx(lrs[s.index] / EDGE_DIVISOR)


def test_edge_counts_a_nan_as_the_blowup():
    from lrexp.engine.suggest import EDGE_DIVISOR, edge

    lrs, losses = _sigmoid_curve(noise=0.05)
    losses[70] = np.nan  # the test stopped on a non-finite loss at point 70
    assert edge(lrs, losses).lr == pytest.approx(lrs[70] / EDGE_DIVISOR)


def test_a_noise_dominated_curve_that_blows_up_gets_low_confidence_and_says_why():
    lrs = np.geomspace(1e-7, 10, 100)
    losses = 1.0 + 0.5 * np.random.default_rng(0).standard_normal(100)  # MSE on tiny batches
    losses[85:] = 10.0 ** np.arange(1, 16)
    s = suggest(lrs, losses)
    assert s.confidence == "low" and "blew up" in s.reason and s.lr is not None
    low, high = s.interval
    assert low <= s.lr <= high


def test_without_a_blowup_edge_falls_back_to_minimum():
    from lrexp.engine.suggest import edge

    lrs = np.geomspace(1e-7, 10, 100)
    x = np.log10(lrs)
    losses = 2.0 - np.tanh(x + 3) + 0.05 * np.exp(x + 0.5)  # a gentle turn, no explosion
    assert edge(lrs, losses).lr == minimum(lrs, losses).lr


def _adam_like_curve(seed=0):
    """Falls from 2.3 to 0.5, explodes at point 62 (three losses near 8), then settles back
    near where it began (Adam's moments recover: the model predicts the class prior) and only
    goes far up from point 90 on."""
    rng = np.random.default_rng(seed)
    lrs = np.geomspace(1e-7, 10, 100)
    x = np.log10(lrs)
    losses = 1.4 - 0.9 * np.tanh(2 * (x + 4)) + 0.02 * rng.standard_normal(100)
    losses[62:65] = [8.0, 7.5, 6.0]
    losses[65:90] = 2.3 + 0.02 * rng.standard_normal(25)
    losses[90:] = 2.3 * 3.0 ** np.arange(1, 11)
    return lrs, losses


@pytest.mark.parametrize("seed", range(3))
def test_the_blowup_is_where_the_raw_loss_exploded_not_where_it_stayed_up(seed):
    from lrexp.engine.curve import blowup_index

    lrs, losses = _adam_like_curve(seed)
    assert blowup_index(losses) == 62


def test_one_unlucky_batch_after_the_minimum_is_not_the_blowup():
    from lrexp.engine.curve import blowup_index

    lrs, losses = _adam_like_curve()
    losses[63:65] = losses[60]  # only point 62 is high now
    assert blowup_index(losses) == 90


def _minimum_far_below_the_blowup():
    """Bottoms out at LR 1e-5, then climbs slowly for four decades before it blows up at ~1:
    blow-up-based answers land on the rising side."""
    lrs = np.geomspace(1e-7, 10, 100)
    x = np.log10(lrs)
    losses = 2.0 - np.tanh(2 * (x + 6)) + 0.3 * np.clip(x + 5, 0, None)
    losses[x > 0] = 1e3
    return lrs, losses + 0.01 * np.random.default_rng(0).standard_normal(100)


def test_a_suggestion_past_the_minimum_is_never_high():
    lrs, losses = _minimum_far_below_the_blowup()
    minimum_lr = lrs[np.nanargmin(zero_lag(losses))]
    for method in ["default", *METHODS]:
        s = suggest(lrs, losses, method)
        if s.lr is not None and s.lr > minimum_lr:
            assert s.confidence != "high", (method, s)
    edge_answer = suggest(lrs, losses, "edge")
    assert edge_answer.lr > minimum_lr and "past the curve's minimum" in edge_answer.reason


def test_an_interval_wholly_past_the_minimum_is_never_high():
    lrs, losses = _minimum_far_below_the_blowup()
    verdict = assess(lrs, losses)
    assert verdict.interval[0] > lrs[np.nanargmin(zero_lag(losses))]
    assert verdict.confidence == "low" and "past its minimum" in verdict.reason


def test_pretrained_switches_the_default_to_the_fine_tuning_rule_and_says_so():
    from lrexp.engine.suggest import FINE_TUNING_DIVISOR

    lrs, losses = _sigmoid_curve(noise=0.05)
    scratch, tuned = suggest(lrs, losses), suggest(lrs, losses, pretrained=True)
    assert (scratch.regime, tuned.regime) == ("from scratch", "fine-tuning")
    assert tuned.method == "default (finetune)" and "fine-tuning" in tuned.reason
    assert tuned.lr == pytest.approx(lrs[np.nanargmin(zero_lag(losses))] / FINE_TUNING_DIVISOR)
    assert scratch.method == "default (descent)" and "from scratch" in scratch.reason


def test_the_verdict_of_a_pretrained_curve_says_it_was_read_as_fine_tuning():
    lrs, losses = _sigmoid_curve(noise=0.05)
    assert "fine-tuning" in assess(lrs, losses, pretrained=True).reason
    assert "fine-tuning" not in assess(lrs, losses).reason


def test_the_supported_interval_holds_the_suggestion():
    """Fine-tuning reads an LR below the interval the blow-up supports (blow-up / 100 .. / 5):
    the interval widens to it, and the reason says so."""
    lrs, losses = _sigmoid_curve(noise=0.05, centre=-4.0)
    tuned, scratch = suggest(lrs, losses, pretrained=True), suggest(lrs, losses)
    assert tuned.lr < scratch.interval[0]  # the minimum / 30, below the blow-up / 100
    assert tuned.interval == (tuned.lr, scratch.interval[1])
    assert "widened to the suggestion" in tuned.reason


def test_the_fine_tuning_switch_never_moves_the_lr_up_onto_the_rising_side():
    """Random pretrained-looking curves (a small wandering fall, then a blow-up anywhere): where
    the valley lies above the minimum / 30, the default moves up at most to the curve's minimum
    and a fifth of its blow-up."""
    from lrexp.engine.suggest import INTERVAL_BELOW_EDGE, _readable_curve, finetune

    rng = np.random.default_rng(0)
    lrs = np.geomspace(1e-7, 10, 100)
    moved_up = 0
    for _ in range(300):
        start = rng.uniform(-7, 0)
        losses = 1.0 + np.cumsum(rng.normal(-0.003, 0.02, 100))
        losses += np.exp(rng.uniform(2, 10) * (np.log10(lrs) - start)).clip(max=50)
        curve = _readable_curve(lrs, losses)
        rule, tuned = finetune(lrs, losses).lr, suggest(lrs, losses, pretrained=True).lr
        if isinstance(curve, str) or rule is None or tuned is None or tuned <= rule:
            continue
        moved_up += 1
        ceiling = min(float(curve.lrs[curve.best]),
                      curve.blowup_lr / INTERVAL_BELOW_EDGE[1] if curve.blowup_lr else np.inf)
        assert tuned <= max(ceiling, rule) * (1 + 1e-9)
    assert moved_up > 0  # the property was exercised


def test_the_valley_is_not_read_off_a_handful_of_points():
    lrs = np.geomspace(1e-4, 10, 8)
    x = np.log10(lrs)
    losses = 2.0 - np.tanh(x + 3) + np.exp(3 * (x + 0.5)).clip(max=50)
    assert descent_valley_lr(lrs, losses) is None
    # the default falls back to the minimum's LR / DESCENT_FALLBACK_DIVISOR
    expected = minimum(lrs, losses).lr * MINIMUM_DIVISOR / DESCENT_FALLBACK_DIVISOR
    assert suggest(lrs, losses).lr == pytest.approx(expected)


def test_the_descent_never_lands_past_a_fifth_of_the_blowup():
    """On a linear ramp the valley sits near the blow-up (each point adds as much LR as the
    whole fall spans): DESCENT_FACTOR times it would lie past a fifth of the blow-up, so the
    default stops there."""
    lrs = np.linspace(1e-3, 1, 100)
    losses = 2 - 0.5 * np.tanh(5 * (lrs - 0.3)) + np.where(lrs > 0.9, 10 ** (20 * (lrs - 0.9)), 0)
    res = RangeTestResult(lrs, losses, losses)
    s = res.suggest()
    from lrexp.engine.suggest import DESCENT_FACTOR

    unbounded = DESCENT_FACTOR * descent_valley_lr(lrs, losses)
    assert res.blowup_lr is not None and unbounded > res.blowup_lr / 5
    assert s.lr == pytest.approx(res.blowup_lr / 5)


def test_a_default_below_the_tested_range_is_low_and_says_lower_min_lr():
    # 12 points, the minimum at the third: too short for a valley, and its LR / 10 lies below
    # the first LR
    lrs = np.geomspace(1e-3, 10, 12)
    losses = np.array([2.0, 1.0, 0.5, 0.6, 0.9, 1.5, 3, 6, 12, 50, 200, 800])
    s = suggest(lrs, losses)
    assert s.lr < lrs[0] and s.confidence == "low" and "lower min_lr" in s.reason


def test_a_fall_lost_in_the_noise_is_read_off_the_blowup():
    """A loss that falls 0.2 near LR 1e-2 under minibatch noise of 0.2, then explodes past LR
    1: its valley is a noise dip, and the default reads the blow-up instead, "low"; the same
    fall with a hundredth of the noise is read off its valley, "high"."""
    lrs = np.geomspace(1e-6, 10, 100)
    x = np.log10(lrs)
    trend = 2.0 - 0.1 * (np.tanh(2 * (x + 2)) + 1) + np.where(x > 0, np.exp(5 * x) - 1, 0)
    noise = 0.2 * np.random.default_rng(3).standard_normal(100)
    noisy = suggest(lrs, trend + noise)
    verdict = assess(lrs, trend + noise)
    assert verdict.fall_in_noise_widths < FALL_HIGH
    assert noisy.lr == pytest.approx(verdict.blowup_lr / EDGE_DIVISOR)
    assert 0.5 < verdict.blowup_lr <= 1.5 and noisy.confidence == "low"
    assert "blow-up's LR / 20" in noisy.reason
    assert 0.05 < noisy.lr < 0.08  # the blow-up near LR 1, / 20
    assert "past the curve's minimum" in noisy.reason  # the noise put the minimum lower
    clean = suggest(lrs, trend + noise / 100)
    assert assess(lrs, trend + noise / 100).fall_in_noise_widths >= FALL_HIGH
    assert clean.confidence == "high" and clean.lr < 0.03  # the valley of the fall near 1e-2
    # a curve too short for a valley keeps the minimum's fallback, whatever its noise reads
    short = np.geomspace(1e-6, 10, 14)
    short_losses = np.interp(np.log10(short), x, trend + noise)
    assert suggest(short, short_losses).lr == pytest.approx(
        minimum(short, short_losses).lr * MINIMUM_DIVISOR / DESCENT_FALLBACK_DIVISOR)


def test_a_test_stopped_early_never_suggests_an_lr_it_did_not_reach():
    # Ctrl-C after 22 points spanning a quarter decade: the valley times 1.5 lay past the last
    # LR the test reached (found by a new user's walk)
    lrs = np.geomspace(1e-7, 1.8e-7, 22)
    noise = 0.003 * np.random.default_rng(2).standard_normal(22)
    losses = 0.8 - 0.02 * np.linspace(0, 1, 22) + noise
    assert descent_valley_lr(lrs, losses) * DESCENT_FACTOR > lrs[-1]  # what the cap is for
    cut = RangeTestResult(lrs, losses, smooth(losses), stop_reason="interrupted")
    suggestion = cut.suggest()
    assert suggestion.lr == pytest.approx(lrs[-1]) and suggestion.confidence == "low"


def test_without_momentum_the_default_is_the_factor_higher_and_says_why():
    from lrexp.engine.suggest import NO_MOMENTUM_FACTOR

    lrs, losses = _sigmoid_curve(noise=0.02)
    kept, plain = suggest(lrs, losses), suggest(lrs, losses, momentum=False)
    assert plain.lr == pytest.approx(NO_MOMENTUM_FACTOR * kept.lr)
    assert "keeps no momentum" in plain.reason and "keeps no momentum" not in kept.reason
    assert plain.lr <= plain.interval[1]  # the supported interval holds it


def test_momentum_moves_neither_the_fine_tuning_default_nor_a_named_rule():
    lrs, losses = _sigmoid_curve(noise=0.02)
    assert suggest(lrs, losses, pretrained=True, momentum=False) == \
        suggest(lrs, losses, pretrained=True)
    for method in METHODS:
        assert suggest(lrs, losses, method, momentum=False) == suggest(lrs, losses, method)


def test_without_momentum_the_default_stops_at_a_fifth_of_the_blowup():
    """The linear ramp whose valley x DESCENT_FACTOR already lies past a fifth of the blow-up:
    the factor for an optimizer without momentum cannot lift it further."""
    lrs = np.linspace(1e-3, 1, 100)
    losses = 2 - 0.5 * np.tanh(5 * (lrs - 0.3)) + np.where(lrs > 0.9, 10 ** (20 * (lrs - 0.9)), 0)
    res = RangeTestResult(lrs, losses, losses, momentum=False)
    assert res.suggest().lr == pytest.approx(res.blowup_lr / 5)


def test_without_momentum_a_fifth_of_the_blowup_cuts_the_raise_part_way(monkeypatch):
    """With a factor large enough to pass a fifth of the blow-up, the raise stops there."""
    import lrexp.engine.suggest as rules

    lrs, losses = _sigmoid_curve(noise=0.02)
    kept = suggest(lrs, losses)
    ceiling = assess(lrs, losses).blowup_lr / 5
    monkeypatch.setattr(rules, "NO_MOMENTUM_FACTOR", 2 * ceiling / kept.lr)
    assert suggest(lrs, losses, momentum=False).lr == pytest.approx(ceiling)
    monkeypatch.setattr(rules, "NO_MOMENTUM_FACTOR", 0.5 * ceiling / kept.lr)
    assert suggest(lrs, losses, momentum=False).lr == pytest.approx(0.5 * ceiling)


def test_without_momentum_or_a_blowup_the_raise_stops_at_the_last_lr_tested():
    from lrexp.engine.suggest import NO_MOMENTUM_FACTOR

    lrs = np.geomspace(1e-7, 1e-2, 100)
    losses = 2.0 - np.tanh(np.log10(lrs) + 2.6)  # still falling where the test ends
    kept, plain = suggest(lrs, losses), suggest(lrs, losses, momentum=False)
    assert assess(lrs, losses).blowup_lr is None and kept.lr < lrs[-1]
    assert plain.lr == pytest.approx(min(NO_MOMENTUM_FACTOR * kept.lr, lrs[-1]))
    assert plain.method == "default (descent, no momentum)"
