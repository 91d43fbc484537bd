"""The range test's settings: one place for their defaults, one for their rules, one error."""

import dataclasses
import inspect
import math

import numpy as np
import pytest
import torch
from helpers import classification_batches
from torch import nn

import lrexp
from lrexp.engine.curve import divergence_step, smooth
from lrexp.engine.settings import DEFAULTS, Amp, RangeTestSettings, Schedule, SettingError

# (setting, bad value): each rule of RangeTestSettings broken once or more
BAD_VALUES = [
    ("min_lr", 0.0), ("min_lr", -1e-3), ("min_lr", math.inf), ("min_lr", math.nan),
    ("min_lr", "1e-3"), ("min_lr", True),
    ("max_lr", 0.0), ("max_lr", math.inf), ("max_lr", math.nan), ("max_lr", None),
    ("num_iter", 1), ("num_iter", 0), ("num_iter", 2.5), ("num_iter", True),
    ("schedule", "cosine"), ("schedule", None),
    ("steps_per_lr", 0), ("steps_per_lr", 1.5), ("steps_per_lr", "epochs"),
    ("beta", 1.0), ("beta", -0.1), ("beta", math.nan), ("beta", "0.9"),
    ("diverge_th", 1.0), ("diverge_th", 0.5), ("diverge_th", math.nan),
    ("amp", "fp8"), ("amp", "float16"),
    ("accumulation_steps", 0), ("accumulation_steps", 2.0),
    ("verify_steps", 0), ("verify_steps", -5),
    ("repeats", 0), ("repeats", 2.5), ("repeats", True),
]


@pytest.mark.parametrize("name,value", BAD_VALUES)
def test_a_bad_value_is_refused_with_its_name_and_value(name, value):
    with pytest.raises(SettingError) as raised:
        RangeTestSettings(**{name: value})
    message = str(raised.value)
    assert f"{name}={value!r}" in message
    assert "\n" not in message  # one paragraph


@pytest.mark.parametrize("min_lr,max_lr", [(1, 0.1), (1e-3, 1e-3)])
def test_min_lr_must_lie_below_max_lr(min_lr, max_lr):
    with pytest.raises(SettingError, match=f"min_lr={min_lr!r} and max_lr={max_lr!r}"):
        RangeTestSettings(min_lr=min_lr, max_lr=max_lr)


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(SettingError, match="'exp', 'linear'"):
        RangeTestSettings(schedule="cosine")
    with pytest.raises(SettingError, match="'bf16', 'fp16'"):
        RangeTestSettings(amp="fp8")


def test_names_are_coerced_to_their_enums_and_read_as_plain_names():
    settings = RangeTestSettings(schedule="linear", amp="bf16")
    assert settings.schedule is Schedule.LINEAR and settings.amp is Amp.BF16
    assert settings.schedule == "linear" and str(settings.schedule) == "linear"
    assert f"{settings.amp}" == "bf16"
    assert RangeTestSettings(schedule=Schedule.EXP).schedule is Schedule.EXP
    assert RangeTestSettings(amp=None).amp is None


def test_integral_counts_of_any_type_become_ints():
    settings = RangeTestSettings(num_iter=np.int64(30), steps_per_lr=np.int32(2))
    assert type(settings.num_iter) is int and settings.num_iter == 30
    assert type(settings.steps_per_lr) is int and settings.steps_per_lr == 2
    assert RangeTestSettings(steps_per_lr="epoch").steps_per_lr == "epoch"


def test_unbounded_diverge_th_and_unsmoothed_beta_are_allowed():
    settings = RangeTestSettings(diverge_th=math.inf, beta=0.0)
    assert settings.diverge_th == math.inf and settings.beta == 0.0


def test_settings_are_frozen_and_the_error_is_a_value_error():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.min_lr = 1.0  # type: ignore[misc]
    assert issubclass(SettingError, ValueError)


def test_range_test_takes_its_defaults_from_DEFAULTS():
    parameters = inspect.signature(lrexp.range_test).parameters
    for field in dataclasses.fields(RangeTestSettings):
        parameter = parameters[field.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, field.name
        assert parameter.default == getattr(DEFAULTS, field.name), field.name


def test_the_defaults_are_the_documented_ones():
    # DESIGN.md's public signature, plus verify's defaults (verify_steps 30: chosen on the
    # suggestion benchmark's tuning split, scripts/bench_suggest.md) and pretrained off
    documented = RangeTestSettings(
        min_lr=1e-7, max_lr=10.0, num_iter=100, schedule="exp", steps_per_lr=1, beta=0.98,
        diverge_th=4.0, amp=None, accumulation_steps=1, verify=False, verify_steps=30,
        repeats=1, pretrained=False)
    assert documented == DEFAULTS


def _untouched_by(settings):
    """Runs range_test with ``settings``; the error it raised, and whether it trained."""
    model = nn.Linear(10, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def loss(outputs, targets):
        calls.append(1)
        return nn.functional.cross_entropy(outputs, targets)

    with pytest.raises(SettingError) as raised:
        lrexp.range_test(model, classification_batches(), loss, progress=False, **settings)
    unchanged = all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    return str(raised.value), not calls and unchanged


@pytest.mark.parametrize("settings,named", [
    ({"beta": 1.0}, "beta=1.0"),
    ({"min_lr": 1.0, "max_lr": 0.1}, "min_lr=1.0 and max_lr=0.1"),
    ({"amp": "fp8"}, "amp='fp8'"),
])
def test_range_test_refuses_a_bad_setting_before_training(settings, named):
    message, untouched = _untouched_by(settings)
    assert named in message and untouched


def test_epoch_steps_need_a_loader_with_a_length():
    batches = iter(classification_batches())
    with pytest.raises(SettingError, match="steps_per_lr='epoch'.*list_iterator"):
        lrexp.range_test(nn.Linear(10, 3), batches, nn.CrossEntropyLoss(),
                         steps_per_lr="epoch", progress=False)


def test_the_offline_curve_readers_check_their_settings_too():
    with pytest.raises(SettingError, match="beta=1.5"):
        smooth(np.ones(10), beta=1.5)
    with pytest.raises(SettingError, match="diverge_th=1"):
        divergence_step(np.ones(10), diverge_th=1)
