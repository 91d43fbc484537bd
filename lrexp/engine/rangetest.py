"""The range-test engine: plain PyTorch, no Hydra, MLflow or matplotlib.

Read ``range_test`` top to bottom: check the settings, snapshot the state, ramp the LR one curve
point at a time (``_Ramp``: train, record, stop on divergence), again from the snapshot for each
repeat (``_record_repeats``), verify if asked, put everything back. ``_Trainer`` is the
training step, ``_Snapshot`` the copy of everything the test changes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lrexp.engine.curve import CurveMonitor
from lrexp.engine.interrupts import held, holdable_ctrl_c
from lrexp.engine.losses import LossFn, batch_loss
from lrexp.engine.repeats import repeat_seed, seed_everything
from lrexp.engine.result import RangeTestResult
from lrexp.engine.schedules import schedule_lrs
from lrexp.engine.settings import DEFAULTS, Amp, RangeTestSettings, Schedule, SettingError
from lrexp.engine.training_schedules import group_lr_ratios
from lrexp.engine.verify import HOLDOUT_BATCHES, HOLDOUT_EVERY, candidate_lrs, run_probes

__all__ = ["LoaderExhausted", "keeps_momentum", "range_test", "resolve_device"]

log = logging.getLogger(__name__)

AMP_DTYPES: dict[str, torch.dtype] = {Amp.BF16: torch.bfloat16, Amp.FP16: torch.float16}
OnStep = Callable[[int, float, float], object]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or "auto" means CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise SettingError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got "
                           f"device={device!r}. None picks CUDA when present.") from None
    if resolved.type == "meta":  # moving a model there drops its weights for good
        raise SettingError(
            "device='meta' holds shapes, not numbers: the model's weights would be lost and "
            "nothing could train. Use device='cpu', 'cuda' or None (CUDA when present).")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SettingError(
            f"device={str(resolved)!r} was requested but this machine has no usable CUDA device; "
            "use device='cpu' (or None to pick CUDA only when present)."
        )
    return resolved


def range_test(
    model: nn.Module,
    train_loader: Iterable[Any],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    min_lr: float = DEFAULTS.min_lr,
    max_lr: float = DEFAULTS.max_lr,
    num_iter: int = DEFAULTS.num_iter,
    schedule: Schedule | str = DEFAULTS.schedule,
    steps_per_lr: int | str = DEFAULTS.steps_per_lr,
    beta: float = DEFAULTS.beta,
    diverge_th: float = DEFAULTS.diverge_th,
    restore: bool = True,
    device: str | torch.device | None = None,
    amp: Amp | str | None = DEFAULTS.amp,
    accumulation_steps: int = DEFAULTS.accumulation_steps,
    val_loader: Iterable[Any] | None = None,
    on_step: OnStep | None = None,
    progress: bool = True,
    batch_keys: Sequence[str] = ("input", "target"),
    grad_scaler: torch.amp.GradScaler | None = None,
    verify: bool = DEFAULTS.verify,
    verify_steps: int = DEFAULTS.verify_steps,
    repeats: int = DEFAULTS.repeats,
    seed: int | None = None,
    pretrained: bool = DEFAULTS.pretrained,
) -> RangeTestResult:
    """Train ``model`` while the LR grows from ``min_lr`` to ``max_lr``; record the loss curve.

    One curve point per LR value: ``num_iter`` points, each ``steps_per_lr`` optimizer steps
    (or one pass over ``train_loader`` with ``"epoch"``), each step ``accumulation_steps``
    batches. The recorded loss of a point is the mean training loss of its steps, or the
    validation loss after them when ``val_loader`` is given. The test stops at the first
    non-finite loss or once the smoothed loss diverges (see ``lrexp.engine.curve``).

    ``optimizer=None`` uses SGD(momentum=0.9). With several param groups, the first group
    follows the schedule and the others keep their LR ratio to it. ``batch_keys`` names the
    input and target entries of dict batches. ``amp`` is None, "bf16" or "fp16" (with a
    GradScaler, ``grad_scaler`` or a new one). With ``restore=True`` the model, optimizer,
    scaler and RNG states are put back exactly as they were, also after Ctrl-C, which returns
    the partial curve with ``stop_reason="interrupted"``.

    With ``verify=True``, short trainings of ``verify_steps`` steps at the default suggestion
    and a third of it (``lrexp.engine.verify``) each start from the initial state, and
    ``result.suggest()`` returns the default unless the lower LR trained clearly better on
    held-out data, or, with ``pretrained=True``, about as well (method "verified").

    With ``repeats=k > 1``, k tests run from the same initial state with different data orders:
    repeat 0 with the random state as it is (the ``repeats=1`` curve), repeat i >= 1 after
    reseeding Python, numpy, torch and the loader's own generator with a seed derived from
    ``seed`` (None: ``torch.initial_seed()``) and i (``lrexp.engine.repeats``). The result's
    curve is their median, ``result.repeats`` holds each one, and its verdict weighs how far
    their suggestions disagree. ``on_step`` sees every repeat's steps, ``step`` starting at 0
    with each repeat. Verify, when asked, probes the median curve's candidates once.

    With ``pretrained=True`` the model starts from pretrained weights (fine-tuning): the
    suggestion and its verdict read the curve as a fine-tuning one
    (``lrexp.engine.suggest``; ``Suggestion.regime`` says which regime was assumed). From
    scratch, an optimizer that keeps no momentum (``keeps_momentum``: plain SGD, RMSprop's
    default) gets a higher default suggestion (``result.momentum`` is False).

    Under torch.distributed (e.g. torchrun with a DistributedDataParallel model) each point's
    loss is averaged across ranks before it is recorded, so every rank records the same curve
    and stops at the same step; each rank restores its own state.

    A setting out of range raises ``lrexp.engine.settings.SettingError`` before any training.
    """
    settings = RangeTestSettings(
        min_lr=min_lr, max_lr=max_lr, num_iter=num_iter, schedule=schedule,
        steps_per_lr=steps_per_lr, beta=beta, diverge_th=diverge_th, amp=amp,
        accumulation_steps=accumulation_steps, verify=verify, verify_steps=verify_steps,
        repeats=repeats, pretrained=pretrained,
    )
    steps_per_point = _steps_per_point(settings, train_loader)
    _refuse_what_cannot_train(settings, model, train_loader)
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.min_lr, momentum=0.9)
    trainer = _Trainer.build(model, loss_fn, optimizer, resolve_device(device), settings,
                             grad_scaler, batch_keys)
    # verify restarts every probe, and repeats every curve, from the initial state: they need
    # the snapshot too
    needs_snapshot = restore or settings.verify or settings.repeats > 1
    snapshot = _Snapshot.take(trainer) if needs_snapshot else None
    loader_randomness = _LoaderRandomness.take(train_loader)  # repeats reseed it
    try:
        if snapshot is None or settings.repeats == 1:
            result = _record_curve(trainer, settings, train_loader, val_loader, steps_per_point,
                                   on_step, progress)
        else:
            base_seed = torch.initial_seed() if seed is None else seed
            result = _record_repeats(trainer, snapshot, loader_randomness, base_seed, settings,
                                     train_loader, val_loader, steps_per_point, on_step, progress)
        if snapshot is not None and settings.verify and result.stop_reason != "interrupted":
            _verify(result, trainer, snapshot, train_loader, val_loader, settings.verify_steps)
        elif settings.verify and result.stop_reason == "interrupted":
            log.warning("Verify skipped: the range test was interrupted.")
    finally:
        if snapshot is not None and restore:
            snapshot.restore(trainer)
            if settings.repeats > 1:
                loader_randomness.restore()
    return result


def _refuse_what_cannot_train(settings: RangeTestSettings, model: nn.Module,
                              train_loader: Iterable[Any]) -> None:
    """A ``SettingError`` before any step for a test that could not train or repeat."""
    # an Iterator (has __next__) is spent after one pass; iter() itself would draw a
    # DataLoader's shuffle seed, which the repeats' data orders depend on
    if settings.repeats > 1 and isinstance(train_loader, Iterator):
        raise SettingError(
            f"repeats={settings.repeats} needs a train_loader it can iterate once per repeat, "
            f"but {type(train_loader).__name__} is a one-shot iterator: every repeat after the "
            "first would find it spent. Pass the DataLoader (or a list of batches) itself, not "
            "iter(...) of it or a generator, or use repeats=1.")
    if not any(param.requires_grad for param in model.parameters()):
        raise SettingError(
            f"Every parameter of the model ({type(model).__name__}) is frozen "
            "(requires_grad=False), so no LR changes anything and the range test has nothing "
            "to train. Unfreeze the layers to tune (param.requires_grad_(True)), e.g. the head "
            "of a pretrained net.")


def _steps_per_point(settings: RangeTestSettings, train_loader: Iterable[Any]) -> int:
    """Optimizer steps per curve point: ``steps_per_lr``, or one pass over the loader."""
    if settings.steps_per_lr != "epoch":
        return int(settings.steps_per_lr)
    if not isinstance(train_loader, Sized):
        raise SettingError(
            "steps_per_lr='epoch' needs a train_loader with a length (a DataLoader or a "
            f"list); got a {type(train_loader).__name__}. Pass a number of steps instead."
        )
    return math.ceil(len(train_loader) / settings.accumulation_steps)


def _record_repeats(trainer: _Trainer, snapshot: _Snapshot, loader_randomness: _LoaderRandomness,
                    base_seed: int, settings: RangeTestSettings, train_loader: Iterable[Any],
                    val_loader: Iterable[Any] | None, steps_per_point: int,
                    on_step: OnStep | None, progress: bool) -> RangeTestResult:
    """``settings.repeats`` curves from the snapshot's state, each reseeded; their median.
    Ctrl-C ends the repeats with the curves recorded so far (the last one partial)."""
    curves: list[RangeTestResult] = []
    interrupted = False
    for index in range(settings.repeats):
        try:
            seed = None
            if index:  # repeat 0 runs as repeats=1 would: the caller's state, unseeded
                snapshot.restore(trainer)
                seed = repeat_seed(base_seed, index)
                seed_everything(seed)
                loader_randomness.reseed(seed)
            title = f"LR range test {index + 1}/{settings.repeats}"
            curve = _record_curve(trainer, settings, train_loader, val_loader, steps_per_point,
                                  on_step, progress, title)
        except KeyboardInterrupt:  # between two repeats' ramps (each ramp catches its own)
            log.warning("Repeats interrupted after %d curves.", len(curves))
            interrupted = True
            break
        curve.extra.update(repeat=index, seed=seed)
        curves.append(curve)
        if curve.stop_reason in ("interrupted", "exhausted"):  # no data, or the user, to go on
            break
    result = RangeTestResult.of_repeats(curves)
    if interrupted:
        result.stop_reason = "interrupted"
    return result


class _LoaderRandomness:
    """The train loader's own randomness, which the global seeds do not reach: the
    ``torch.Generator`` a DataLoader or its sampler shuffles with, and a DistributedSampler's
    epoch (its shuffle is seeded by seed + epoch, the same on every rank)."""

    def __init__(self, generators: list[torch.Generator], samplers: list[Any]) -> None:
        self.generators, self.samplers = generators, samplers
        self.states = [generator.get_state() for generator in generators]
        self.epochs = [sampler.epoch for sampler in samplers]

    @classmethod
    def take(cls, loader: Iterable[Any]) -> _LoaderRandomness:
        batch_sampler = getattr(loader, "batch_sampler", None)
        holders = [loader, getattr(loader, "sampler", None),
                   getattr(batch_sampler, "sampler", None)]
        generators = {id(g): g for g in (getattr(h, "generator", None) for h in holders)
                      if isinstance(g, torch.Generator)}
        samplers = {id(h): h for h in holders
                    if hasattr(h, "set_epoch") and isinstance(getattr(h, "epoch", None), int)}
        return cls(list(generators.values()), list(samplers.values()))

    def reseed(self, seed: int) -> None:
        for generator in self.generators:
            generator.manual_seed(seed)
        for sampler in self.samplers:
            sampler.set_epoch(seed)

    def restore(self) -> None:
        for generator, state in zip(self.generators, self.states, strict=True):
            generator.set_state(state)
        for sampler, epoch in zip(self.samplers, self.epochs, strict=True):
            sampler.set_epoch(epoch)


def _record_curve(trainer: _Trainer, settings: RangeTestSettings, train_loader: Iterable[Any],
                  val_loader: Iterable[Any] | None, steps_per_point: int,
                  on_step: OnStep | None, progress: bool,
                  title: str = "LR range test") -> RangeTestResult:
    """Ramp the LR over the schedule; the recorded curve with the settings that made it."""
    trainer.prepare()
    momentum = keeps_momentum(trainer.optimizer)  # read before the ramp, whatever it does
    ramp = _Ramp(trainer, CurveMonitor(settings.beta, settings.diverge_th),
                 _endless(train_loader), steps_per_point, val_loader, on_step,
                 _progress_bar(settings.num_iter, progress, title))
    ramp.run(schedule_lrs(settings).tolist())
    return RangeTestResult(
        np.array(ramp.lrs), np.array(ramp.losses), np.array(ramp.smoothed),
        stop_reason=ramp.stop_reason, beta=settings.beta,
        diverge_th=settings.diverge_th, range_schedule=str(settings.schedule),
        min_lr=settings.min_lr, max_lr=settings.max_lr, num_iter=settings.num_iter,
        steps_per_lr=settings.steps_per_lr,
        loss_kind="train" if val_loader is None else "val", pretrained=settings.pretrained,
        momentum=momentum,
    )


def keeps_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` keeps momentum, a running average of its gradients: a param
    group's ``momentum`` (SGD, RMSprop) or first beta (Adam and its kin) above 0. False only
    when every group declares 0; an optimizer whose groups declare neither, or a value that is
    not a number, counts as keeping it, which leaves the default rule as it was chosen for most
    optimizers (``lrexp.engine.suggest.NO_MOMENTUM_FACTOR``)."""
    groups = getattr(optimizer, "param_groups", None) or [{}]
    return any(_declared_momentum(group) != 0 for group in groups)


