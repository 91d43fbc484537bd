"""Suggestion-quality benchmark: which LR rule lands on an LR that actually trains well?

For each small CPU case (data x architecture x optimizer x loss):
1. Ground truth: train with a constant LR on a grid (3 points per decade, 1e-5 .. 10) for a
   fixed budget, for 2 seeds; ``best`` = the lowest validation loss of the seed-averaged grid.
2. For each seed, run lrexp's range test (defaults: 1e-7 -> 10, 100 points) and apply every
   rule to the recorded curve: lrexp's (steepest, minimum, valley) and the peers' rules
   recomputed on the same curve (torch-lr-finder's steepest, fastai's minimum and valley,
   Lightning's steepest).
3. Train at each suggested LR with the same budget and seeds. A suggestion is a *hit* when its
   seed-averaged validation loss is <= 1.25 x best + 0.02.

It also checks the divergence rule: each case's range test is rerun without early stopping,
and a stop is *premature* when that full curve's smoothed loss later comes back below the best
seen at the stop.

    python scripts/bench_suggest.py                 # all cases, 2 processes, ~5 min here
    python scripts/bench_suggest.py --cases sine_mlp_adam --workers 1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lrexp
from lrexp.curve import smooth
from lrexp.suggest import METHODS

GRID = 10.0 ** np.arange(-5, 1 + 1e-9, 1 / 3)  # 3 per decade, 1e-5 .. 10
SEEDS = (0, 1)
STEPS = 300
BATCH = 32


# -- data ------------------------------------------------------------------------------------
def _split(x: np.ndarray, y: np.ndarray, regression: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x = x[order].astype(np.float32)
    y = y[order].astype(np.float32 if regression else np.int64)
    cut = int(0.75 * len(x))
    mean, std = x[:cut].mean(0), x[:cut].std(0) + 1e-6
    x = (x - mean) / std
    if regression:
        y = ((y - y[:cut].mean()) / y[:cut].std()).reshape(-1, 1)  # unit-variance targets
    t = torch.from_numpy
    return (t(x[:cut]), t(y[:cut])), (t(x[cut:]), t(y[cut:]))


def digits(image: bool = False):
    from sklearn.datasets import load_digits

    d = load_digits()
    train, val = _split(d.data, d.target, regression=False)
    if image:
        train, val = [(x.reshape(-1, 1, 8, 8), y) for x, y in (train, val)]
    return train, val


def cancer():
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return _split(d.data, d.target, regression=False)


def diabetes():
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return _split(d.data, d.target, regression=True)


def sine():
    x = np.linspace(-np.pi, np.pi, 2000).reshape(-1, 1)
    y = np.sin(x).ravel() + 0.05 * np.random.default_rng(0).standard_normal(len(x))
    return _split(x, y, regression=True)


def synthetic_classes():
    from sklearn.datasets import make_classification

    x, y = make_classification(3000, 20, n_informative=10, n_classes=5, random_state=0)
    return _split(x, y, regression=False)


def friedman():
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(2000, 10, noise=0.5, random_state=0)
    return _split(x, y, regression=True)


# -- models ----------------------------------------------------------------------------------
def mlp(inputs, outputs, hidden=128, bn=False, act=nn.ReLU):
    layers = [nn.Linear(inputs, hidden)] + ([nn.BatchNorm1d(hidden)] if bn else []) + [act()]
    layers += [nn.Linear(hidden, hidden)] + ([nn.BatchNorm1d(hidden)] if bn else []) + [act()]
    return nn.Sequential(*layers, nn.Linear(hidden, outputs))


def cnn(bn: bool):
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1)] + ([nn.BatchNorm2d(cout)] if bn else []) + [
            nn.ReLU()]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


@dataclass(frozen=True)
class Case:
    name: str
    data: Callable
    model: Callable[[], nn.Module]
    optimizer: Callable[[list, float], torch.optim.Optimizer]
    loss: Callable[[], nn.Module]


def sgd(momentum=0.0, nesterov=False):
    return lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov)


CASES = [
    Case("digits_mlp_sgd_momentum", digits, lambda: mlp(64, 10), sgd(0.9), nn.CrossEntropyLoss),
    Case("digits_mlp_sgd_plain", digits, lambda: mlp(64, 10), sgd(0.0), nn.CrossEntropyLoss),
    Case("digits_cnn_bn_sgd_nesterov", lambda: digits(image=True), lambda: cnn(bn=True),
         sgd(0.9, nesterov=True), nn.CrossEntropyLoss),
    Case("digits_cnn_adam", lambda: digits(image=True), lambda: cnn(bn=False),
         lambda p, lr: torch.optim.Adam(p, lr=lr), nn.CrossEntropyLoss),
    Case("cancer_mlp_adamw", cancer, lambda: mlp(30, 2, hidden=64),
         lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=1e-2), nn.CrossEntropyLoss),
    Case("diabetes_mlp_rmsprop", diabetes, lambda: mlp(10, 1, hidden=64),
         lambda p, lr: torch.optim.RMSprop(p, lr=lr), nn.MSELoss),
    Case("sine_mlp_adam", sine, lambda: mlp(1, 1, hidden=64, act=nn.Tanh),
         lambda p, lr: torch.optim.Adam(p, lr=lr), nn.MSELoss),
    Case("synthetic_bn_mlp_sgd_plain", synthetic_classes, lambda: mlp(20, 5, bn=True),
         sgd(0.0), nn.CrossEntropyLoss),
    Case("friedman_mlp_sgd_momentum", friedman, lambda: mlp(10, 1, hidden=64), sgd(0.9),
         nn.MSELoss),
]


# -- training --------------------------------------------------------------------------------
def batches(train, seed: int, steps: int):
    x, y = train
    gen = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < steps:
        order = torch.randperm(len(x), generator=gen)
        out += [(x[order[i:i + BATCH]], y[order[i:i + BATCH]])
                for i in range(0, len(x) - BATCH + 1, BATCH)]
    return out[:steps]


def fresh_model(case: Case, seed: int) -> nn.Module:
    torch.manual_seed(1000 + seed)
    return case.model()


def val_loss_after_training(case: Case, data, lr: float, seed: int) -> float:
    train, (xv, yv) = data
    model = fresh_model(case, seed)
    optimizer = case.optimizer(model.parameters(), lr)
    loss_fn = case.loss()
    model.train()
    for x, y in batches(train, seed, STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            return math.inf
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        value = loss_fn(model(xv), yv).item()
    return value if math.isfinite(value) else math.inf


def seed_mean_val_loss(case, data, lr, cache) -> float:
    key = float(f"{lr:.6g}")
    if key not in cache:
        cache[key] = float(np.mean([val_loss_after_training(case, data, key, s) for s in SEEDS]))
    return cache[key]


# -- the peers' rules, recomputed on our curves ----------------------------------------------
def torch_lr_finder_steepest(lrs, losses):
    """torch-lr-finder: EMA (smooth_f=0.05, not debiased), skip 10 / 5, gradient per index."""
    smoothed = [losses[0]]
    for loss in losses[1:]:
        smoothed.append(0.05 * loss + 0.95 * smoothed[-1])
    lrs, smoothed = lrs[10:-5], np.asarray(smoothed[10:-5])
    if len(smoothed) < 2:
        return None
    return float(lrs[np.gradient(smoothed).argmin()])


def _fastai_trimmed(lrs, losses):
    smoothed = smooth(losses)
    n = len(lrs)
    return lrs[n // 10:-5], smoothed[n // 10:-5]


def fastai_minimum(lrs, losses):
    lrs, smoothed = _fastai_trimmed(lrs, losses)
    return float(lrs[np.nanargmin(smoothed)] / 10) if len(lrs) else None


def fastai_valley(lrs, losses):
    lrs, smoothed = _fastai_trimmed(lrs, losses)
    if len(lrs) < 2:
        return None
    from lrexp.suggest import _longest_decreasing_run

    start, end = _longest_decreasing_run(smoothed)
    sections = (end - start) / 3
    return float(lrs[max(start + int(sections) + int(sections / 2), 0)])


def lightning_steepest(lrs, losses):
    """Lightning: debiased EMA 0.98, skip 10 / 1, gradient per index."""
    smoothed = smooth(losses)[10:-1]
    return float(lrs[10:-1][np.gradient(smoothed).argmin()]) if len(smoothed) > 1 else None


PEER_RULES = {
    "torch-lr-finder steepest": torch_lr_finder_steepest,
    "fastai minimum": fastai_minimum,
    "fastai valley": fastai_valley,
    "Lightning steepest": lightning_steepest,
}


# -- one case --------------------------------------------------------------------------------
def run_case(name: str) -> dict:
    case = next(c for c in CASES if c.name == name)  # by name: lambdas do not pickle
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = case.data()
    cache: dict[float, float] = {}
    grid = {float(lr): seed_mean_val_loss(case, data, lr, cache) for lr in GRID}
    best_lr = min(grid, key=grid.get)
    best = grid[best_lr]
    trials = []
    for seed in SEEDS:
        model = fresh_model(case, seed)
        optimizer = case.optimizer(model.parameters(), 1e-7)
        curve = batches(data[0], 100 + seed, 100)
        result = lrexp.range_test(model, curve, case.loss(), optimizer, progress=False,
                                  device="cpu")
        full = lrexp.range_test(model, curve, case.loss(), optimizer, progress=False,
                                device="cpu", diverge_th=math.inf)
        suggestions = {f"lrexp {name}": result.suggest(name).lr for name in METHODS}
        for name, rule in PEER_RULES.items():
            suggestions[name] = rule(result.lrs, result.losses)
        scores = {name: (None if lr is None else seed_mean_val_loss(case, data, lr, cache))
                  for name, lr in suggestions.items()}
        trials.append({
            "seed": seed, "stop_reason": result.stop_reason, "stop_step": len(result) - 1,
            "stop_premature": _premature(result, full),
            "suggested_lr": suggestions, "val_loss": scores,
            "hit": {name: score is not None and score <= 1.25 * best + 0.02
                    for name, score in scores.items()},
        })
    return {"case": case.name, "best_lr": best_lr, "best_val_loss": best, "grid": grid,
            "trials": trials, "seconds": time.perf_counter() - start}


def _premature(result, full) -> bool | None:
    """Did the test stop while the loss could still go lower (judged on the unstopped curve)?"""
    if result.stop_reason != "diverged":
        return None
    stop = len(result) - 1
    best_at_stop = np.nanmin(result.smoothed)
    later = full.smoothed[stop + 1:]
    return bool(np.any(later[np.isfinite(later)] < best_at_stop))


def report(results: list[dict]) -> str:
    names = list(results[0]["trials"][0]["hit"])
    total = sum(len(r["trials"]) for r in results)
    lines = ["| rule | hits | of |", "|---|---|---|"]
    hits = {n: sum(t["hit"][n] for r in results for t in r["trials"]) for n in names}
    for name in sorted(names, key=lambda n: -hits[n]):
        lines.append(f"| {name} | {hits[name]} | {total} |")
    lines += ["", "| case | best LR | best val loss | stops (step) | premature stops | "
              + " | ".join(names) + " |", "|---" * (4 + len(names)) + "|"]
    for r in results:
        stops = ", ".join(f"{t['stop_reason']} ({t['stop_step']})" for t in r["trials"])
        premature = sum(bool(t["stop_premature"]) for t in r["trials"])
        cells = [",".join("✓" if t["hit"][n] else "✗" for t in r["trials"]) for n in names]
        lines.append(f"| {r['case']} | {r['best_lr']:.2g} | {r['best_val_loss']:.3f} | {stops} |"
                     f" {premature} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=[c.name for c in CASES],
                        choices=[c.name for c in CASES])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_suggest.json"))
    args = parser.parse_args()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run_case, args.cases))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print(report(results))
    print(f"\n(raw results in {args.out})")


if __name__ == "__main__":
    main()
