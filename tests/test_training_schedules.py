"""Training schedules from a range test: one-cycle and cyclical LR bounds read from the curve,
the real torch schedulers built from them, and the bounds in summary.json, the console and MLflow.

The oracle curve: the loss is flat at 2 up to LR 1e-4, falls log-linearly to 0.5 at LR 1e-1 and
then explodes. The loss starts to fall in the 1e-4 decade; it stops falling at 1e-1, and the
top of the cycle sits a fixed distance below the blow-up, in the 1e-2 decade. When fine-tuning,
one-cycle peaks at twice the suggestion, in the 1e-3 decade.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch
from app_runs import compose_config, run_config
from mlflow.tracking import MlflowClient

import lrexp
from lrexp.app.report import summary_text
from lrexp.engine.curve import smooth
from lrexp.engine.result import RangeTestResult
from lrexp.engine.suggest import assess, fall_start_lr
from lrexp.engine.training_schedules import (
    CYCLIC_MIN_RATIO,
    ONECYCLE_DEFAULT_DIV,
    ONECYCLE_MAX_DIV,
    ONECYCLE_MIN_DIV,
    ONECYCLE_PEAK_BELOW_BLOWUP,
    ONECYCLE_PEAK_OVER_SUGGESTION,
    CyclicSettings,
    OneCycleSettings,
    ScheduleBoundsError,
)
from lrexp.run.summary import RunSummary, SummaryError
from lrexp.tracking.mlflow_tracker import MlflowTracker

NAMES = {"net": "mlp", "dataset": "sine", "optimizer": "SGD"}


def falling_curve(noise=0.0, seed=0, fall=(1e-4, 1e-1)) -> RangeTestResult:
    """Flat until fall[0], log-linear down to fall[1], then a blow-up; 100 points 1e-7..10."""
    lrs = 1e-7 * 1e8 ** (np.arange(100) / 100)
    start, stop = fall
    falling = 2.0 - 1.5 * np.log10(lrs / start) / np.log10(stop / start)
    losses = np.where(lrs < start, 2.0, np.where(lrs > stop, 0.5 * (lrs / stop) ** 6, falling))
    losses = losses + noise * np.random.default_rng(seed).standard_normal(len(lrs))
    return RangeTestResult(lrs, losses, smooth(losses), stop_reason="completed")


def flat_curve() -> RangeTestResult:
    """A loss that does not depend on the LR (a model that does not learn)."""
    return RangeTestResult(np.geomspace(1e-7, 1.0, 50), np.full(50, 2.0), np.full(50, 2.0))


def lrs_of(scheduler, optimizer, steps):
    """The LR the optimizer trains with at each of ``steps`` steps."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def sgd(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


# -- the rules, on a curve with known answers --------------------------------------------------
def test_onecycle_peaks_below_the_blowup_and_starts_within_smiths_bounds():
    # the fall spans three decades: its start lies far below max_lr / 25, where the warm-up
    # would crawl, so the start is torch's max_lr / 25
    res = falling_curve()
    settings = res.schedule("onecycle")
    assert isinstance(settings, OneCycleSettings)
    # the peak: the blow-up's LR / 15 (chosen on the suggestion benchmark's tuning split), below
    # the supported interval's top (blow-up / 5), which peaked too high
    verdict = assess(res.lrs, res.losses)
    assert settings.max_lr == pytest.approx(verdict.blowup_lr / ONECYCLE_PEAK_BELOW_BLOWUP)
    assert settings.max_lr < verdict.interval[1]
    assert settings.div_factor == ONECYCLE_MAX_DIV
    assert settings.initial_lr == pytest.approx(settings.max_lr / settings.div_factor)


def test_onecycle_starts_where_a_fall_of_about_one_decade_starts():
    res = falling_curve(fall=(3e-3, 1e-1))
    onecycle = res.schedule("onecycle")
    assert ONECYCLE_MIN_DIV < onecycle.div_factor < ONECYCLE_MAX_DIV
    assert onecycle.initial_lr == pytest.approx(fall_start_lr(res.lrs, res.losses))