def _declared_momentum(group: Mapping[str, Any]) -> float | None:
    """A param group's momentum (or first beta) as a number; None where it declares none."""
    try:
        if "momentum" in group:
            return float(group["momentum"])
        if "betas" in group:
            return float(group["betas"][0])
    except (TypeError, ValueError, IndexError):
        pass
    return None


class _ProgressBar(Protocol):
    def update(self) -> object: ...
    def set_postfix(self, *, refresh: bool, **values: str) -> object: ...
    def close(self) -> object: ...


class _Ramp:
    """The range test's loop: one curve point per LR, recorded, stopped on divergence."""

    def __init__(self, trainer: _Trainer, monitor: CurveMonitor, batches: Iterator[Any],
                 steps_per_point: int, val_loader: Iterable[Any] | None,
                 on_step: OnStep | None, bar: _ProgressBar | None) -> None:
        self.trainer, self.monitor, self.batches = trainer, monitor, batches
        self.steps_per_point, self.val_loader = steps_per_point, val_loader
        self.on_step, self.bar = on_step, bar
        self.world_size = _world_size()
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stop_reason = "completed"
        self._pending: tuple[int, float, torch.Tensor] | None = None  # trained, not yet read

    def run(self, lrs: list[float]) -> None:
        """Ramp through ``lrs``; ``stop_reason`` says how it ended. Ctrl-C and a one-shot
        loader that ran out end it early with the points recorded so far."""
        with holdable_ctrl_c():
            try:
                self.stop_reason = self._ramp(lrs)
            except KeyboardInterrupt:
                self._end_early("interrupted")
            except LoaderExhausted:
                self._end_early("exhausted")
            finally:
                self._close_bar()

    def _end_early(self, reason: str) -> None:
        try:
            self._record_pending()  # first: the warning counts what the curve holds
        except KeyboardInterrupt:  # a stop held while that point was recorded
            reason = "interrupted"
        self._close_bar()  # before the warning: on a terminal it would share the bar's line
        if reason == "interrupted":
            log.warning("Range test interrupted after %d points; returning the partial curve.",
                        len(self.losses))
        else:
            log.warning("train_loader ran out after %d points and cannot be iterated again (a "
                        "one-shot iterator?); the curve stops there. Pass a DataLoader or a "
                        "list to get all num_iter points.", len(self.losses))
        self.stop_reason = reason

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _ramp(self, lrs: list[float]) -> str:
        # The loss of point i is read only after point i+1 is queued, so on CUDA the host never
        # waits for the device in steady state; divergence is then acted on one point late, and
        # that extra point is dropped, so the curve is the same on every device.
        for point, lr in enumerate(lrs):
            self.trainer.set_lr(lr)
            loss = self._point_loss()
            reason = self._record_pending()
            if reason is not None:
                return reason
            self._pending = (point, lr, loss)
        return self._record_pending() or "completed"

    def _point_loss(self) -> torch.Tensor:
        """Train one curve point's steps; its loss (train mean, or validation), on the device."""
        trainer = self.trainer
        loss = trainer.step(self.batches)
        for _ in range(self.steps_per_point - 1):
            loss = loss.detach() + trainer.step(self.batches).detach()
        if self.steps_per_point > 1:
            loss = loss / self.steps_per_point
        if self.val_loader is not None:
            loss = trainer.evaluate(self.val_loader)
        if self.world_size > 1:  # the same mean loss on every rank -> the same stopping step
            loss = loss.detach().clone()
            torch.distributed.all_reduce(loss)
            loss /= self.world_size
        return loss

    def _record_pending(self) -> str | None:
        """Record the queued point, if any; "diverged" or "non-finite" when the test stops."""
        if self._pending is None:
            return None
        point, lr, loss = self._pending
        value = loss.item()  # a stop while the device finishes it: the point is still queued
        with held():  # the point reaches the result and every on_step record, or none
            self._pending = None  # an on_step that raises must not record it a second time
            reason = self.monitor.update(value)
            self.lrs.append(lr)
            self.losses.append(value)
            self.smoothed.append(self.monitor.smoothed)
            if self.on_step is not None:
                self.on_step(point, lr, value)
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(lr=f"{lr:.2e}", loss=f"{self.monitor.smoothed:.4g}",
                                 refresh=False)
        return reason


