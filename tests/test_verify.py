"""The verify probe on problems with known answers: SGD on a quadratic 0.5·a·|w - w*|²
contracts the error by |1 - a·lr| per step, so after the same number of steps the candidate
with the smallest |1 - a·lr| has the lowest loss, and lr > 2/a diverges."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import lrexp
from lrexp.engine.result import RangeTestResult
from lrexp.engine.verify import MERGE_FACTOR, candidate_lrs

CURVATURE = 4.0  # a: the best constant LR is 1/a = 0.25; above 2/a = 0.5 SGD diverges


class Point(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1.0, 1.0, dim))

    def forward(self, x):
        return self.w + 0 * x.sum()


def quadratic_loss(outputs, targets):
    return 0.5 * CURVATURE * ((outputs - targets) ** 2).sum()


def _batches(n=20, dim=8):
    return [(torch.zeros(1), torch.full((dim,), 0.5))] * n


def _state(model, optimizer):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            repr(optimizer.state_dict()))


def test_verify_keeps_the_default_that_contracts_fastest_and_restores_bitwise():
    torch.manual_seed(0)
    model = Point()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    before = _state(model, optimizer)
    rng_before = torch.get_rng_state()
    res = lrexp.range_test(model, _batches(40), quadratic_loss, optimizer, min_lr=1e-2,
                           max_lr=10, num_iter=30, progress=False, verify=True, verify_steps=12)
    verification = res.verification
    assert verification is not None and len(verification.probes) == 2
    # the candidates: the default and a third of it, both below the stability limit 2/a
    default = res.suggest(method="default").lr
    assert [probe.lr for probe in verification.probes] == pytest.approx([default / 3, default])
    contraction = [abs(1 - CURVATURE * probe.lr) for probe in verification.probes]
    assert int(np.argmin([probe.loss for probe in verification.probes])) == int(
        np.argmin(contraction))
    assert verification.chosen == int(np.argmin(contraction)) == 1  # the default stands
    assert res.suggest().method == "verified"
    assert f"the default LR {default:.3g} stands" in res.suggest().reason
    assert res.suggest().lr == verification.probes[verification.chosen].lr
    # every probe started from the initial weights: its first loss is the initial loss
    initial = quadratic_loss(before[0]["w"], torch.full((8,), 0.5)).item()
    for probe in verification.probes:
        assert probe.losses[0] == pytest.approx(initial, rel=1e-6)
        assert len(probe.losses) == 12 or not math.isfinite(probe.loss)
        if probe.lr > 2 / CURVATURE:  # past the stability limit the loss grows
            assert probe.loss > initial
    after = _state(model, optimizer)
    assert torch.equal(after[0]["w"], before[0]["w"]) and after[1] == before[1]
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_verify_measures_the_validation_loss_when_given_a_val_loader():
    model = Point()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    res = lrexp.range_test(model, _batches(), quadratic_loss, optimizer, min_lr=1e-4, max_lr=10,
                           num_iter=60, progress=False, verify=True, verify_steps=5,
                           val_loader=_batches(2))
    verification = res.verification
    assert verification.loss_kind == "val"
    # the validation loss after k steps at lr is (1 - a·lr)^(2k) times the initial loss
    initial = 0.5 * CURVATURE * float(((torch.linspace(-1, 1, 8) - 0.5) ** 2).sum())
    for probe in verification.probes:
        expected = initial * (1 - CURVATURE * probe.lr) ** 10
        assert probe.loss == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_candidates_stay_below_the_blowup_and_are_merged():
    torch.manual_seed(0)
    res = lrexp.range_test(Point(), _batches(), quadratic_loss, min_lr=1e-4, max_lr=10,
                           num_iter=60, progress=False)
    candidates = candidate_lrs(res)
    lrs = [lr for lr, _ in candidates]
    assert lrs == sorted(lrs) and len(lrs) >= 2
    assert res.blowup_lr is not None and all(lr < res.blowup_lr for lr in lrs)
    assert all(b >= a * MERGE_FACTOR for a, b in zip(lrs, lrs[1:]))
    default = res.suggest("default").lr
    assert any(abs(math.log(lr / default)) < math.log(MERGE_FACTOR) for lr in lrs)


def test_the_candidates_surround_the_default_the_optimizer_gets():
    """Without momentum the default is higher, and so is every candidate around it."""
    from lrexp.engine.suggest import NO_MOMENTUM_FACTOR, suggest

    torch.manual_seed(0)
    res = lrexp.range_test(Point(), _batches(), quadratic_loss, min_lr=1e-4, max_lr=10,
                           num_iter=60, progress=False)
    kept = [lr for lr, _ in candidate_lrs(res)]
    res.momentum = False
    plain = [lr for lr, _ in candidate_lrs(res)]
    raised = suggest(res.lrs, res.losses, momentum=False).lr
    assert raised == pytest.approx(NO_MOMENTUM_FACTOR * suggest(res.lrs, res.losses).lr)
    assert any(lr == pytest.approx(raised) for lr in plain)
    assert plain != kept and max(plain) > max(kept)


def test_a_curve_that_supports_no_lr_is_not_probed():
    batches = [(torch.zeros(1), torch.zeros(1))] * 5
    model = nn.Linear(1, 1)
    # 4 points: too few to read a descent and a turn (MIN_POINTS)
    res = lrexp.range_test(model, batches, nn.MSELoss(), num_iter=4, progress=False,
                           verify=True)
    assert res.verification is None
    assert res.suggest().lr is None and res.suggest().confidence == "none"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_verify_results_round_trip(tmp_path, fmt):
    res = lrexp.range_test(Point(), _batches(), quadratic_loss, min_lr=1e-4, max_lr=10,
                           num_iter=40, progress=False, verify=True, verify_steps=6)
    path = getattr(res, f"to_{fmt}")(tmp_path / f"curve.{fmt}")
    back = getattr(RangeTestResult, f"from_{fmt}")(path)
    assert back.verification == res.verification  # diverged probes keep their inf losses
    assert back.suggest() == res.suggest()


def test_ctrl_c_during_verify_keeps_the_curve_and_the_finished_probes():
    model = Point()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    before = _state(model, optimizer)
    calls = {"n": 0}

    def interrupting_loss(outputs, targets):
        calls["n"] += 1
        # the 60-point curve, one probe of 4 steps judged on the 4 held-out batches (every
        # 5th of 20), then Ctrl-C in the second probe
        if calls["n"] == 60 + 4 + 4 + 3:
            raise KeyboardInterrupt
        return quadratic_loss(outputs, targets)

    res = lrexp.range_test(model, _batches(), interrupting_loss, optimizer, min_lr=1e-4,
                           max_lr=1, num_iter=60, progress=False, verify=True, verify_steps=4,
                           diverge_th=math.inf)
    assert res.stop_reason == "interrupted" and len(res) == 60
    assert len(res.verification.probes) == 1
    after = _state(model, optimizer)
    assert torch.equal(after[0]["w"], before[0]["w"]) and after[1] == before[1]


def test_every_probe_starts_from_the_initial_adam_state_and_all_is_restored_bitwise():
    torch.manual_seed(0)
    model = Point()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):  # a used optimizer: its moments must come back exactly
        optimizer.zero_grad()
        quadratic_loss(model(torch.zeros(1)), torch.full((8,), 0.5)).backward()
        optimizer.step()
    weights = model.w.detach().clone()
    moments = {k: v.clone() for k, v in optimizer.state[model.w].items()}
    initial = quadratic_loss(weights, torch.full((8,), 0.5)).item()
    res = lrexp.range_test(model, _batches(40), quadratic_loss, optimizer, min_lr=1e-4,
                           max_lr=10, num_iter=40, progress=False, verify=True, verify_steps=6)
    assert len(res.verification.probes) >= 2
    for probe in res.verification.probes:  # each probe began at the initial weights
        assert probe.losses[0] == pytest.approx(initial, rel=1e-6)
    assert torch.equal(model.w, weights)
    for key, value in optimizer.state[model.w].items():
        assert torch.equal(value, moments[key]), key


def test_asking_for_verified_without_verify_says_why():
    res = lrexp.range_test(Point(), _batches(), quadratic_loss, min_lr=1e-4, max_lr=10,
                           num_iter=30, progress=False)
    s = res.suggest("verified")
    assert s.lr is None and "verify=True" in s.reason
    assert res.suggest().method.startswith("default")


def _regression(n, dim, seed, w):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator)
    return x, x @ w + torch.randn(n, 1, generator=generator)  # noise as large as the signal


def _fresh_linear(dim):
    model = nn.Linear(dim, 1, bias=False)
    nn.init.zeros_(model.weight)
    return model


def test_the_probe_picks_the_lr_that_trains_best_over_a_whole_run_not_the_fastest_fall():
    """50 noisy examples, 40 features: a high LR fits the noise fast, so its training loss
    falls lowest within the probe, while over a whole training (400 steps, scored on 5000
    fresh examples: the known long-run answer) the lowest candidate LR is best. The old judge
    (mean training loss of the probe's last third) picks the highest LR; the held-out judge
    the one that is best in the long run."""
    dim = 40
    w = torch.randn(dim, 1, generator=torch.Generator().manual_seed(9)) / math.sqrt(dim)
    x, y = _regression(50, dim, 1, w)
    test_x, test_y = _regression(5000, dim, 2, w)
    batches = [(x[i:i + 5], y[i:i + 5]) for i in range(0, 50, 5)]

    def long_run_loss(lr, steps=400):
        model = _fresh_linear(dim)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        for step in range(steps):
            inputs, targets = batches[step % len(batches)]
            optimizer.zero_grad()
            nn.functional.mse_loss(model(inputs), targets).backward()
            optimizer.step()
        with torch.no_grad():
            return nn.functional.mse_loss(model(test_x), test_y).item()

    model = _fresh_linear(dim)
    res = lrexp.range_test(model, batches, nn.functional.mse_loss,
                           torch.optim.SGD(model.parameters(), lr=1e-3), min_lr=1e-4,
                           max_lr=10, num_iter=60, progress=False, verify=True,
                           verify_steps=40)
    verification = res.verification
    assert verification.loss_kind == "holdout" and len(verification.probes) >= 2
    long_run = [long_run_loss(probe.lr) for probe in verification.probes]
    training_tail = [np.mean(probe.losses[-(40 // 3):]) for probe in verification.probes]
    old_choice = int(np.argmin(training_tail))
    assert verification.chosen == int(np.argmin(long_run))
    assert long_run[old_choice] > long_run[verification.chosen]  # the bias was there to remove


def test_the_default_stands_unless_a_lower_lr_beats_it_clearly():
    from lrexp.engine.result import Probe
    from lrexp.engine.verify import DEFAULT_SOURCE, DEFAULT_UNLESS_BEATEN_BY, choose

    def probes(lower_loss, default_loss=1.0):
        return [Probe(0.01, "default x0.333", lower_loss), Probe(0.03, DEFAULT_SOURCE,
                                                                    default_loss)]

    margin = DEFAULT_UNLESS_BEATEN_BY
    assert choose(probes(1.0 - margin / 2)) == 1  # a small lead is noise: the default stands
    assert choose(probes(1.0 - 2 * margin)) == 0  # a clear lead moves the answer down
    assert choose(probes(1.0, default_loss=math.inf)) == 0  # the default diverged
    assert choose(probes(math.inf, default_loss=math.inf)) is None
    # a default merged with a near candidate still counts as the default
    merged = [Probe(0.01, "default x0.5", 1.0), Probe(0.03, f"default x0.9, {DEFAULT_SOURCE}",
                                                      1.0 + margin / 2)]
    assert choose(merged) == 1


def test_a_pretrained_result_probes_around_the_fine_tuning_default():
    torch.manual_seed(0)
    res = lrexp.range_test(Point(), _batches(), quadratic_loss, min_lr=1e-4, max_lr=10,
                           num_iter=60, progress=False, pretrained=True)
    default = res.suggest().lr
    assert res.suggest().method == "default (finetune)"
    assert any(abs(math.log(lr / default)) < 1e-9 for lr, _ in candidate_lrs(res))


def test_no_candidate_lies_below_the_tested_range():
    """A short curve from 1e-3 whose default (its minimum's LR / 10: too few points for a
    valley) sits just above its first LR: a third of it would be an LR the test never saw, so
    only the default is probed."""
    lrs = np.geomspace(1e-3, 10, 12)
    losses = np.array([2.0, 1.5, 1.0, 0.5, 0.6, 0.9, 1.5, 3, 6, 12, 50, 200])
    result = RangeTestResult(lrs, losses, losses)
    default = result.suggest().lr
    assert default / 3 < lrs[0] <= default
    assert [lr for lr, _ in candidate_lrs(result)] == pytest.approx([default])


def test_fine_tuning_takes_the_lower_lr_of_a_near_tie():
    """Fine-tuning's rule: the lowest LR whose held-out loss is within FINE_TUNING_WITHIN of the
    best, where the from-scratch rule keeps the default unless clearly beaten."""
    from lrexp.engine.result import Probe, Verification, _probes_outcome
    from lrexp.engine.verify import DEFAULT_SOURCE, FINE_TUNING_WITHIN, choose

    def probes(lower_loss, default_loss=1.0):
        return [Probe(0.01, "default x0.333", lower_loss), Probe(0.03, DEFAULT_SOURCE,
                                                                    default_loss)]

    near_tie = probes(1.0 + FINE_TUNING_WITHIN / 2)  # the lower LR is a hair worse
    assert choose(near_tie, pretrained=True) == 0
    assert choose(near_tie) == 1
    assert choose(probes(1.0 + 2 * FINE_TUNING_WITHIN), pretrained=True) == 1  # clearly worse
    assert choose(probes(0.99), pretrained=True) == 0  # a small lead suffices: no margin to beat
    assert choose(probes(0.99)) == 1
    assert choose(probes(math.inf), pretrained=True) == 1
    assert choose(probes(math.inf, math.inf), pretrained=True) is None
    # the outcome in words says it was a near tie, not a clear win
    said = _probes_outcome(Verification(near_tie, 0, 30, 1.0, "holdout"), near_tie[0])
    assert "about as well" in said and "clearly" not in said


def test_a_pretrained_range_test_chooses_by_the_fine_tuning_rule():
    """range_test(pretrained=True, verify=True) picks by the fine-tuning rule: on this noisy
    quadratic the lower LR's held-out loss beats the default's by less than the from-scratch
    margin, so the two rules part, and the recorded choice is the fine-tuning one's."""
    from lrexp.engine.verify import choose

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.zeros(1), 0.5 + 0.3 * torch.randn(8, generator=generator))
               for _ in range(100)]
    torch.manual_seed(0)
    res = lrexp.range_test(Point(), batches, quadratic_loss, min_lr=1e-4, max_lr=10,
                           num_iter=60, progress=False, verify=True, verify_steps=80,
                           pretrained=True)
    probes = res.verification.probes
    assert choose(probes, pretrained=True) != choose(probes, pretrained=False)
    assert res.verification.chosen == choose(probes, pretrained=True) == 0
    assert probes[1].at_default and res.suggest().lr == probes[0].lr < probes[1].lr
