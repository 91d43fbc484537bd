import numpy as np
import pytest
import torch

from lrexp.engine.schedules import (
    SCHEDULES,
    FindLR,
    exp_schedule,
    linear_schedule,
    make_schedule,
)
from lrexp.engine.settings import Schedule, SettingError


def _three_group_optimizer(base_lrs=(1e-3, 1e-4, 5e-6)):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)]
    return torch.optim.SGD(groups, lr=1.0)


def test_findlr_follows_its_formula_in_every_param_group():
    optimizer = _three_group_optimizer()
    bases = [g["lr"] for g in optimizer.param_groups]
    scheduler = FindLR(optimizer, max_lr=10, num_iter=100)
    for it in range(100):
        expected = [b * (10 / b) ** (it / 100) for b in bases]
        np.testing.assert_allclose([g["lr"] for g in optimizer.param_groups], expected, rtol=1e-12)
        optimizer.step()
        scheduler.step()


def test_exp_and_linear_schedules_equal_their_formulas():
    i = np.arange(100)
    np.testing.assert_allclose(exp_schedule(1e-7, 10, 100), 1e-7 * (10 / 1e-7) ** (i / 100),
                               rtol=1e-12)
    np.testing.assert_allclose(linear_schedule(0.01, 1.0, 100), 0.01 + 0.99 * i / 100, rtol=1e-12)


@pytest.mark.parametrize("schedule", ["exp", "linear"])
def test_engine_keeps_param_group_ratios_on_the_schedule(schedule):
    import lrexp

    optimizer = _three_group_optimizer()
    ratios = [g["lr"] / 1e-3 for g in optimizer.param_groups]
    params = [g["params"][0] for g in optimizer.param_groups]

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.params = torch.nn.ParameterList(params)

        def forward(self, x):
            return x

    model = Holder()
    seen = []

    def loss_recording_lrs(out, y):  # called once per step, with that step's LRs in place
        seen.append([g["lr"] for g in optimizer.param_groups])
        return sum(p.sum() ** 2 for p in params)

    lrexp.range_test(model, [(torch.zeros(1), torch.zeros(1))], loss_recording_lrs, optimizer,
                     min_lr=1e-4, max_lr=1.0, num_iter=30, schedule=schedule,
                     diverge_th=float("inf"), progress=False)
    expected = make_schedule(schedule, 1e-4, 1.0, 30)
    np.testing.assert_allclose(np.array(seen), expected[:, None] * np.array(ratios)[None, :],
                               rtol=1e-12)
    # and the optimizer's own LRs are back afterwards
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-4, 5e-6]


def test_bad_ranges_are_refused_with_the_values():
    with pytest.raises(SettingError, match="min_lr=1.*max_lr=0.1"):
        make_schedule("exp", 1, 0.1, 10)
    with pytest.raises(SettingError, match="'cosine'"):
        make_schedule("cosine", 1e-3, 1, 10)
    with pytest.raises(SettingError, match="num_iter=1"):
        make_schedule("exp", 1e-3, 1, 1)
    with pytest.raises(SettingError, match="num_iter=0"):
        FindLR(_three_group_optimizer(), num_iter=0)


def test_every_schedule_name_has_a_schedule():
    assert set(SCHEDULES) == set(Schedule)
    for name in ("exp", "linear"):  # plain strings find them too
        assert len(make_schedule(name, 1e-3, 1.0, 7)) == 7
