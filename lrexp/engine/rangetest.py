"""The range-test engine: plain PyTorch, no Hydra, MLflow or matplotlib.

Read ``range_test`` top to bottom: snapshot state, ramp the LR one curve point at a time,
train, record, stop on divergence, put everything back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lrexp.engine.curve import CurveMonitor
from lrexp.engine.result import RangeTestResult
from lrexp.engine.schedules import make_schedule

__all__ = ["LoaderExhausted", "range_test", "resolve_device"]

log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
OnStep = Callable[[int, float, float], Any]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or "auto" means CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} was requested but this machine has no usable CUDA device; "
            "use device='cpu' (or None to pick CUDA only when present)."
        )
    return device


def range_test(
    model: nn.Module,
    train_loader: Iterable,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_iter: int = 100,
    schedule: str = "exp",
    steps_per_lr: int | str = 1,
    beta: float = 0.98,
    diverge_th: float = 4.0,
    restore: bool = True,
    device: str | torch.device | None = None,
    amp: str | None = None,
    accumulation_steps: int = 1,
    val_loader: Iterable | None = None,
    on_step: OnStep | None = None,
    progress: bool = True,
    batch_keys: Sequence[str] = ("input", "target"),
    grad_scaler: torch.amp.GradScaler | None = None,
    verify: bool = False,
    verify_steps: int = 50,
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

    With ``verify=True``, short trainings of ``verify_steps`` steps at candidate LRs from the
    curve (``lrexp.engine.verify``) each start from the initial state, and ``result.suggest()``
    returns the one with the lowest measured loss (method "verified").

    Under torch.distributed (e.g. torchrun with a DistributedDataParallel model) each point's
    loss is averaged across ranks before it is recorded, so every rank records the same curve
    and stops at the same step; each rank restores its own state.
    """
    lrs = make_schedule(schedule, min_lr, max_lr, num_iter)
    _check_arguments(steps_per_lr, accumulation_steps, amp, train_loader, verify_steps)
    monitor = CurveMonitor(beta, diverge_th)  # validates beta and diverge_th
    device = resolve_device(device)
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=min_lr, momentum=0.9)
    lr_ratios = _lr_ratios(optimizer)
    if amp == "fp16" and grad_scaler is None:
        grad_scaler = torch.amp.GradScaler(device.type)

    # verify restarts every probe from the initial state, so it needs the snapshot too
    snapshot = _Snapshot.take(model, optimizer, grad_scaler, device) if restore or verify else None
    step = _TrainStep(model, loss_fn, optimizer, device, amp, grad_scaler, batch_keys)
    steps_per_point = (
        math.ceil(len(train_loader) / accumulation_steps)  # type: ignore[arg-type]
        if steps_per_lr == "epoch" else int(steps_per_lr)
    )
    settings = dict(beta=beta, diverge_th=diverge_th, schedule=schedule, min_lr=min_lr,
                    max_lr=max_lr, num_iter=num_iter, steps_per_lr=steps_per_lr,
                    loss_kind="train" if val_loader is None else "val")
    try:
        model.to(device)
        if optimizer.state:  # state tensors follow their params to the test device
            optimizer.load_state_dict(optimizer.state_dict())
        model.train()
        ramp = _Ramp(step, monitor, _endless(train_loader), steps_per_point, accumulation_steps,
                     val_loader, on_step, _progress_bar(num_iter, progress))
        ramp.run(lrs.tolist(), lr_ratios)
        result = RangeTestResult(ramp.lrs, ramp.losses, ramp.smoothed,
                                 stop_reason=ramp.stop_reason, **settings)
        if verify and result.stop_reason != "interrupted":
            _verify(result, step, snapshot, train_loader, val_loader, lr_ratios,
                    accumulation_steps, verify_steps)
    finally:
        if snapshot is not None and restore:
            snapshot.restore(model, optimizer, grad_scaler)
    return result


