"""range_test(..., repeats=k): k curves from the same initial state with their own data orders,
read as their median; the spread of their suggestions weighs the confidence."""

import copy
import json
import random

import numpy as np
import pytest
import torch
from app_runs import compose_config, run_config
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lrexp
from lrexp.app.report import summary_text
from lrexp.engine.repeats import median_curve, median_length, repeat_seed
from lrexp.engine.result import RangeTestResult
from lrexp.engine.suggest import SPREAD_HIGH_DECADES, Verdict, spread_of, suggest, with_spread
from lrexp.run.life import EXIT_OK
from lrexp.run.summary import RunSummary


def _data(n=256, features=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen)
    y = (x[:, :3].sum(1) > 0).long()
    return x, y


def _mlp(seed=0, features=8):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, 2))


def _shuffled(batch_size=8, seed=0):
    x, y = _data()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


def _test(model, loader, **settings):
    settings = {"min_lr": 1e-4, "max_lr": 10.0, "num_iter": 40, "progress": False, **settings}
    return lrexp.range_test(model, loader, nn.CrossEntropyLoss(), **settings)


def _same(a, b):
    return np.array_equal(a, b, equal_nan=True)


# -- the median curve and the seeds, as pure functions -------------------------------------------
def test_the_median_curve_counts_the_repeats_that_reached_each_lr():
    lrs = np.array([1.0, 2.0, 3.0, 4.0])
    curves = [np.array([3.0, 2.0, 1.0, 9.0]), np.array([5.0, 4.0]), np.array([4.0, 3.0, np.nan])]
    median = median_curve([lrs[: len(c)] for c in curves], curves)
    # point 2: two of three repeats reached it (a NaN counts as +inf); point 3: one, a minority
    assert median_length([4, 2, 3]) == 3 and len(median.lrs) == 3
    assert median.median.tolist() == [4.0, 3.0, np.inf]
    assert median.counts.tolist() == [3, 3, 2]
    assert median.q25[0] == 3.5 and median.q75[0] == 4.5


def test_repeat_seeds_are_reproducible_and_distinct():
    seeds = [repeat_seed(0, i) for i in range(1, 20)]
    assert seeds == [repeat_seed(0, i) for i in range(1, 20)] and len(set(seeds)) == 19
    assert repeat_seed(1, 1) not in seeds and all(0 <= s < 2**32 for s in seeds)


def test_the_spread_of_suggestions_is_in_decades():
    spread = spread_of([1e-3, 1e-2, None, 1e-1])
    assert spread.suggested == 3 and spread.median_lr == pytest.approx(1e-2)
    assert spread.iqr_decades == pytest.approx(1.0) and spread.range_decades == pytest.approx(2.0)
    assert spread_of([1e-2]).iqr_decades is None


def test_repeats_that_disagree_cannot_give_high_confidence():
    high = Verdict("high", "the loss fell 1 and blew up at LR 1.")
    agreeing = spread_of([1e-2, 1.2e-2, 1.5e-2])
    assert with_spread(high, agreeing) == high
    width = 2 * SPREAD_HIGH_DECADES + 0.1  # IQR of three evenly spaced values: half their range
    disagreeing = spread_of([1e-3, 1e-3 * 10**width, 1e-3 * 10 ** (2 * width)])
    judged = with_spread(high, disagreeing)
    assert judged.confidence == "low" and "3 repeats disagree" in judged.reason
    assert judged.reason.startswith(high.reason)
    few = with_spread(high, spread_of([1e-2, None, None]))
    assert few.confidence == "low" and "only 1 of the 3 repeats" in few.reason


def _edge_curve(blowup_lr, n=60, fall_lr=0.05):
    """A clean curve on a fixed grid: flat, falls fastest at ``fall_lr``, blows up at
    ``blowup_lr``."""
    lrs = np.logspace(-5, 1, n)
    x = np.log10(lrs)
    loss = 2.0 - 1.0 / (1 + np.exp(-3 * (x - np.log10(fall_lr)))) + 0.002 * np.sin(7 * x)
    loss = np.where(lrs > blowup_lr, loss + 40 * (np.log10(lrs / blowup_lr)) ** 2, loss)
    return RangeTestResult(lrs, loss, loss)


def test_a_median_curve_whose_repeats_disagree_is_not_high_and_says_why():
    agreeing = RangeTestResult.of_repeats([_edge_curve(0.5) for _ in range(3)])
    assert agreeing.suggest().confidence == "high"
    assert agreeing.suggestion_spread().iqr_decades == 0
    disagreeing = RangeTestResult.of_repeats([_edge_curve(lr) for lr in (1e-2, 0.5, 5.0)])
    suggestion = disagreeing.suggest()
    assert suggestion.lr is not None and suggestion.confidence == "low"
    assert "repeats disagree" in suggestion.reason and "decades (IQR" in suggestion.reason
    assert disagreeing.verdict.confidence == "low"