def test_cyclic_cycles_between_the_start_and_the_end_of_the_fall():
    settings = falling_curve().schedule("cyclic")
    assert isinstance(settings, CyclicSettings)
    assert 1e-4 <= settings.base_lr < 1e-3
    assert 1e-2 <= settings.max_lr < 1e-1
    # cyclic's top is the supported interval's top: one reading of the curve
    assert settings.max_lr == pytest.approx(assess(falling_curve().lrs,
                                                   falling_curve().losses).interval[1])


def test_a_fine_tuning_curve_peaks_at_twice_the_fine_tuning_suggestion():
    # the blow-up at 0.145 is where training from scratch peaks below (/ 15: 0.0096); a
    # pretrained net fine-tunes well far below its blow-up, so its peak follows the fine-tuning
    # rule's LR (0.0023 on this curve): twice it, 0.0046
    scratch = falling_curve()
    tuned = dataclasses.replace(scratch, pretrained=True)
    peak = tuned.schedule("onecycle").max_lr
    assert peak == pytest.approx(ONECYCLE_PEAK_OVER_SUGGESTION * tuned.suggest().lr)
    assert 4e-3 < peak < 5e-3
    assert peak < scratch.schedule("onecycle").max_lr == pytest.approx(
        scratch.blowup_lr / ONECYCLE_PEAK_BELOW_BLOWUP)


def test_a_fine_tuning_peak_stops_at_the_top_of_the_supported_interval():
    # a fall of one decade (1e-4 to 1e-3): twice the fine-tuning rule's LR lies past blow-up / 5
    res = dataclasses.replace(falling_curve(fall=(1e-4, 1e-3)), pretrained=True)
    assert ONECYCLE_PEAK_OVER_SUGGESTION * res.suggest().lr > res.verdict.interval[1]
    assert res.schedule("onecycle").max_lr == res.verdict.interval[1] == res.blowup_lr / 5


@pytest.mark.parametrize("seed", range(4))
def test_bounds_stay_in_their_decades_under_minibatch_noise(seed):
    res = falling_curve(noise=0.1, seed=seed)
    cyclic = res.schedule("cyclic")
    assert 1e-4 <= cyclic.base_lr < 1e-3 and 1e-2 <= cyclic.max_lr < 1e-1
    assert res.schedule("onecycle").div_factor == ONECYCLE_MAX_DIV


def test_the_bounds_read_the_curves_own_blowup_and_interval():
    res = falling_curve()
    assert res.schedule("cyclic").max_lr == res.verdict.interval[1] == res.blowup_lr / 5


def test_a_fall_that_starts_near_the_top_still_gets_a_cycle_and_a_warmup():
    # the loss falls only between 3e-2 and 1e-1: its start lies above blow-up / 5
    res = falling_curve(fall=(3e-2, 1e-1))
    cyclic, onecycle = res.schedule("cyclic"), res.schedule("onecycle")
    assert cyclic.base_lr == pytest.approx(cyclic.max_lr / CYCLIC_MIN_RATIO)
    assert onecycle.div_factor == ONECYCLE_MIN_DIV


def test_without_a_visible_fall_onecycle_takes_torchs_default_div_factor():
    # a fall within the noise, then a blow-up: the bounds rest on the blow-up alone
    lrs = np.geomspace(1e-5, 10.0, 100)
    rng = np.random.default_rng(1)
    losses = 2.0 + 0.05 * rng.standard_normal(100)
    losses[lrs > 1.0] = 2.0 * (lrs[lrs > 1.0] / 1.0) ** 4
    res = RangeTestResult(lrs, losses, smooth(losses))
    assert res.verdict.confidence == "low"
    assert res.schedule("onecycle").div_factor == ONECYCLE_DEFAULT_DIV
    cyclic = res.schedule("cyclic")
    assert cyclic.base_lr == pytest.approx(cyclic.max_lr / CYCLIC_MIN_RATIO)