class _Ramp:
    """The range test's loop: one curve point per LR, recorded, stopped on divergence."""

    def __init__(self, step, monitor, batches, steps_per_point, accumulation_steps, val_loader,
                 on_step, bar) -> None:
        self.step, self.monitor, self.batches = step, monitor, batches
        self.steps_per_point, self.accumulation_steps = steps_per_point, accumulation_steps
        self.val_loader, self.on_step, self.bar = val_loader, on_step, bar
        self.world_size = _world_size()
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stop_reason = "completed"

    def record(self, point: int, lr: float, loss: torch.Tensor) -> str | None:
        value = loss.item()
        monitor = self.monitor
        reason = monitor.update(value)
        self.lrs.append(lr)
        self.losses.append(value)
        self.smoothed.append(monitor.smoothed)
        if self.on_step is not None:
            self.on_step(point, lr, value)
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(lr=f"{lr:.2e}", loss=f"{monitor.smoothed:.4g}", refresh=False)
        return reason

    def point_loss(self) -> torch.Tensor:
        """Train one curve point's steps; its loss (train mean, or validation), on the device."""
        step, accumulation_steps = self.step, self.accumulation_steps
        loss = step.run(self.batches, accumulation_steps)
        for _ in range(self.steps_per_point - 1):
            loss = loss.detach() + step.run(self.batches, accumulation_steps).detach()
        if self.steps_per_point > 1:
            loss = loss / self.steps_per_point
        if self.val_loader is not None:
            loss = step.evaluate(self.val_loader)
        if self.world_size > 1:  # the same mean loss on every rank -> the same stopping step
            loss = loss.detach().clone()
            torch.distributed.all_reduce(loss)
            loss /= self.world_size
        return loss

    def run(self, lrs: list[float], lr_ratios: list[float]) -> None:
        # The loss of point i is read only after point i+1 is queued, so on CUDA the host never
        # waits for the device in steady state; divergence is then acted on one point late, and
        # that extra point is dropped, so the curve is the same on every device.
        pending: tuple[int, float, torch.Tensor] | None = None
        groups = self.step.optimizer.param_groups
        try:
            for point, lr in enumerate(lrs):
                _set_lr(groups, lr, lr_ratios)
                loss = self.point_loss()
                if pending is not None:
                    previous, pending = pending, None
                    reason = self.record(*previous)
                    if reason is not None:
                        self.stop_reason = reason
                        break
                pending = (point, lr, loss)
            if pending is not None:
                previous, pending = pending, None
                self.stop_reason = self.record(*previous) or self.stop_reason
        except KeyboardInterrupt:
            log.warning("Range test interrupted after %d points; returning the partial curve.",
                        len(self.losses))
            if pending is not None:  # a finished point that was not read yet
                self.record(*pending)
            self.stop_reason = "interrupted"
        except LoaderExhausted:
            if pending is not None:
                self.record(*pending)
            log.warning("train_loader ran out after %d points and cannot be iterated again (a "
                        "one-shot iterator?); the curve stops there. Pass a DataLoader or a "
                        "list to get all num_iter points.", len(self.losses))
            self.stop_reason = "exhausted"
        finally:
            if self.bar is not None:
                self.bar.close()


def _set_lr(groups: list[dict], lr: float, lr_ratios: list[float]) -> None:
    if len(groups) == 1:  # the common case, without the loop (microseconds count)
        groups[0]["lr"] = lr
    else:
        for group, ratio in zip(groups, lr_ratios, strict=True):
            group["lr"] = lr * ratio


def _verify(result: RangeTestResult, step: _TrainStep, snapshot: _Snapshot, train_loader,
            val_loader, lr_ratios, accumulation_steps: int, steps: int) -> None:
    """Attach the verify probe to ``result`` (see lrexp.engine.verify); Ctrl-C keeps what was probed
    and marks the result interrupted."""
    from lrexp.engine.verify import candidate_lrs, run_probes

    candidates = candidate_lrs(result)
    if not candidates:
        log.warning("Verify skipped: the curve supports no LR (%s)", result.verdict.reason)
        return
    if isinstance(train_loader, Iterator):  # a one-shot iterator: its batches are spent
        log.warning("Verify skipped: it trains every candidate from the same batches, so it "
                    "needs a train_loader that can be iterated again (a DataLoader or a list).")
        return
    if _world_size() > 1:  # each rank would pick on its own losses and stop at its own step
        log.warning("Verify skipped: it does not run under torch.distributed yet; the curve's "
                    "suggestion stands.")
        return

    def train(lr: float, steps: int) -> list[float]:
        snapshot.restore(step.model, step.optimizer, step.scaler)
        step.model.to(step.device)
        if step.optimizer.state:  # its state follows the params to the test device
            step.optimizer.load_state_dict(step.optimizer.state_dict())
        step.model.train()
        _set_lr(step.optimizer.param_groups, lr, lr_ratios)
        batches, losses = _endless(train_loader), []
        for _ in range(steps):
            losses.append(step.run(batches, accumulation_steps).item())
            if not math.isfinite(losses[-1]):
                break
        return losses

    def evaluate() -> float:
        return step.evaluate(val_loader).item()

    try:
        result.verification = run_probes(
            candidates, train, evaluate if val_loader is not None else None, steps)
    except KeyboardInterrupt as interrupt:
        log.warning("Verify interrupted; keeping the probes that finished.")
        result.verification = getattr(interrupt, "verification", None)
        result.stop_reason = "interrupted"
    except Exception as error:  # noqa: BLE001 - a probe (e.g. out of memory) must not lose the curve
        log.warning("Verify failed (%s: %s); the curve's suggestion stands.",
                    type(error).__name__, error)


