import math

import numpy as np
import pytest
import torch
from helpers import bn_net, classification_batches
from PIL import Image
from torch import nn

import lrexp
from lrexp.engine.result import RangeTestResult


def _curve():
    lrs = np.geomspace(1e-6, 1, 60)
    losses = 2.3 - np.tanh(np.log10(lrs) + 3) + np.random.default_rng(0).normal(0, 0.05, 60)
    losses[-1] = math.nan
    from lrexp.engine.curve import smooth

    return RangeTestResult(lrs, losses, smooth(losses), stop_reason="non-finite",
                           min_lr=1e-6, max_lr=1.0, num_iter=60, extra={"net": "mlp"})


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_result_round_trips_exactly(tmp_path, fmt):
    result = _curve()
    path = tmp_path / f"curve.{fmt}"
    getattr(result, f"to_{fmt}")(path)
    back = getattr(RangeTestResult, f"from_{fmt}")(path)
    for name in ("lrs", "losses", "smoothed"):
        np.testing.assert_array_equal(getattr(back, name), getattr(result, name))
        assert getattr(back, name).tobytes() == getattr(result, name).tobytes()
    assert (back.stop_reason, back.min_lr, back.num_iter, back.extra) == \
        ("non-finite", 1e-6, 60, {"net": "mlp"})
    assert back.suggestions() == result.suggestions()


def test_summary_values_come_from_the_zero_lag_curve():
    result = _curve()
    best = int(np.nanargmin(result.zero_lag))
    assert result.min_loss == result.zero_lag[best]
    # the noiseless curve 2.3 - tanh(log10 lr + 3) is lowest at its last finite point (the
    # very last is NaN): the reading lands there, within its noise (0.05)
    truth = 2.3 - np.tanh(np.log10(result.lrs[-2]) + 3)
    assert result.min_loss == pytest.approx(truth, abs=0.05)
    assert abs(np.log10(result.lr_at_min_loss / result.lrs[-2])) <= 0.25
    assert result.lr_at_min_loss == result.lrs[best]
    assert result.diverged_lr == result.lrs[-1]


@pytest.mark.parametrize("suffix,magic", [(".png", "PNG"), (".jpg", "JPEG")])
def test_plot_writes_a_valid_image(tmp_path, suffix, magic):
    from lrexp.plotting import save_figure

    fig = lrexp.plot(_curve())
    path = save_figure(fig, tmp_path / f"plot{suffix}")
    with Image.open(path) as image:
        assert image.format == magic and image.size[0] > 300


def test_plot_draws_into_a_given_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert lrexp.plot(_curve(), ax=ax) is fig
    assert ax.get_xscale() == "log" and len(ax.lines) >= 2


def test_plot_shows_the_curve_the_rules_read_and_shades_the_supported_interval():
    result = _curve()
    fig = lrexp.plot(result)
    [ax] = fig.axes
    drawn = [line.get_ydata() for line in ax.lines if len(line.get_ydata()) == len(result)]
    assert any(np.array_equal(y, result.zero_lag, equal_nan=True) for y in drawn)
    low, high = result.suggest().interval
    [band] = [p for p in ax.patches if p.get_label().startswith("supported")]
    assert (band.get_x(), band.get_x() + band.get_width()) == pytest.approx((low, high))


def test_plot_adds_a_panel_with_the_verify_probes():
    from lrexp.engine.result import Probe, Verification

    result = _curve()
    result.verification = Verification(
        [Probe(1e-4, "minimum", 0.9, [2.3, 1.5, 0.9]), Probe(3e-4, "minimum x3", 0.7,
                                                          [2.3, 1.2, 0.7])], 1, 3, 0.1)
    fig = lrexp.plot(result)
    assert len(fig.axes) == 2
    probes_ax = fig.axes[1]
    assert [list(line.get_ydata()) for line in probes_ax.lines] == \
        [[2.3, 1.5, 0.9], [2.3, 1.2, 0.7]]
    assert probes_ax.lines[1].get_linewidth() > probes_ax.lines[0].get_linewidth()  # the chosen


