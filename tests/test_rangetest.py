import logging
import math
import re
import signal
import sys

import numpy as np
import pytest
import torch
from helpers import Scalar, bn_net, classification_batches, noise_batches, quadratic_loss
from torch import nn

import lrexp
from lrexp.engine.curve import divergence_step
from lrexp.engine.settings import SettingError
from lrexp.run import stops


@pytest.mark.parametrize("a", [2.0, 20.0, 200.0])
@pytest.mark.parametrize("start", [0.0, 1.0])
def test_noisy_quadratic_stops_between_2_over_a_and_8_over_a(a, start):
    model = Scalar(start)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)  # no momentum: diverges at 2/a
    result = lrexp.range_test(model, noise_batches(), quadratic_loss(a), optimizer,
                              min_lr=1e-7, max_lr=10, num_iter=100, progress=False)
    assert result.stop_reason == "diverged"
    assert 2 / a <= result.diverged_lr <= 8 / a


def test_does_not_stop_on_noise_when_the_loss_is_flat():
    # lr stays far below 2/a: the loss is pure minibatch noise and must never count as diverging
    model = Scalar(0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    result = lrexp.range_test(model, noise_batches(n=200, size=8), quadratic_loss(2.0), optimizer,
                              min_lr=1e-7, max_lr=1e-3, num_iter=200, progress=False)
    assert result.stop_reason == "completed" and len(result) == 200


def _nan_at(k, base_loss):
    calls = {"n": 0}

    def loss(out, y):
        value = base_loss(out, y)
        calls["n"] += 1
        return value * math.nan if calls["n"] == k + 1 else value

    return loss


def test_nan_at_step_k_stops_there_and_is_recorded():
    model = bn_net()
    result = lrexp.range_test(model, classification_batches(), _nan_at(17, nn.CrossEntropyLoss()),
                              num_iter=50, progress=False)
    assert result.stop_reason == "non-finite"
    assert len(result) == 18 and math.isnan(result.losses[17]) and math.isnan(result.smoothed[17])
    assert np.isfinite(result.losses[:17]).all()
    assert result.diverged_lr == result.lrs[17]


def test_shifting_the_loss_does_not_move_the_stopping_step():
    def run(shift):
        torch.manual_seed(1)
        model = bn_net()
        ce = nn.CrossEntropyLoss()
        return lrexp.range_test(model, classification_batches(), lambda o, y: ce(o, y) + shift,
                                min_lr=1e-4, max_lr=100, num_iter=100, progress=False)

    plain, shifted = run(0.0), run(-100.0)
    assert plain.stop_reason == "diverged"
    assert shifted.stop_reason == plain.stop_reason and len(shifted) == len(plain)
    np.testing.assert_allclose(shifted.losses, plain.losses - 100, rtol=0, atol=1e-4)


def test_divergence_rule_is_shift_and_scale_invariant_on_arrays():
    rng = np.random.default_rng(0)
    steps = np.arange(120)
    curve = 2.3 - 1.5 / (1 + np.exp(-(steps - 40) / 8)) + np.exp((steps - 100) / 4)
    curve = curve + 0.05 * rng.standard_normal(len(steps))
    base = divergence_step(curve)
    assert base[1] == "diverged"
    for transformed in (curve - 100, curve + 1e3, 7 * curve, 0.01 * curve - 5):
        assert divergence_step(transformed) == base


def test_dict_batches_use_the_named_keys():
    batches = [{"pixels": x, "label": y} for x, y in classification_batches()]
    result = lrexp.range_test(bn_net(), batches, nn.CrossEntropyLoss(), num_iter=10,
                              batch_keys=("pixels", "label"), progress=False)
    assert len(result) == 10
    with pytest.raises(ValueError, match="batch_keys"):
        lrexp.range_test(bn_net(), batches, nn.CrossEntropyLoss(), num_iter=10, progress=False)


def test_loader_is_reiterated_past_one_epoch():
    batches = classification_batches(n=3)
    result = lrexp.range_test(bn_net(), batches, nn.CrossEntropyLoss(), num_iter=20,
                              max_lr=1e-2, progress=False)
    assert len(result) == 20


def _linear_model_after(batches, accumulation_steps):
    torch.manual_seed(3)
    model = nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    lrexp.range_test(model, batches, nn.MSELoss(), optimizer, min_lr=1e-2, max_lr=1e-1,
                     num_iter=2, accumulation_steps=accumulation_steps, restore=False,
                     diverge_th=math.inf, progress=False)
    return torch.cat([model.weight.detach().ravel(), model.bias.detach()])


def test_accumulating_4_batches_gives_the_gradient_of_one_4x_batch():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2 * 4 * 8, 5, generator=gen), torch.randn(2 * 4 * 8, 1, generator=gen)
    small = [(x[i:i + 8], y[i:i + 8]) for i in range(0, len(x), 8)]
    big = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
    accumulated = _linear_model_after(small, accumulation_steps=4)
    whole = _linear_model_after(big, accumulation_steps=1)
    moved = _linear_model_after(big[:1], accumulation_steps=1)
    torch.testing.assert_close(accumulated, whole, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(whole, moved)  # the second step really used the second batch


def test_steps_per_lr_epoch_trains_one_pass_per_lr_and_records_its_mean():
    seen_per_lr = []

    def loss(out, y):
        seen_per_lr.append(1)
        return nn.functional.cross_entropy(out, y)

    batches = classification_batches(n=5)
    result = lrexp.range_test(bn_net(), batches, loss, schedule="linear", min_lr=1e-3,
                              max_lr=1e-1, num_iter=4, steps_per_lr="epoch",
                              diverge_th=math.inf, progress=False)
    assert len(result) == 4 and len(seen_per_lr) == 4 * 5


def test_val_loader_records_the_validation_loss():
    model = bn_net()
    val = classification_batches(n=2, seed=9)
    seen = []
    result = lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(),
                              num_iter=5, max_lr=1e-3, val_loader=val, progress=False,
                              on_step=lambda step, lr, loss: seen.append((step, lr, loss)))
    assert result.loss_kind == "val"
    assert [s for s, _, _ in seen] == list(range(5))
    np.testing.assert_array_equal([loss for _, _, loss in seen], result.losses)
    # at min_lr the model barely moves, so the first point is close to the untrained val loss
    with torch.no_grad():
        model.eval()
        untrained = np.mean([nn.functional.cross_entropy(model(x), y).item() for x, y in val])
    assert result.losses[0] == pytest.approx(untrained, rel=1e-3)