def _check_arguments(steps_per_lr, accumulation_steps, amp, train_loader, verify_steps) -> None:
    if steps_per_lr == "epoch":
        if not hasattr(train_loader, "__len__"):
            raise ValueError(
                "steps_per_lr='epoch' needs a train_loader with a length (a DataLoader or a "
                f"list), got a {type(train_loader).__name__}; pass a number of steps instead."
            )
    elif not (isinstance(steps_per_lr, int) and steps_per_lr >= 1):
        raise ValueError(
            f"steps_per_lr must be a positive integer or 'epoch', got {steps_per_lr!r}."
        )
    if not (isinstance(accumulation_steps, int) and accumulation_steps >= 1):
        raise ValueError(
            f"accumulation_steps must be a positive integer, got {accumulation_steps!r}."
        )
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}.")
    if not (isinstance(verify_steps, int) and verify_steps >= 1):
        raise ValueError(
            f"verify_steps must be a positive integer, got {verify_steps!r}; 30-60 is usual."
        )


def _world_size() -> int:
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_world_size()
    return 1


def _lr_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    base = optimizer.param_groups[0]["lr"]
    if len(optimizer.param_groups) == 1:
        return [1.0]
    if not base > 0:
        raise ValueError(
            "With several param groups the others keep their LR ratio to the first, so the "
            f"first group's LR must be > 0; it is {base!r}. Give every group its intended LR."
        )
    return [group["lr"] / base for group in optimizer.param_groups]


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="LR range test", unit="lr", leave=False)


class LoaderExhausted(Exception):
    """The train loader ran out and gives nothing more when iterated again (a one-shot
    iterator or generator): the test stops there and keeps its curve."""


def _endless(loader: Iterable) -> Iterator:
    """Batches of ``loader``, re-iterating it (a new epoch) whenever it runs out."""
    epochs = 0
    while True:
        empty = True
        for batch in loader:
            empty = False
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


@dataclass
class _TrainStep:
    """One optimizer step (with accumulation and AMP) and the validation pass."""

    model: nn.Module
    loss_fn: Callable
    optimizer: torch.optim.Optimizer
    device: torch.device
    amp: str | None
    scaler: torch.amp.GradScaler | None
    batch_keys: Sequence[str]

    def __post_init__(self) -> None:
        self.autocast = (
            contextlib.nullcontext() if self.amp is None
            else torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])
        )

    def _split(self, batch: Any) -> tuple[Any, Any]:
        if type(batch) in (tuple, list) and len(batch) >= 2:  # the common case, checked first
            inputs, targets = batch[0], batch[1]
        elif isinstance(batch, Mapping):
            missing = [key for key in self.batch_keys if key not in batch]
            if missing:
                raise ValueError(
                    f"A dict batch lacks the keys {missing}; its keys are {sorted(batch)}. "
                    "Name the input and target keys with batch_keys=(input_key, target_key)."
                )
            inputs, targets = (batch[key] for key in self.batch_keys)
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            inputs, targets = batch[0], batch[1]
        else:
            raise TypeError(
                "Each batch must be an (inputs, targets) tuple/list or a dict, got "
                f"{type(batch).__name__}; wrap the loader so it yields one of those."
            )
        return _to_device(inputs, self.device), _to_device(targets, self.device)

    def run(self, batches: Iterator, accumulation_steps: int) -> torch.Tensor:
        """Returns the mean loss over the accumulated batches, still on the device."""
        optimizer, scaler = self.optimizer, self.scaler
        optimizer.zero_grad(set_to_none=True)
        if accumulation_steps == 1 and scaler is None:  # the plain step, as lean as a bare loop
            inputs, targets = self._split(next(batches))
            with self.autocast:
                loss = self.loss_fn(self.model(inputs), targets)
            loss.backward()
            optimizer.step()
            # Not detached: after backward the graph holds no activations, and detach() here
            # measurably slows millisecond steps (scripts/bench_overhead.py).
            return loss
        total = None
        for _ in range(accumulation_steps):
            inputs, targets = self._split(next(batches))
            with self.autocast:
                loss = self.loss_fn(self.model(inputs), targets)
            if accumulation_steps > 1:
                loss = loss / accumulation_steps
            (scaler.scale(loss) if scaler is not None else loss).backward()
            total = loss.detach() if total is None else total + loss.detach()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return total

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> torch.Tensor:
        """Mean loss over ``loader`` (batches weighted by size), in eval mode."""
        self.model.eval()
        total, count = None, 0
        for batch in loader:
            inputs, targets = self._split(batch)
            with self.autocast:
                loss = self.loss_fn(self.model(inputs), targets).float()
            size = len(targets) if hasattr(targets, "__len__") else 1
            total = loss * size if total is None else total + loss * size
            count += size
        self.model.train()
        if total is None:
            raise ValueError("val_loader yielded no batches; pass a non-empty validation set.")
        return total / count


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