# -- no suggestion, no bounds: one clear error ------------------------------------------------
@pytest.mark.parametrize("res", [
    flat_curve(),
    RangeTestResult([1e-3, 1e-2, 1e-1], [2.0, 1.9, 1.8], [2.0, 1.95, 1.9]),  # too short
    RangeTestResult(np.geomspace(1e-6, 1e-3, 60), np.full(60, np.nan),
                    np.full(60, np.nan)),  # not one finite loss
], ids=["flat", "too-short", "non-finite"])
@pytest.mark.parametrize("name", ["onecycle", "cyclic"])
def test_a_curve_without_a_suggestion_raises_one_clear_error(res, name):
    assert res.suggest().lr is None
    with pytest.raises(ScheduleBoundsError) as raised:
        res.schedule(name)
    message = str(raised.value)
    assert message.startswith(f"No {'one-cycle' if name == 'onecycle' else 'cyclic'} bounds")
    assert res.verdict.reason in message and "by hand" in message
    assert "\n" not in message
    with pytest.raises(ScheduleBoundsError):
        res.make_scheduler(sgd(), name, total_steps=10, step_size_up=5)


def test_a_curve_that_never_fell_gives_a_rough_guess_but_no_schedule():
    # it wobbles in its noise: it never falls and never blows up, so nothing bounds a cycle
    res = RangeTestResult(np.geomspace(1e-6, 1e-3, 60), 2 + 0.01 * np.sin(2.0 * np.arange(60)),
                          np.full(60, 2.0))
    guess = res.suggest()
    assert guess.lr is not None and guess.confidence == "low" and guess.interval is None
    for name in ("onecycle", "cyclic"):
        with pytest.raises(ScheduleBoundsError, match="by hand"):
            res.schedule(name)


def test_the_error_is_a_value_error_exported_at_the_top():
    assert lrexp.ScheduleBoundsError is ScheduleBoundsError
    assert issubclass(ScheduleBoundsError, ValueError)
    assert lrexp.OneCycleSettings is OneCycleSettings and lrexp.CyclicSettings is CyclicSettings


def test_an_unknown_schedule_names_the_known_ones():
    with pytest.raises(ValueError, match=r"'cosine'.*\['cyclic', 'onecycle'\]"):
        falling_curve().schedule("cosine")


# -- the settings and torch's schedulers -------------------------------------------------------
def test_settings_are_frozen_and_splat_into_torch():
    settings = OneCycleSettings(max_lr=0.05, div_factor=20.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_lr = 1.0
    assert settings.kwargs() == {"max_lr": 0.05, "div_factor": 20.0}
    assert CyclicSettings(1e-3, 1e-2).kwargs() == {"base_lr": 1e-3, "max_lr": 1e-2}
    optimizer = sgd()
    torch.optim.lr_scheduler.OneCycleLR(optimizer, **settings.kwargs(), total_steps=10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)


def test_settings_read_as_torch_calls():
    assert str(OneCycleSettings(0.05, 20.0)) == \
        "OneCycleLR: max_lr=0.05, div_factor=20 (starts at 0.0025)"
    assert str(CyclicSettings(0.001, 0.01)) == "CyclicLR: base_lr=0.001, max_lr=0.01"


def test_onecycle_scheduler_starts_at_max_over_div_and_peaks_at_max():
    res = falling_curve()
    settings = res.schedule("onecycle")
    optimizer = sgd(lr=123.0)  # the scheduler sets its own LR
    scheduler = res.make_scheduler(optimizer, "onecycle", total_steps=100)
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    lrs = lrs_of(scheduler, optimizer, 100)
    assert lrs[0] == pytest.approx(settings.max_lr / settings.div_factor)
    assert max(lrs) == pytest.approx(settings.max_lr)
    assert lrs.index(max(lrs)) == 29  # torch's pct_start=0.3 of 100 steps
    assert lrs[-1] < lrs[0]  # and anneals below the start


def test_cyclic_scheduler_cycles_between_base_and_max():
    res = falling_curve()
    settings = res.schedule("cyclic")
    optimizer = sgd()
    scheduler = res.make_scheduler(optimizer, "cyclic", step_size_up=10)
    assert isinstance(scheduler, torch.optim.lr_scheduler.CyclicLR)
    lrs = lrs_of(scheduler, optimizer, 41)
    assert lrs[0] == lrs[20] == lrs[40] == pytest.approx(settings.base_lr)
    assert lrs[10] == lrs[30] == pytest.approx(settings.max_lr)
    assert (min(lrs), max(lrs)) == pytest.approx((settings.base_lr, settings.max_lr))


def test_extra_keywords_pass_through_to_torch_and_win():
    res = falling_curve()
    settings = res.schedule("onecycle")
    optimizer = sgd()
    scheduler = res.make_scheduler(optimizer, "onecycle", total_steps=20, pct_start=0.5,
                                   div_factor=4.0)
    lrs = lrs_of(scheduler, optimizer, 20)
    assert lrs[0] == pytest.approx(settings.max_lr / 4.0)
    assert lrs.index(max(lrs)) == 9
    with pytest.raises(ValueError, match="total_steps"):  # torch's own check
        res.make_scheduler(sgd(), "onecycle")


def two_groups(head_lr=1e-3, backbone_lr=1e-4):
    head, backbone = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [head], "lr": head_lr},
                            {"params": [backbone], "lr": backbone_lr}], momentum=0.9)