def test_original_lr_finder_facade_runs_and_saves_headless(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    finder = lrexp.lr_finder(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                             num_iter=30, progress=False)
    with pytest.raises(RuntimeError, match="update"):
        finder.save()
    result = finder.update()
    assert len(result) == len(finder.lrs) > 5
    finder.save()  # the original default: result.jpg in the working directory
    with Image.open(tmp_path / "result.jpg") as image:
        assert image.format == "JPEG"
    finder.plotshow()  # Agg backend: must not raise


def test_original_findlr_scheduler_with_the_blog_loop():
    from lrexp.schedules import FindLR

    model = bn_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7, momentum=0.9)
    scheduler = FindLR(optimizer, max_lr=10, num_iter=100)
    seen = []
    for x, y in classification_batches(n=5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(seen, 1e-7 * (1e8) ** (np.arange(5) / 100), rtol=1e-12)


def _written_and_read(result, tmp_path, fmt):
    path = getattr(result, f"to_{fmt}")(tmp_path / f"curve.{fmt}")
    return getattr(RangeTestResult, f"from_{fmt}")(path)


def _read_as_if_written_before(result, tmp_path, field):
    """``result`` through a curve file whose settings line lacks ``field`` (an older file)."""
    import json

    path = result.to_csv(tmp_path / "curve.csv")
    head, rest = path.read_text().split("\n", 1)
    meta = json.loads(head[len("# lrexp "):])
    del meta[field]
    path.write_text("# lrexp " + json.dumps(meta) + "\n" + rest)
    return RangeTestResult.from_csv(path)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_pretrained_round_trips_and_keeps_the_fine_tuning_regime(tmp_path, fmt):
    result = _curve()
    result.pretrained = True
    back = _written_and_read(result, tmp_path, fmt)
    assert back.pretrained is True
    assert back.suggest().regime == "fine-tuning" and "fine-tuning" in back.suggest().reason
    assert back.suggestions() == result.suggestions()


def test_a_file_written_before_pretrained_existed_reads_as_from_scratch(tmp_path):
    back = _read_as_if_written_before(_curve(), tmp_path, "pretrained")
    assert back.pretrained is False and back.suggest().regime == "from scratch"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_an_optimizer_without_momentum_round_trips_with_its_suggestion(tmp_path, fmt):
    result = _curve()
    result.momentum = False
    back = _written_and_read(result, tmp_path, fmt)
    assert back.momentum is False and back.suggestions() == result.suggestions()
    assert back.suggest().lr != _curve().suggest().lr


def test_a_file_written_before_momentum_existed_reads_as_keeping_it(tmp_path):
    result = _curve()
    result.momentum = False
    assert _read_as_if_written_before(result, tmp_path, "momentum").momentum is True


def test_a_strict_read_gives_the_curve_and_its_repeats_as_written(tmp_path):
    repeated = RangeTestResult.of_repeats([_curve(), _curve()])
    path = repeated.to_csv(tmp_path / "curve.csv")
    back = RangeTestResult.from_csv(path, strict=True)
    np.testing.assert_array_equal(back.losses, repeated.losses)
    assert back.stop_reason == repeated.stop_reason and len(back.repeats) == 2
    np.testing.assert_array_equal(back.repeats[1].lrs, repeated.repeats[1].lrs)


def test_a_strict_read_keeps_what_the_suggestion_reads_of_the_tests_start(tmp_path):
    result = _curve()
    result.pretrained, result.momentum = False, False
    repeated = RangeTestResult.of_repeats([result, result])
    assert repeated.momentum is False  # the median keeps its repeats' start
    back = RangeTestResult.from_csv(repeated.to_csv(tmp_path / "curve.csv"), strict=True)
    assert back.momentum is False and back.suggestions() == repeated.suggestions()
    assert back.suggestion_spread() == repeated.suggestion_spread()
    assert back.suggestion_spread().median_lr == pytest.approx(
        result.suggest().lr)  # each repeat read without momentum, as the median is


def test_a_strict_read_refuses_a_bad_row_but_drops_a_last_row_cut_mid_write(tmp_path, caplog):
    from lrexp.engine.curve_file import CurveFileError

    path = _curve().to_csv(tmp_path / "curve.csv")
    text = path.read_text()
    path.write_text(text + "60,0.5")  # a crash cut the last row
    assert len(RangeTestResult.from_csv(path, strict=True)) == 60
    assert any("cut mid-write" in record.getMessage() for record in caplog.records)
    path.write_text(text.replace("\n1,", "\n1,-", 1))
    with pytest.raises(CurveFileError, match="line 4 is not a step"):
        RangeTestResult.from_csv(path, strict=True)