def test_a_single_test_cut_short_is_never_high_and_says_to_finish_it():
    whole = _edge_curve(0.5)
    assert whole.suggest().confidence == "high"
    cut = RangeTestResult(whole.lrs, whole.losses, whole.smoothed, stop_reason="interrupted")
    suggestion = cut.suggest()
    assert suggestion.lr == whole.suggest().lr and suggestion.confidence == "low"
    assert suggestion.reason.startswith(f"The test was stopped at LR {whole.lrs[-1]:.3g}")
    assert "run the test to the end" in suggestion.reason
    # the curve's own reading follows as a sentence of its own
    after = suggestion.reason.split("max_lr or num_iter). ", 1)[1]
    assert after[0].isupper() and after[1:] == whole.suggest().reason[1:]


def test_a_repeat_cut_short_by_ctrl_c_does_not_count_in_the_spread():
    partial = _edge_curve(0.5, fall_lr=1e-3)  # a repeat whose loss fell early, cut short
    partial = RangeTestResult(partial.lrs[:25], partial.losses[:25], partial.smoothed[:25],
                              stop_reason="interrupted")
    assert suggest(partial.lrs, partial.losses).lr < _edge_curve(0.5).suggest().lr / 10
    result = RangeTestResult.of_repeats([_edge_curve(0.5), _edge_curve(0.5), partial])
    assert result.stop_reason == "interrupted"
    spread = result.suggestion_spread()
    assert spread.suggested == 2 and spread.iqr_decades == 0
    assert result.suggest().confidence == "high" and result.verdict.confidence == "high"


# -- range_test with repeats ---------------------------------------------------------------------
def test_a_full_batch_test_repeats_identically_and_equals_the_single_test():
    x, y = _data()
    full_batch = [(x, y)]  # the data order cannot change: every repeat must give one curve
    model = _mlp()
    single = _test(model, full_batch)
    repeated = _test(model, full_batch, repeats=3)  # restore=True: from the same weights
    assert len(repeated.repeats) == 3 and not single.repeats
    for curve in (repeated, *repeated.repeats):
        assert _same(curve.lrs, single.lrs) and _same(curve.losses, single.losses)
        assert _same(curve.smoothed, single.smoothed)
    assert repeated.stop_reason == single.stop_reason
    spread = repeated.suggestion_spread()
    assert spread.iqr_decades == 0 and spread.range_decades == 0
    assert repeated.suggest() == single.suggest()


def test_the_first_repeat_is_the_single_test_and_the_others_reshuffle():
    single = _test(_mlp(), _shuffled())
    repeated = _test(_mlp(), _shuffled(), repeats=3, seed=0)
    first, *others = repeated.repeats
    assert _same(first.losses, single.losses) and first.extra["seed"] is None
    assert [r.extra["seed"] for r in others] == [repeat_seed(0, 1), repeat_seed(0, 2)]
    for other in others:  # another data order: another curve
        shared = min(len(other), len(first))
        assert not _same(other.losses[:shared], first.losses[:shared])
    band = repeated.band
    assert band is not None and np.mean(band.q75 - band.q25) > 0
    again = _test(_mlp(), _shuffled(), repeats=3, seed=0)
    assert all(_same(a.losses, b.losses) for a, b in zip(again.repeats, repeated.repeats))


class _GlobalShuffle:
    """Minibatches in an order drawn from torch's global generator, as a DataLoader without
    its own generator shuffles (repeats reseed that generator too); cheaper than one."""

    def __init__(self, batch_size, seed):
        self.x, self.y = _data(seed=seed)
        self.batch_size = batch_size

    def __iter__(self):
        order = torch.randperm(len(self.x))
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            yield self.x[index], self.y[index]


def _flat_noise(seed):
    """The std of the median curve's loss for k = 1, 3 and 9 repeats, where the LRs are too
    small to move the weights: there the curve is only the minibatches' noise. The first k of
    9 repeats are what repeats=k runs (repeat i's seed depends on the base seed and i alone)."""
    result = _test(_mlp(seed), _GlobalShuffle(4, seed), min_lr=1e-8, max_lr=1e-6,
                   num_iter=60, repeats=9, seed=seed)
    curves = result.repeats
    return {k: float(np.std(median_curve([c.lrs for c in curves[:k]],
                                         [c.losses for c in curves[:k]]).median))
            for k in (1, 3, 9)}