@pytest.mark.parametrize("name,kwargs", [("onecycle", {"total_steps": 50}),
                                         ("cyclic", {"step_size_up": 10})])
def test_schedulers_keep_each_param_groups_lr_ratio(name, kwargs):
    res = falling_curve()
    optimizer = two_groups()
    scheduler = res.make_scheduler(optimizer, name, **kwargs)
    head_lrs, backbone_lrs = [], []
    for _ in range(30):
        head_lrs.append(optimizer.param_groups[0]["lr"])
        backbone_lrs.append(optimizer.param_groups[1]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(head_lrs) == pytest.approx(res.schedule(name).max_lr)  # the first group's bounds
    assert backbone_lrs == pytest.approx([0.1 * lr for lr in head_lrs])  # the 1e-4 / 1e-3 kept


def test_a_range_test_with_two_groups_hands_its_ratio_to_the_scheduler():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD([{"params": model[0].parameters(), "lr": 1e-4},
                                 {"params": model[2].parameters(), "lr": 1e-3}], momentum=0.9)
    x = torch.randn(256, 4)
    batches = [(x[i:i + 32], x[i:i + 32].sum(1, keepdim=True)) for i in range(0, 256, 32)]
    res = lrexp.range_test(model, batches, torch.nn.MSELoss(), optimizer, num_iter=60,
                           progress=False)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-4, 1e-3]  # restored
    scheduler = res.make_scheduler(optimizer, "onecycle", total_steps=20)
    first, second = (group["max_lr"] for group in optimizer.param_groups)
    assert second == pytest.approx(10 * first)
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)


# -- the run's record: summary.json, the console, MLflow ---------------------------------------
def test_summary_json_round_trips_the_bounds(tmp_path):
    res = falling_curve()
    summary = RunSummary.of_result(res, NAMES, 1.0, "cpu")
    assert summary.onecycle == res.schedule("onecycle")
    assert summary.cyclic == res.schedule("cyclic")
    back = RunSummary.read(summary.write(tmp_path / "summary.json"))
    assert back == summary
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["onecycle"] == res.schedule("onecycle").kwargs()
    assert stored["cyclic"] == res.schedule("cyclic").kwargs()


def test_the_bounds_are_summary_metrics():
    res = falling_curve()
    metrics = RunSummary.of_result(res, NAMES, 1.0, "cpu").metrics()
    onecycle, cyclic = res.schedule("onecycle"), res.schedule("cyclic")
    assert metrics["onecycle_max_lr"] == onecycle.max_lr
    assert metrics["onecycle_div_factor"] == onecycle.div_factor
    assert metrics["cyclic_base_lr"] == cyclic.base_lr
    assert metrics["cyclic_max_lr"] == cyclic.max_lr


def test_a_summary_without_bounds_records_none_and_says_so(tmp_path):
    summary = RunSummary.of_result(flat_curve(), NAMES, 1.0, "cpu")
    assert summary.onecycle is None and summary.cyclic is None
    assert not any(name.startswith(("onecycle", "cyclic")) for name in summary.metrics())
    assert RunSummary.read(summary.write(tmp_path / "summary.json")) == summary
    assert "training schedules: none" in summary_text(summary, {}, tmp_path)