def _progress_bar(total: int, enabled: bool, title: str) -> _ProgressBar | None:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    bar: _ProgressBar = tqdm(total=total, desc=title, unit="lr", leave=False)
    return bar


def _verify(result: RangeTestResult, trainer: _Trainer, snapshot: _Snapshot,
            train_loader: Iterable[Any], val_loader: Iterable[Any] | None, steps: int) -> None:
    """Attach the verify probe to ``result`` (see lrexp.engine.verify); Ctrl-C keeps what was
    probed and marks the result interrupted."""
    candidates = candidate_lrs(result)
    skipped = _why_not_verify(result, candidates, train_loader)
    if skipped is not None:
        log.warning("Verify skipped: %s", skipped)
        return
    # judged on held-out loss: the validation set, else a slice of the train batches that the
    # probes never train on (lrexp.engine.verify: the short-horizon and overfitting biases)
    holdout = None if val_loader is not None else _holdout_batches(trainer, snapshot,
                                                                   train_loader)
    judge = val_loader if val_loader is not None else holdout
    skip_every = HOLDOUT_EVERY if holdout is not None else None
    train = functools.partial(_probe, trainer, snapshot, train_loader, skip_every)
    evaluate = None if judge is None else functools.partial(_evaluate, trainer, judge)
    loss_kind = "val" if val_loader is not None else "holdout" if holdout else "train"
    try:
        result.verification = run_probes(candidates, train, evaluate, steps, loss_kind,
                                         result.pretrained)
    except KeyboardInterrupt as interrupt:
        log.warning("Verify interrupted; keeping the probes that finished.")
        result.verification = getattr(interrupt, "verification", None)
        result.stop_reason = "interrupted"
    except Exception as error:  # noqa: BLE001 - a probe (e.g. out of memory) must not lose the curve
        log.warning("Verify failed (%s: %s); the curve's suggestion stands.",
                    type(error).__name__, error)