def test_ctrl_c_returns_the_partial_curve_and_restores_state(caplog):
    model = bn_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def interrupt_at_10(step, lr, loss):
        if step == 10:
            raise KeyboardInterrupt

    result = lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(),
                              num_iter=50, on_step=interrupt_at_10, progress=False)
    assert result.stop_reason == "interrupted" and len(result) == 11
    assert f"interrupted after {len(result)} points" in caplog.text  # the rows the curve holds
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_the_interruption_warning_starts_its_own_line_after_the_progress_bar(capsys):
    # the bar is tqdm's, drawn on stderr; a warning written while it is up lands on its line
    handler = logging.StreamHandler(sys.stderr)  # now capsys's stderr, like a console's
    logging.getLogger("lrexp").addHandler(handler)

    def interrupt_at_10(step, lr, loss):
        if step == 10:
            raise KeyboardInterrupt

    try:
        lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                         num_iter=50, on_step=interrupt_at_10, progress=True)
    finally:
        logging.getLogger("lrexp").removeHandler(handler)
    err = capsys.readouterr().err
    assert "LR range test" in err  # the bar was drawn
    before = err.split("Range test interrupted")[0]
    assert before.endswith(("\r", "\n")), repr(before[-80:])


def test_ctrl_c_mid_step_counts_the_points_the_curve_holds(caplog):
    # Ctrl-C lands in the middle of training a step, while the step before is trained but its
    # loss not yet read: that point is kept, and the message counts it
    calls = []

    def loss_interrupted_on_call_12(outputs, targets):
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        return nn.functional.cross_entropy(outputs, targets)

    result = lrexp.range_test(bn_net(), classification_batches(), loss_interrupted_on_call_12,
                              num_iter=50, progress=False)
    assert result.stop_reason == "interrupted" and len(result) == 11
    assert f"interrupted after {len(result)} points" in caplog.text


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_a_stop_that_comes_while_a_point_is_recorded_waits_until_every_record_has_it(signum):
    # on_step keeps two records, as the app does (curve.csv, then the tracker), and the signal
    # comes between them (raise_signal runs its handler before it returns): without the hold
    # the second record ended one point short of the result (MLflow short of curve.csv)
    first, second = [], []

    def on_step(step, lr, loss):
        first.append(step)
        if step == 10:
            signal.raise_signal(signum)
        second.append(step)

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with stops.sigterm_as_interrupt() as record:
        result = lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                                  num_iter=50, on_step=on_step, progress=False)
    assert result.stop_reason == "interrupted"
    assert len(result) == len(first) == len(second) == 11
    assert record.terminated == (signum == signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handed back


def test_verify_after_an_interrupted_test_is_skipped_and_says_so(caplog):
    def interrupt_at_10(step, lr, loss):
        if step == 10:
            raise KeyboardInterrupt

    result = lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                              num_iter=50, on_step=interrupt_at_10, verify=True, progress=False)
    assert result.stop_reason == "interrupted" and result.verification is None
    assert "Verify skipped: the range test was interrupted." in caplog.text