def test_a_summary_json_from_before_the_bounds_still_reads():
    old = {"net": "mlp", "status": "completed", "steps": 3, "suggested_lr": 0.01,
           "interval": [0.001, 0.1], "suggestions": {"default": 0.01}}
    summary = RunSummary.from_dict(old)
    assert summary.onecycle is None and summary.cyclic is None
    assert summary.suggested_lr == 0.01


@pytest.mark.parametrize("value", ["fast", {"max_lr": 0.1}, {"max_lr": "0.1", "div_factor": 25},
                                   [0.1, 25]])
def test_a_malformed_bound_in_summary_json_is_refused_by_name(value):
    with pytest.raises(SummaryError) as raised:
        RunSummary.from_dict({"onecycle": value})
    assert raised.value.key == "onecycle" and "max_lr, div_factor" in raised.value.expected


@pytest.mark.parametrize("value", ["no", 0, [False]])
def test_a_momentum_in_summary_json_that_is_not_a_boolean_is_refused(value):
    with pytest.raises(SummaryError) as raised:
        RunSummary.from_dict({"momentum": value})
    assert raised.value.key == "momentum"
    assert RunSummary.from_dict({"momentum": False}).momentum is False


def test_the_console_summary_shows_both_schedules(tmp_path):
    res = falling_curve()
    text = summary_text(RunSummary.of_result(res, NAMES, 1.0, "cpu"), {}, tmp_path)
    onecycle, cyclic = res.schedule("onecycle"), res.schedule("cyclic")
    assert f"  OneCycleLR: max_lr={onecycle.max_lr:.3g}, div_factor=" \
           f"{onecycle.div_factor:.3g}" in text
    assert f"  CyclicLR: base_lr={cyclic.base_lr:.3g}, max_lr={cyclic.max_lr:.3g}" in text


def test_the_mlflow_run_carries_the_bounds(shared_sqlite_uri, experiment_name):
    summary = RunSummary.of_result(falling_curve(), NAMES, 1.0, "cpu")
    tracker = MlflowTracker(shared_sqlite_uri, experiment=experiment_name)
    tracker.start(summary.run_name, params={}, tags={})
    tracker.finish(status="FINISHED", summary=summary)
    metrics = MlflowClient(shared_sqlite_uri).get_run(tracker.run_id).data.metrics
    assert metrics["onecycle_max_lr"] == summary.onecycle.max_lr
    assert metrics["onecycle_div_factor"] == summary.onecycle.div_factor
    assert metrics["cyclic_base_lr"] == summary.cyclic.base_lr
    assert metrics["cyclic_max_lr"] == summary.cyclic.max_lr


def test_a_run_of_the_app_prints_and_records_the_bounds(tmp_path, caplog):
    cfg = compose_config("experiment=sine_mlp", "num_iter=60", out_dir=tmp_path)
    with caplog.at_level("INFO"):
        assert run_config(cfg) == 0
    stored = json.loads((tmp_path / "summary.json").read_text())
    curve = RangeTestResult.from_csv(tmp_path / "curve.csv")
    assert stored["onecycle"] == curve.schedule("onecycle").kwargs()
    assert stored["cyclic"] == curve.schedule("cyclic").kwargs()
    assert "OneCycleLR: max_lr=" in caplog.text and "CyclicLR: base_lr=" in caplog.text


# -- the range test's own schedule keeps its name in the files -------------------------------
def test_the_range_schedule_round_trips_under_its_file_name(tmp_path):
    lrs = np.linspace(1e-3, 1.0, 10)
    res = RangeTestResult(lrs, np.ones(10), np.ones(10), range_schedule="linear")
    path = res.to_csv(tmp_path / "curve.csv")
    assert '"schedule": "linear"' in path.read_text().splitlines()[0]
    assert RangeTestResult.from_csv(path).range_schedule == "linear"
    assert res.to_dict()["schedule"] == "linear"
    assert RangeTestResult.from_dict(res.to_dict()).range_schedule == "linear"