def _why_not_verify(result: RangeTestResult, candidates: list[tuple[float, str]],
                    train_loader: Iterable[Any]) -> str | None:
    """Why verify cannot run here, or None when it can."""
    if not candidates:
        return f"the curve supports no LR ({result.verdict.reason})"
    if isinstance(train_loader, Iterator):  # a one-shot iterator: its batches are spent
        return ("it trains every candidate from the same batches, so it needs a train_loader "
                "that can be iterated again (a DataLoader or a list).")
    if _world_size() > 1:  # each rank would pick on its own losses and stop at its own step
        return "it does not run under torch.distributed yet; the curve's suggestion stands."
    return None


def _holdout_batches(trainer: _Trainer, snapshot: _Snapshot,
                     train_loader: Iterable[Any]) -> list[Any] | None:
    """Every ``HOLDOUT_EVERY``-th batch of a pass over the loader (at most
    ``HOLDOUT_BATCHES``), in the order the probes will see (each restores the RNG first);
    None when the loader has too few batches to spare any."""
    snapshot.restore(trainer)
    kept: list[Any] = []
    seen = 0
    for position, batch in enumerate(train_loader):
        seen = position + 1
        if position % HOLDOUT_EVERY == 0:
            if len(kept) == HOLDOUT_BATCHES:
                break
            kept.append(batch)
    return kept if seen > HOLDOUT_EVERY else None