def test_a_second_ctrl_c_while_a_point_is_recorded_interrupts_at_once():
    # a record that hangs (a store that does not answer) must not make Ctrl-C useless
    waited = []

    def on_step(step, lr, loss):
        if step == 10:
            signal.raise_signal(signal.SIGINT)
            waited.append(step)  # the first one waits for this point's records
            signal.raise_signal(signal.SIGINT)
            pytest.fail("the second Ctrl-C did not interrupt")

    result = lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                              num_iter=50, on_step=on_step, progress=False)
    assert result.stop_reason == "interrupted" and waited == [10] and len(result) == 11


def test_a_stop_held_while_on_step_fails_still_stops_the_test():
    # the signal came first: the run ends as stopped (KILLED, exit 143), not as a failure
    def on_step(step, lr, loss):
        if step == 10:
            signal.raise_signal(signal.SIGTERM)
            raise OSError("the tracking store went away")

    with stops.sigterm_as_interrupt() as record:
        result = lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                                  num_iter=50, on_step=on_step, progress=False)
    assert result.stop_reason == "interrupted" and len(result) == 11 and record.terminated


def test_a_ctrl_c_while_the_last_point_of_a_one_shot_loader_is_recorded_keeps_the_curve():
    # the loader runs out after 20 batches; the point still queued is recorded afterwards,
    # and a Ctrl-C then is held like any other, not raised out of range_test
    seen = []

    def on_step(step, lr, loss):
        if step == 19:
            signal.raise_signal(signal.SIGINT)
        seen.append(step)

    batches = iter(classification_batches(n=20))
    result = lrexp.range_test(bn_net(), batches, nn.CrossEntropyLoss(), num_iter=50,
                              on_step=on_step, progress=False)
    assert result.stop_reason == "interrupted" and len(result) == len(seen) == 20


def test_bad_arguments_say_what_is_wrong():
    # every setting's rule is tested in test_settings.py; these go through range_test
    with pytest.raises(SettingError, match="beta=1.0"):
        lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(), beta=1.0)
    with pytest.raises(SettingError, match="steps_per_lr=0"):
        lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                         steps_per_lr=0)
    with pytest.raises(ValueError, match="no batches"):
        lrexp.range_test(bn_net(), [], nn.CrossEntropyLoss(), progress=False)
    with pytest.raises(SettingError, match="batch_keys"):
        lrexp.range_test(bn_net(), [{"x": torch.zeros(16, 10), "y": torch.zeros(16)}],
                         nn.CrossEntropyLoss(), progress=False)
    groups = [{"params": [p]} for p in bn_net().parameters()]
    with pytest.raises(SettingError, match="first group's LR must be > 0; it is 0.0"):
        lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                         torch.optim.SGD(groups, lr=0.0), progress=False)


def test_pure_noise_curves_never_count_as_diverging():
    rng = np.random.default_rng(0)
    stops = [divergence_step(2.3 + 0.1 * rng.standard_normal(300))[0] for _ in range(300)]
    assert stops == [None] * 300


def test_an_explosion_is_caught_within_a_few_steps_of_turning_up():
    rng = np.random.default_rng(1)
    for _ in range(50):
        curve = 2.3 + 0.1 * rng.standard_normal(100)
        curve[70:] += 0.5 * 1.5 ** np.arange(30)  # the loss turns up at step 70
        step, reason = divergence_step(curve)
        assert reason == "diverged" and 70 <= step <= 80


def test_a_one_shot_iterator_that_runs_out_keeps_its_partial_curve():
    model = bn_net()
    batches = iter(classification_batches(n=8))
    res = lrexp.range_test(model, batches, nn.CrossEntropyLoss(), num_iter=30, progress=False)
    assert res.stop_reason == "exhausted" and len(res) == 8


def test_non_finite_lr_bounds_are_refused():
    with pytest.raises(SettingError, match="max_lr=inf"):
        lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                         max_lr=float("inf"), progress=False)


def test_pretrained_reaches_the_result_and_its_suggestion_says_fine_tuning():
    model = Scalar(1.0)
    result = lrexp.range_test(model, noise_batches(), quadratic_loss(2.0),
                              torch.optim.SGD(model.parameters(), lr=1e-7), min_lr=1e-7,
                              max_lr=10, num_iter=100, progress=False, pretrained=True)
    assert result.pretrained is True
    suggestion = result.suggest()
    assert suggestion.regime == "fine-tuning" and "fine-tuning" in suggestion.reason
    with pytest.raises(SettingError, match="pretrained"):
        lrexp.range_test(model, noise_batches(), quadratic_loss(2.0), progress=False,
                         pretrained="yes")