def test_the_median_curve_is_less_noisy_with_more_repeats():
    # The median of k independent noises has ~1.25/sqrt(k) of one's std: 0.72 for k=3 and 0.42
    # for k=9. Averaged over four base seeds of 60 points each, the estimates are good to ~5%
    # (measured: 0.68 and 0.40).
    noises = [_flat_noise(seed) for seed in range(4)]
    noise = {k: np.mean([n[k] for n in noises]) for k in (1, 3, 9)}
    assert noise[3] < 0.85 * noise[1]
    assert noise[9] < 0.6 * noise[1]


def test_weights_optimizer_and_random_states_are_restored_exactly_after_repeats():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _data()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()  # optimizer state (moments, step) to restore
    loader = _shuffled()
    weights = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    rngs = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    shuffle = loader.generator.get_state()
    _test(model, loader, optimizer=optimizer, repeats=3, seed=5)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    state = optimizer.state_dict()
    for param, saved in opt_state["state"].items():
        assert all(torch.equal(saved[k], state["state"][param][k]) for k in saved)
    assert state["param_groups"] == opt_state["param_groups"]
    assert torch.equal(torch.get_rng_state(), rngs[0])
    assert np.array_equal(np.random.get_state()[1], rngs[1]) and random.getstate() == rngs[2]
    assert torch.equal(loader.generator.get_state(), shuffle)


def test_on_step_sees_every_repeat_from_step_zero():
    steps = []
    result = _test(_mlp(), _shuffled(), num_iter=10, max_lr=1e-2, repeats=2,
                   on_step=lambda step, lr, loss: steps.append(step))
    assert steps == list(range(10)) * 2 and len(result) == 10


def test_repeats_and_the_spread_survive_the_csv_and_json_round_trip(tmp_path):
    result = _test(_mlp(), _shuffled(), repeats=3, seed=1)
    path = result.to_csv(tmp_path / "curve.csv")
    assert RangeTestResult.repeats_path(path).name == "curve_repeats.csv"
    for back in (RangeTestResult.from_csv(path), RangeTestResult.from_dict(
            json.loads(json.dumps(result.to_dict())))):
        assert len(back.repeats) == 3 and _same(back.losses, result.losses)
        for a, b in zip(back.repeats, result.repeats):
            assert _same(a.lrs, b.lrs) and _same(a.losses, b.losses)
            assert _same(a.smoothed, b.smoothed)
            assert (a.stop_reason, a.extra) == (b.stop_reason, b.extra)
        assert back.suggestion_spread() == result.suggestion_spread()
        assert back.suggest() == result.suggest()


def test_a_single_tests_files_are_unchanged_and_old_files_read(tmp_path):
    result = _test(_mlp(), _shuffled())
    path = result.to_csv(tmp_path / "curve.csv")
    assert not RangeTestResult.repeats_path(path).exists()
    assert '"repeats"' not in path.read_text().splitlines()[0]
    data = result.to_dict()
    del data["repeats"]  # a file from before repeats existed
    assert RangeTestResult.from_dict(data).repeats == []


def test_the_summary_carries_the_spread_and_old_summaries_read():
    result = _test(_mlp(), _shuffled(), repeats=3, seed=1)
    summary = RunSummary.of_result(result, {"net": "mlp"}, 1.0, "cpu")
    spread = result.suggestion_spread()
    assert summary.repeats == 3 and summary.repeat_suggested_lrs == list(spread.lrs)
    back = RunSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
    assert back == summary
    metrics = back.metrics()
    assert metrics["repeats"] == 3
    assert metrics["suggested_lr_iqr_decades"] == pytest.approx(spread.iqr_decades)
    old = {key: value for key, value in summary.to_dict().items()
           if key not in ("repeats", "repeat_suggested_lrs", "suggested_lr_iqr_decades",
                          "suggested_lr_range_decades")}
    assert RunSummary.from_dict(old).repeats == 1
    assert "suggested_lr_iqr_decades" not in RunSummary.from_dict(old).metrics()


def test_the_app_runs_repeats_and_writes_each_curve_and_the_spread(tmp_path):
    cfg = compose_config("repeats=2", "net=mlp", "num_iter=30", out_dir=tmp_path)
    assert run_config(cfg) == EXIT_OK
    result = RangeTestResult.from_csv(tmp_path / "curve.csv")
    assert len(result.repeats) == 2 and (tmp_path / "curve_repeats.csv").exists()
    summary = RunSummary.read(tmp_path / "summary.json")
    assert summary.repeats == 2 and len(summary.repeat_suggested_lrs) == 2
    assert summary.suggested_lr == result.suggest().lr
    text = summary_text(summary, {"curve": tmp_path / "curve.csv"}, tmp_path)
    assert "median of 2 repeats; suggested LR spread" in text


def test_the_plot_draws_each_repeat_and_the_band():
    from matplotlib.collections import PolyCollection

    from lrexp.plotting import plot

    single = lrexp.plot(_test(_mlp(), _shuffled())).axes[0]
    ax = plot(_test(_mlp(), _shuffled(), repeats=3, seed=2)).axes[0]
    assert len(ax.lines) == len(single.lines) + 3  # one faint line per repeat
    labels = [c.get_label() for c in ax.collections if isinstance(c, PolyCollection)]
    assert "25th-75th percentile of the repeats" in labels