def _probe(trainer: _Trainer, snapshot: _Snapshot, train_loader: Iterable[Any],
           skip_every: int | None, lr: float, steps: int) -> list[float]:
    """``steps`` steps at ``lr`` from the initial state: the losses, up to a non-finite one.
    With ``skip_every``, the batches at those positions of each pass are held out."""
    snapshot.restore(trainer)
    trainer.prepare()
    trainer.set_lr(lr)
    batches, losses = _endless(train_loader, skip_every), []
    for _ in range(steps):
        losses.append(trainer.step(batches).item())
        if not math.isfinite(losses[-1]):
            break
    return losses


def _evaluate(trainer: _Trainer, loader: Iterable[Any]) -> float:
    return trainer.evaluate(loader).item()


def _world_size() -> int:
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_world_size()
    return 1


class LoaderExhausted(Exception):
    """The train loader ran out and gives nothing more when iterated again (a one-shot
    iterator or generator): the test stops there and keeps its curve."""


def _endless(loader: Iterable[Any], skip_every: int | None = None) -> Iterator[Any]:
    """Batches of ``loader``, re-iterating it (a new epoch) whenever it runs out; with
    ``skip_every``, the batches at positions 0, k, 2k, ... of each pass are left out."""
    epochs = 0
    while True:
        empty = True
        for position, batch in enumerate(loader):
            empty = False
            if skip_every is None or position % skip_every:
                yield batch
        if empty and epochs:
            raise LoaderExhausted
        if empty:
            raise ValueError(
                "train_loader yielded no batches; check the dataset is not empty and that "
                "drop_last does not drop its only batch."
            )
        epochs += 1