@pytest.mark.parametrize("make, keeps", [
    (lambda p: torch.optim.SGD(p, lr=0.1), False),
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), True),
    (lambda p: torch.optim.RMSprop(p), False),
    (lambda p: torch.optim.RMSprop(p, momentum=0.5), True),
    (lambda p: torch.optim.Adam(p), True),
    (lambda p: torch.optim.AdamW(p, betas=(0.0, 0.99)), False),
    (lambda p: torch.optim.Adagrad(p), True),  # declares neither: the rule for most optimizers
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=torch.tensor(0.0)), False),
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=torch.tensor(0.9)), True),
    (lambda p: torch.optim.SGD([{"params": p[:1]}, {"params": p[1:], "momentum": 0.9}],
                               lr=0.1), True),
])
def test_keeps_momentum_reads_the_optimizers_own_settings(make, keeps):
    from lrexp.engine.rangetest import keeps_momentum

    params = [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))]
    assert keeps_momentum(make(params)) is keeps
    model = Scalar(1.0)
    result = lrexp.range_test(model, noise_batches(), quadratic_loss(2.0),
                              make(list(model.parameters())), num_iter=20, progress=False)
    assert result.momentum is keeps


class _PlainStepWithPlaceholderBetas(torch.optim.Optimizer):
    """Plain gradient steps; its groups hold betas=None, as some wrappers' placeholders do."""

    def __init__(self, params, lr=1e-3):
        super().__init__(params, {"lr": lr, "betas": None})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.add_(param.grad, alpha=-group["lr"])


def test_a_momentum_it_cannot_read_counts_as_kept_and_loses_no_curve():
    model = Scalar(1.0)
    result = lrexp.range_test(model, noise_batches(), quadratic_loss(2.0),
                              _PlainStepWithPlaceholderBetas(model.parameters()), num_iter=20,
                              progress=False)
    assert len(result) == 20 and result.momentum is True


def test_plain_sgd_gets_the_default_for_an_optimizer_without_momentum():
    from lrexp.engine.suggest import suggest

    model = Scalar(1.0)
    result = lrexp.range_test(model, noise_batches(), quadratic_loss(2.0),
                              torch.optim.SGD(model.parameters(), lr=1e-7), min_lr=1e-7,
                              max_lr=10, num_iter=100, progress=False)
    assert result.momentum is False
    assert result.suggest().lr == suggest(result.lrs, result.losses, momentum=False).lr
    assert result.suggest().lr != suggest(result.lrs, result.losses).lr


# -- what the API refuses before it trains ----------------------------------------------------
@pytest.mark.parametrize("loss_fn,needle", [
    (nn.CrossEntropyLoss(reduction="none"), "returned [16], not a scalar"),
    (lambda out, y: float(nn.functional.cross_entropy(out, y)), "returned float, not a scalar"),
    (lambda out, y: torch.tensor(3), "torch.int64 tensor) is not attached"),
    (lambda out, y: nn.functional.cross_entropy(out, y).detach(), "not attached"),
], ids=["reduction-none", "python-float", "int-tensor", "detached"])
def test_a_loss_that_cannot_train_is_named_and_the_weights_kept(loss_fn, needle):
    model = bn_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SettingError, match=re.escape(needle)):
        lrexp.range_test(model, classification_batches(), loss_fn, num_iter=10, progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_a_model_with_every_parameter_frozen_is_refused_before_training():
    model = bn_net().requires_grad_(False)
    with pytest.raises(SettingError, match="Every parameter of the model .Sequential. is frozen"):
        lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(), num_iter=10,
                         progress=False)
    model[0].requires_grad_(True)  # one trainable layer is enough
    assert len(lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(),
                                num_iter=10, progress=False)) == 10


def test_the_meta_device_is_refused_and_the_weights_stay_where_they_were():
    model = bn_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SettingError, match="device='meta'"):
        lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(), device="meta",
                         num_iter=10, progress=False)
    for key, value in model.state_dict().items():
        assert value.device.type == "cpu" and torch.equal(value, before[key])


@pytest.mark.parametrize("one_shot", [lambda batches: iter(batches),
                                      lambda batches: (batch for batch in batches)],
                         ids=["iter", "generator"])
def test_repeats_refuse_a_one_shot_iterator_that_would_run_one_repeat(one_shot):
    with pytest.raises(SettingError, match="repeats=3 needs a train_loader"):
        lrexp.range_test(bn_net(), one_shot(classification_batches()), nn.CrossEntropyLoss(),
                         num_iter=10, repeats=3, progress=False)
    # the same batches as a list: every repeat gets a whole curve
    result = lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                              num_iter=10, repeats=3, progress=False)
    assert [len(curve) for curve in result.repeats] == [10, 10, 10]