def test_verify_probes_the_median_curve_once():
    result = _test(_mlp(), _shuffled(), repeats=2, verify=True, verify_steps=5)
    assert len(result.repeats) == 2 and result.verification is not None
    assert result.suggest().method == "verified"


def _history(client, run_id, key):
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_the_mlflow_run_has_each_repeats_curve_the_median_and_its_band(
        tmp_path, shared_sqlite_uri, experiment_name, capsys):
    from mlflow.tracking import MlflowClient

    from lrexp.tracking.compare import main as compare_runs

    # the full default ramp: the repeats diverge at different steps, so their lengths differ
    cfg = compose_config("repeats=3", "net=mlp", "tracking=mlflow",
                         f"tracking.uri={shared_sqlite_uri}",
                         f"tracking.experiment={experiment_name}", out_dir=tmp_path)
    assert run_config(cfg) == EXIT_OK
    repeats = RangeTestResult.from_csv(tmp_path / "curve.csv").repeats  # what the run wrote
    client = MlflowClient(shared_sqlite_uri)
    [run] = client.search_runs([client.get_experiment_by_name(experiment_name).experiment_id])
    for index, repeat in enumerate(repeats):
        np.testing.assert_array_equal(_history(client, run.info.run_id, f"loss_repeat_{index}"),
                                      repeat.losses)
    longest = max(repeats, key=len)
    np.testing.assert_array_equal(_history(client, run.info.run_id, "lr"), longest.lrs)
    # oracle: at each point, the quartiles of the repeats that reached it, for as long as two
    # of the three did (NaN counts as inf)
    length = sorted((len(r) for r in repeats), reverse=True)[1]
    reached = [np.nan_to_num([r.losses[j] for r in repeats if j < len(r)], nan=np.inf)
               for j in range(length)]
    np.testing.assert_allclose(_history(client, run.info.run_id, "loss"),
                               [np.median(values) for values in reached])
    q75 = [np.quantile(values, 0.75) for values in reached]
    np.testing.assert_allclose(_history(client, run.info.run_id, "loss_q75"),
                               [value for value in q75 if np.isfinite(value)])
    assert run.data.metrics["repeats"] == 3
    # compare pairs lr and loss by step, though lr runs on along the longest repeat
    assert compare_runs(["--experiment", experiment_name, "--uri", shared_sqlite_uri,
                         "--out", str(tmp_path / "cmp.png")]) == 0
    assert "mlp" in capsys.readouterr().out


def test_a_repeated_run_stopped_mid_test_keeps_its_steps_in_mlflow(
        tmp_path, shared_sqlite_uri, experiment_name, caplog):
    from app_runs import curve_rows, signal_this_process_when
    from mlflow.tracking import MlflowClient

    cfg = compose_config("repeats=3", "net=mlp", "num_iter=100000", "max_lr=1e-3",
                         "tracking=mlflow", f"tracking.uri={shared_sqlite_uri}",
                         f"tracking.experiment={experiment_name}", out_dir=tmp_path)
    with signal_this_process_when(lambda: curve_rows(tmp_path / "curve.csv") >= 10) as problems:
        code = run_config(cfg)
    assert not problems and code == 130, caplog.text
    recorded = RangeTestResult.from_csv(tmp_path / "curve.csv")  # repeat 0, stopped
    client = MlflowClient(shared_sqlite_uri)
    [run] = client.search_runs([client.get_experiment_by_name(experiment_name).experiment_id])
    assert run.info.status == "KILLED"
    np.testing.assert_array_equal(_history(client, run.info.run_id, "loss_repeat_0"),
                                  recorded.losses)
    np.testing.assert_array_equal(_history(client, run.info.run_id, "loss"), recorded.losses)


def test_a_curve_stopped_by_divergence_is_never_told_to_raise_max_lr():
    """The test stopped where the smoothed loss diverged while the raw curve still seemed to
    fall: "raise max_lr" would only reach the same divergence again."""
    curve = _edge_curve(0.5)
    falling = RangeTestResult(curve.lrs[:30], curve.losses[:30], curve.smoothed[:30],
                              stop_reason="diverged")
    reason = falling.suggest().reason
    assert "raise max_lr" in reason  # the curve's reading asks for it...
    assert f"stopped where the loss diverged, at LR {curve.lrs[29]:.3g}" in reason  # ...not so
    completed = RangeTestResult(curve.lrs[:30], curve.losses[:30], curve.smoothed[:30])
    assert "stopped where the loss diverged" not in completed.suggest().reason