def _to_device(data: Any, device: torch.device) -> Any:
    if isinstance(data, torch.Tensor):
        # the check is ~5x cheaper than a no-op .to(), which shows on millisecond steps
        return data if data.device == device else data.to(device, non_blocking=True)
    if isinstance(data, Mapping):
        return {key: _to_device(value, device) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_to_device(value, device) for value in data)
    return data


def _lr_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each param group's LR over the first group's: the schedule keeps these ratios."""
    groups = optimizer.param_groups
    base = groups[0]["lr"]
    if len(groups) > 1 and not base > 0:
        raise SettingError(
            "With several param groups the others keep their LR ratio to the first, so the "
            f"first group's LR must be > 0; it is {base!r}. Give every group its intended LR."
        )
    return group_lr_ratios(optimizer)


@dataclass
class _Trainer:
    """The model's optimizer step (with accumulation and AMP) and its validation pass."""

    model: nn.Module
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    device: torch.device
    scaler: torch.amp.GradScaler | None
    autocast: contextlib.AbstractContextManager[Any]
    accumulation_steps: int
    lr_ratios: list[float]  # of each param group's LR to the scheduled one
    batch_keys: Sequence[str]

    @classmethod
    def build(cls, model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
              device: torch.device, settings: RangeTestSettings,
              scaler: torch.amp.GradScaler | None, batch_keys: Sequence[str]) -> _Trainer:
        """fp16 needs a GradScaler: without one given, a new one."""
        if settings.amp == Amp.FP16 and scaler is None:
            scaler = torch.amp.GradScaler(device.type)
        autocast: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if settings.amp is None
            else torch.autocast(device.type, dtype=AMP_DTYPES[settings.amp])
        )
        return cls(model, loss_fn, optimizer, device, scaler, autocast,
                   settings.accumulation_steps, _lr_ratios(optimizer), batch_keys)

    def prepare(self) -> None:
        """Model and optimizer state on the test device, the model in training mode."""
        self.model.to(self.device)
        if self.optimizer.state:  # state tensors follow their params to the test device
            self.optimizer.load_state_dict(self.optimizer.state_dict())
        self.model.train()

    def set_lr(self, lr: float) -> None:
        for group, ratio in zip(self.optimizer.param_groups, self.lr_ratios, strict=True):
            group["lr"] = lr * ratio

    def step(self, batches: Iterator[Any]) -> torch.Tensor:
        """One optimizer step; the mean loss over its accumulated batches, on the device."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._backward(next(batches))
        for _ in range(self.accumulation_steps - 1):
            loss = loss.detach() + self._backward(next(batches)).detach()
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        # Not detached: after backward the graph holds no activations, and detach() here
        # measurably slows millisecond steps (scripts/bench_overhead.py).
        return loss

    def _backward(self, batch: Any) -> torch.Tensor:
        """Forward and backward of one batch; its loss, scaled for the accumulation."""
        inputs, targets = self._split(batch)
        with self.autocast:
            loss = batch_loss(self.model, self.loss_fn, inputs, targets)
        if not loss.requires_grad:  # a float wrapped again, an integer tensor, a detached loss
            raise SettingError(
                f"The loss ({loss.dtype} tensor) is not attached to the model's graph, so "
                "backward() cannot reach the parameters. Compute it from the model's outputs "
                "with torch operations (no .item(), float() or torch.tensor(...)), as a "
                "floating-point scalar.")
        if self.accumulation_steps > 1:
            loss = loss / self.accumulation_steps
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        return loss

    @torch.no_grad()
    def evaluate(self, loader: Iterable[Any]) -> torch.Tensor:
        """Mean loss over ``loader`` (batches weighted by size), in eval mode."""
        self.model.eval()
        total: torch.Tensor | None = None
        count = 0
        for batch in loader:
            inputs, targets = self._split(batch)
            with self.autocast:
                loss = batch_loss(self.model, self.loss_fn, inputs, targets).float()
            size = len(targets) if isinstance(targets, Sized) else 1
            total = loss * size if total is None else total + loss * size
            count += size
        self.model.train()
        if total is None:
            raise ValueError("val_loader yielded no batches; pass a non-empty validation set.")
        return total / count

    def _split(self, batch: Any) -> tuple[Any, Any]:
        """(inputs, targets) of a tuple, list or dict batch, on the device."""
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            inputs, targets = batch[0], batch[1]
        elif isinstance(batch, Mapping):
            missing = [key for key in self.batch_keys if key not in batch]
            if missing:
                raise SettingError(
                    f"A dict batch lacks the keys {missing}; its keys are {sorted(batch)}. "
                    "Name the input and target keys with batch_keys=(input_key, target_key)."
                )
            inputs, targets = (batch[key] for key in self.batch_keys)
        else:
            raise SettingError(
                "Each batch must be an (inputs, targets) tuple/list or a dict, got "
                f"{type(batch).__name__}; wrap the loader so it yields one of those."
            )
        return _to_device(inputs, self.device), _to_device(targets, self.device)


def _cpu_copy(value: Any) -> Any:
    """A deep copy with every tensor cloned to CPU memory."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(item) for item in value)
    return value