@dataclass
class _Snapshot:
    """Everything the test changes, copied to CPU (no second copy of the model on the GPU)."""

    model_state: dict[str, torch.Tensor]
    grads: list[torch.Tensor | None]
    training_flags: list[bool]
    model_device: torch.device | None
    optimizer_state: dict[str, Any]
    scaler_state: dict[str, Any] | None
    python_rng: Any
    numpy_rng: Any
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    # state_dict() leaves these out: buffers registered with persistent=False, and tensors the
    # optimizer trains that the model does not own (a temperature, an extra head)
    loose_buffers: list[tuple[nn.Module, str, torch.Tensor]]
    loose_params: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]

    @classmethod
    def take(cls, model, optimizer, scaler, device: torch.device) -> _Snapshot:
        uses_cuda = torch.cuda.is_available() and (
            device.type == "cuda" or torch.cuda.is_initialized()
        )
        return cls(
            model_state=_cpu_copy(model.state_dict()),
            grads=[None if p.grad is None else _cpu_copy(p.grad) for p in model.parameters()],
            training_flags=[module.training for module in model.modules()],
            model_device=_single_device(model),
            optimizer_state=_cpu_copy(optimizer.state_dict()),
            scaler_state=None if scaler is None else _cpu_copy(scaler.state_dict()),
            python_rng=random.getstate(),
            numpy_rng=np.random.get_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if uses_cuda else None,
            loose_buffers=[(module, name, _cpu_copy(buffer)) for module in model.modules()
                           for name, buffer in module._buffers.items()
                           if buffer is not None and name in module._non_persistent_buffers_set],
            loose_params=[(param, _cpu_copy(param), None if param.grad is None
                           else _cpu_copy(param.grad)) for param in _optimizer_only(model,
                                                                                    optimizer)],
        )

    def restore(self, model, optimizer, scaler) -> None:
        if self.model_device is not None:
            model.to(self.model_device)
        model.load_state_dict(self.model_state)
        for param, grad in zip(model.parameters(), self.grads, strict=True):
            param.grad = None if grad is None else grad.to(param.device, copy=True)
        for module, training in zip(model.modules(), self.training_flags, strict=True):
            module.training = training
        for module, name, saved in self.loose_buffers:  # forward may have replaced the tensor
            device = module._buffers[name].device if module._buffers.get(name) is not None \
                else "cpu"
            module._buffers[name] = saved.to(device, copy=True)
        with torch.no_grad():
            for param, saved, grad in self.loose_params:
                param.copy_(saved)
                param.grad = None if grad is None else grad.to(param.device, copy=True)
        # load_state_dict keeps the tensors it is given, and optimizers update them in place
        # (Adam's step and moments): hand it copies, so the snapshot survives for the next
        # restore (verify restores once per probe)
        optimizer.load_state_dict(_cpu_copy(self.optimizer_state))
        if scaler is not None and self.scaler_state is not None:
            scaler.load_state_dict(_cpu_copy(self.scaler_state))
        random.setstate(self.python_rng)
        np.random.set_state(self.numpy_rng)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
