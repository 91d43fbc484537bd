"""The verify probe: short trainings at candidate LRs read off the curve, best one wins.

A range test sees each LR for one step, from weights already trained at all the smaller LRs;
a real training holds one LR from the initial weights. The probe asks that question directly:
from the initial state, train ``steps`` steps at each candidate LR and keep the LR with the
lowest measured loss (validation loss when there is a validation set, else the mean training
loss of the probe's last third: the level it reached, not its luckiest batch).

Candidates are the rules' answers and factors of 3 around the default, nothing at or above
the LR where the loss blew up, merged when closer than a factor of 1.5.
This module is pure selection logic; ``lrexp.engine.rangetest`` supplies the training callables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from lrexp.engine.result import Probe, RangeTestResult, Verification
from lrexp.engine.suggest import DEFAULT_METHOD, METHODS

__all__ = ["candidate_lrs", "run_probes"]

# Candidates closer than this factor are one candidate: LRs within 1.5x train alike, and each
# probe costs time (all probes together: 1.35x the range test, median of the benchmark).
MERGE_FACTOR = 1.5
AROUND_DEFAULT = (1 / 3, 3.0)


def candidate_lrs(result: RangeTestResult) -> list[tuple[float, str]]:
    """(LR, source) pairs to probe, ascending; empty when the curve supports no LR."""
    proposals: list[tuple[float, str]] = []
    default = result.suggest(DEFAULT_METHOD)
    if default.lr is None:
        return []
    proposals.append((default.lr, DEFAULT_METHOD))
    proposals += [(default.lr * factor, f"{DEFAULT_METHOD} x{factor:.3g}")
                  for factor in AROUND_DEFAULT]
    proposals += [(s.lr, name) for name in METHODS if name != DEFAULT_METHOD
                  and (s := result.suggest(name)).lr is not None]
    ceiling = result.blowup_lr or math.inf
    merged: list[tuple[float, str]] = []
    for lr, source in sorted(proposals):  # ties and near-ties join the first (lower) LR
        if lr >= ceiling:
            continue
        if merged and lr < merged[-1][0] * MERGE_FACTOR:
            merged[-1] = (merged[-1][0], f"{merged[-1][1]}, {source}")
        else:
            merged.append((lr, source))
    return merged


def run_probes(
    candidates: list[tuple[float, str]],
    train: Callable[[float, int], list[float]],
    evaluate: Callable[[], float] | None,
    steps: int,
) -> Verification:
    """Probe each candidate: ``train(lr, steps)`` resets to the initial state, trains and
    returns the per-step losses (stopping at a non-finite one); ``evaluate()`` gives the
    validation loss after it, when there is a validation set.

    A KeyboardInterrupt stops the probing; the probes done so far are kept in the
    ``Verification`` attached to the exception as ``verification``.
    """
    started = time.perf_counter()
    probes: list[Probe] = []
    try:
        for lr, source in candidates:
            losses = train(lr, steps)
            probes.append(Probe(lr, source, _measured_loss(losses, steps, evaluate), losses))
    except KeyboardInterrupt as interrupt:
        interrupt.verification = _verification(probes, steps, started, evaluate)  # type: ignore[attr-defined]
        raise
    return _verification(probes, steps, started, evaluate)


def _measured_loss(losses: list[float], steps: int, evaluate: Callable[[], float] | None) -> float:
    if len(losses) < steps or not all(map(math.isfinite, losses)):
        return math.inf  # it diverged
    if evaluate is not None:
        value = evaluate()
        return value if math.isfinite(value) else math.inf
    tail = losses[-max(1, steps // 3):]
    return sum(tail) / len(tail)


def _verification(probes: list[Probe], steps: int, started: float,
                  evaluate: Callable[[], float] | None) -> Verification:
    finite = [i for i, probe in enumerate(probes) if math.isfinite(probe.loss)]
    chosen = min(finite, key=lambda i: probes[i].loss) if finite else None
    return Verification(probes, chosen, steps, time.perf_counter() - started,
                        "val" if evaluate is not None else "train")
