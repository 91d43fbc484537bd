"""The verify probe: short trainings at candidate LRs read off the curve, one of them chosen
by its held-out loss, judged so that a short probe does not favour the LR that merely falls
fastest at first.

A range test sees each LR for one step, from weights already trained at all the smaller LRs;
a real training holds one LR from the initial weights. The probe asks that question directly:
from the initial state, train ``steps`` steps at each candidate LR and compare.

A short probe judged by its training loss rewards the LR that falls fastest at first, which is
not the LR that trains best over a whole run (short-horizon bias: Wu, Ren, Liao & Grosse,
"Understanding Short-Horizon Bias in Stochastic Meta-Optimization", ICLR 2018); with few
examples it also rewards overfitting. So the probe

* judges each candidate on held-out loss after the same number of steps: the validation set
  when there is one, else every ``HOLDOUT_EVERY``-th batch of the train loader's pass (at most
  ``HOLDOUT_BATCHES``), which no probe trains on (a loader too short to spare batches is
  judged on the mean training loss of the probe's last third);
* from scratch, keeps the default unless a lower candidate beats it by more than
  ``DEFAULT_UNLESS_BEATEN_BY``: the probe only looks below the default, and only clear evidence
  moves the answer there (a small lead after a few dozen steps is as often noise as signal);
* when fine-tuning, takes the lowest candidate within ``FINE_TUNING_WITHIN`` of the best held-out
  loss: there the default's misses were nearly all too high (17 of 18 on the benchmark's tuning
  split; a pretrained net that trains as well at a lower LR keeps more of what it learned).

Candidates are the default suggestion times ``AROUND_DEFAULT``, nothing at or above the LR
where the loss blew up nor below the tested range, merged when closer than a factor of
``MERGE_FACTOR``. None lies above the default: a probe that looks higher is judged on an early
lead, which is what the short horizon exaggerates, and the benchmark's misses were answers that
were too high.
Every constant was chosen on the tuning families of scripts/bench_suggest.py (its document:
scripts/bench_suggest.md). This module is pure selection logic; ``lrexp.engine.rangetest``
supplies the training callables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from lrexp.engine.result import DEFAULT_SOURCE, Probe, RangeTestResult, Verification
from lrexp.engine.suggest import suggest

__all__ = ["AROUND_DEFAULT", "DEFAULT_UNLESS_BEATEN_BY", "FINE_TUNING_WITHIN", "HOLDOUT_BATCHES",
           "HOLDOUT_EVERY", "candidate_lrs", "choose", "run_probes"]

# Candidates closer than this factor are one candidate: LRs within 1.5x train alike.
MERGE_FACTOR = 1.5
# The default's LR times these, in both regimes, and the margin a lower candidate's held-out
# loss must win by from scratch (relative to the default's), chosen on the tuning split of
# scripts/bench_suggest.py (scripts/bench_suggest.md, "Verify"): from scratch (1/3, 1) with a
# margin of 0.1 to 0.2 at 30 steps hit most (no variant has beaten the default since).
AROUND_DEFAULT: tuple[float, ...] = (1 / 3, 1.0)
DEFAULT_UNLESS_BEATEN_BY = 0.15
# Fine-tuning: how close to the best held-out loss a lower candidate may be and still win,
# chosen by leaving one family out on the tuning split of rounds 1-8 at 30 steps, judged on
# held-out batches (0.02 in 9 of 10 folds: 45 of 60 trials hit, where the from-scratch rule on
# the same probes hit 42, the default's own number; scripts/bench_suggest_tune.py --verify-cv).
FINE_TUNING_WITHIN = 0.02
HOLDOUT_EVERY = 5
HOLDOUT_BATCHES = 8


def candidate_lrs(result: RangeTestResult) -> list[tuple[float, str]]:
    """(LR, source) pairs to probe, ascending; empty when the curve supports no LR."""
    default = suggest(result.lrs, result.losses, pretrained=result.pretrained,
                      momentum=result.momentum)
    if default.lr is None:
        return []
    proposals = [(default.lr * factor, DEFAULT_SOURCE if factor == 1 else f"default x{factor:.3g}")
                 for factor in AROUND_DEFAULT]
    ceiling = result.blowup_lr or math.inf
    floor = float(result.lrs[0])  # below the tested range the curve says nothing
    merged: list[tuple[float, str]] = []
    for lr, source in sorted(proposals):  # ties and near-ties join the first (lower) LR
        if lr >= ceiling or lr < floor:
            continue
        if merged and lr < merged[-1][0] * MERGE_FACTOR:
            merged[-1] = (merged[-1][0], f"{merged[-1][1]}, {source}")
        else:
            merged.append((lr, source))
    return merged


def choose(probes: list[Probe], pretrained: bool = False) -> int | None:
    """Index of the default's probe, unless another probe's loss is lower than the default's by
    more than ``DEFAULT_UNLESS_BEATEN_BY`` of it (or the default's diverged): then the best
    probe's. ``pretrained``: the lowest LR's probe within ``FINE_TUNING_WITHIN`` of the best
    loss. None when no probe gave a finite loss."""
    finite = [i for i, probe in enumerate(probes) if math.isfinite(probe.loss)]
    if not finite:
        return None
    best = min(finite, key=lambda i: probes[i].loss)
    if pretrained:
        near = probes[best].loss + FINE_TUNING_WITHIN * abs(probes[best].loss)
        return min((i for i in finite if probes[i].loss <= near), key=lambda i: probes[i].lr)
    default = next((i for i in finite if probes[i].at_default), None)
    if default is None:
        return best
    margin = DEFAULT_UNLESS_BEATEN_BY * abs(probes[default].loss)
    return best if probes[best].loss < probes[default].loss - margin else default


def run_probes(
    candidates: list[tuple[float, str]],
    train: Callable[[float, int], list[float]],
    evaluate: Callable[[], float] | None,
    steps: int,
    loss_kind: str = "train",
    pretrained: bool = False,
) -> Verification:
    """Probe each candidate: ``train(lr, steps)`` resets to the initial state, trains and
    returns the per-step losses (stopping at a non-finite one); ``evaluate()`` gives the
    held-out loss after it (``loss_kind`` "val" or "holdout"), None to judge the training
    loss. ``pretrained`` picks by the fine-tuning rule (``choose``).

    A KeyboardInterrupt stops the probing; the probes done so far are kept in the
    ``Verification`` attached to the exception as ``verification``.
    """
    started = time.perf_counter()
    probes: list[Probe] = []
    kind = loss_kind if evaluate is not None else "train"
    try:
        for lr, source in candidates:
            losses = train(lr, steps)
            probes.append(Probe(lr, source, _measured_loss(losses, steps, evaluate), losses))
    except KeyboardInterrupt as interrupt:
        interrupt.verification = _verification(probes, steps, started, kind,  # type: ignore[attr-defined]
                                               pretrained)
        raise
    return _verification(probes, steps, started, kind, pretrained)


def _measured_loss(losses: list[float], steps: int, evaluate: Callable[[], float] | None) -> float:
    if len(losses) < steps or not all(map(math.isfinite, losses)):
        return math.inf  # it diverged
    if evaluate is not None:
        value = evaluate()
        return value if math.isfinite(value) else math.inf
    tail = losses[-max(1, steps // 3):]
    return sum(tail) / len(tail)


def _verification(probes: list[Probe], steps: int, started: float, kind: str,
                  pretrained: bool) -> Verification:
    return Verification(probes, choose(probes, pretrained), steps,
                        time.perf_counter() - started, kind)