def _optimizer_only(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    owned = {id(param) for param in model.parameters()}
    return [param for group in optimizer.param_groups for param in group["params"]
            if id(param) not in owned]


def _single_device(model: nn.Module) -> torch.device | None:
    devices = {tensor.device for tensor in (*model.parameters(), *model.buffers())}
    return devices.pop() if len(devices) == 1 else None


LooseBuffer = tuple[nn.Module, str, torch.Tensor]
LooseParam = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # (param, value, grad)


@dataclass
class _Snapshot:
    """Everything the test changes, copied to CPU (no second copy of the model on the GPU)."""

    model_state: dict[str, torch.Tensor]
    grads: list[torch.Tensor | None]
    training_flags: list[bool]
    model_device: torch.device | None
    optimizer_state: dict[str, Any]
    scaler_state: dict[str, Any] | None
    rng: _RandomStates
    # state_dict() leaves these out: buffers registered with persistent=False, and tensors the
    # optimizer trains that the model does not own (a temperature, an extra head)
    loose_buffers: list[LooseBuffer]
    loose_params: list[LooseParam]

    @classmethod
    def take(cls, trainer: _Trainer) -> _Snapshot:
        model, optimizer, scaler = trainer.model, trainer.optimizer, trainer.scaler
        return cls(
            model_state=_cpu_copy(model.state_dict()),
            grads=[_cpu_copy(param.grad) for param in model.parameters()],
            training_flags=[module.training for module in model.modules()],
            model_device=_single_device(model),
            optimizer_state=_cpu_copy(optimizer.state_dict()),
            scaler_state=None if scaler is None else _cpu_copy(scaler.state_dict()),
            rng=_RandomStates.take(trainer.device),
            loose_buffers=[(module, name, _cpu_copy(buffer)) for module in model.modules()
                           for name, buffer in module._buffers.items()
                           if buffer is not None and name in module._non_persistent_buffers_set],
            loose_params=[(param, _cpu_copy(param), _cpu_copy(param.grad))
                          for param in _optimizer_only(model, optimizer)],
        )

    def restore(self, trainer: _Trainer) -> None:
        self._restore_model(trainer.model)
        self._restore_loose()
        # load_state_dict keeps the tensors it is given, and optimizers update them in place
        # (Adam's step and moments): hand it copies, so the snapshot survives for the next
        # restore (verify restores once per probe)
        trainer.optimizer.load_state_dict(_cpu_copy(self.optimizer_state))
        if trainer.scaler is not None and self.scaler_state is not None:
            trainer.scaler.load_state_dict(_cpu_copy(self.scaler_state))
        self.rng.restore()

    def _restore_model(self, model: nn.Module) -> None:
        if self.model_device is not None:
            model.to(self.model_device)
        model.load_state_dict(self.model_state)
        for param, grad in zip(model.parameters(), self.grads, strict=True):
            param.grad = None if grad is None else grad.to(param.device, copy=True)
        for module, training in zip(model.modules(), self.training_flags, strict=True):
            module.training = training

    def _restore_loose(self) -> None:
        for module, name, saved in self.loose_buffers:  # forward may have replaced the tensor
            current = module._buffers.get(name)
            device = current.device if current is not None else torch.device("cpu")
            module._buffers[name] = saved.to(device, copy=True)
        with torch.no_grad():
            for param, saved, grad in self.loose_params:
                param.copy_(saved)
                param.grad = None if grad is None else grad.to(param.device, copy=True)


@dataclass
class _RandomStates:
    """The Python, numpy, torch and (where used) CUDA generators' states."""

    python: tuple[Any, ...]
    numpy: Any
    torch_cpu: torch.Tensor
    cuda: list[torch.Tensor] | None

    @classmethod
    def take(cls, device: torch.device) -> _RandomStates:
        uses_cuda = torch.cuda.is_available() and (
            device.type == "cuda" or torch.cuda.is_initialized()
        )
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state(),
                   torch.cuda.get_rng_state_all() if uses_cuda else None)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch_cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
