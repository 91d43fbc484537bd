"""Suggestion-quality benchmark: which LR rule lands on an LR that actually trains well?

For each small CPU case (data x architecture x optimizer x loss x batch size):
1. Ground truth: train with a constant LR on a grid (3 points per decade, 1e-5 .. 10) for a
   fixed budget, for 3 seeds; ``best`` = the lowest validation loss of the seed-averaged grid.
2. For each seed, run lrexp's range test (defaults: 1e-7 -> 10, 100 points; with the engine's
   verification probe where it has one) and apply every rule to the recorded curve: lrexp's
   curve-only default and its METHODS, the verified default, and the peers' rules recomputed on
   the same curve (torch-lr-finder's steepest, fastai's minimum and valley, Lightning's steepest).
3. Train at each suggested LR with the same budget and seeds. A suggestion is a *hit* when its
   seed-averaged validation loss is <= 1.25 x best + 0.02.

It also checks the divergence rule: each case's range test is rerun without early stopping,
and a stop is *premature* when that full curve's smoothed loss later comes back below the best
seen at the stop.

The JSON output keeps each case's grid and every seed's curve, so rule variants can be scored
without retraining: ``--offline PATH`` (or ``load_results`` + ``score_rule_offline``) estimates
a suggestion's val loss by interpolating the grid in log10(LR).

    python scripts/bench_suggest.py                 # 17 cases, 3 seeds, 2 processes: ~14 min here
    python scripts/bench_suggest.py --cases sine_mlp_adam --workers 1 --seeds 1
    python scripts/bench_suggest.py --offline outputs/bench_suggest.json   # seconds

    # from another script: score a rule variant on saved curves
    sys.path.insert(0, "scripts")
    from bench_suggest import load_results, score_rule_offline
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lrexp
from lrexp.engine.curve import smooth
from lrexp.engine.suggest import METHODS, suggest

GRID = 10.0 ** np.arange(-5, 1 + 1e-9, 1 / 3)  # 3 per decade, 1e-5 .. 10
SEEDS = (0, 1, 2)
STEPS = 300
BATCH = 32
CURVE_POINTS = 100  # range-test batches per seed (the range test's default num_iter)

Rule = Callable[[np.ndarray, np.ndarray], "float | None"]


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


def digits(image: bool = False, label_noise: float = 0.0):
    from sklearn.datasets import load_digits

    d = load_digits()
    target = d.target.copy()
    if label_noise:  # flipped labels in both splits: the val loss has a floor, as in real data
        rng = np.random.default_rng(1)
        flip = rng.random(len(target)) < label_noise
        target[flip] = rng.integers(0, 10, flip.sum())
    train, val = _split(d.data, target, regression=False)
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


def moons():
    from sklearn.datasets import make_moons

    x, y = make_moons(2000, noise=0.2, random_state=0)
    return _split(x, y, regression=False)


def spirals(turns: float = 2.0, n: int = 2000):
    """Two interleaved spirals: a curvy boundary a small MLP learns only at a good LR."""
    rng = np.random.default_rng(0)
    t = np.sqrt(rng.random(n)) * turns * 2 * np.pi
    label = rng.integers(0, 2, n)
    angle = t + np.pi * label
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) + 0.5 * rng.standard_normal((n, 2))
    return _split(x, label, regression=False)


def wave2d():
    """sin(3x) cos(2y) on [-1.5, 1.5]^2 with a little noise: a curvy 2-D regression surface."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.5, 1.5, (2000, 2))
    y = np.sin(3 * x[:, 0]) * np.cos(2 * x[:, 1]) + 0.05 * rng.standard_normal(len(x))
    return _split(x, y, regression=True)


def sum_of_sines():
    """A sum of sines of random projections of 8 Gaussian inputs: smooth, many bumps."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 8))
    w = rng.standard_normal((8, 4))
    y = np.sin(x @ w).sum(1) + 0.1 * rng.standard_normal(len(x))
    return _split(x, y, regression=True)


def regression_nonlinear():
    """make_regression's linear target bent by a square and a tanh: no linear shortcut."""
    from sklearn.datasets import make_regression

    x, y = make_regression(3000, 12, n_informative=8, noise=5.0, random_state=0)
    y = y / y.std()
    return _split(x, np.tanh(2 * y) + 0.5 * y**2, regression=True)


# -- models ----------------------------------------------------------------------------------
def mlp(inputs, outputs, hidden=128, bn=False, act=nn.ReLU, depth=2):
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inputs if i == 0 else hidden, hidden)]
        layers += ([nn.BatchNorm1d(hidden)] if bn else []) + [act()]
    return nn.Sequential(*layers, nn.Linear(hidden, outputs))


def cnn(bn: bool):
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1)] + ([nn.BatchNorm2d(cout)] if bn else []) + [
            nn.ReLU()]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def deep_cnn(width: int = 16, convs: int = 5):
    """Plain conv stack, no normalization, He init (PyTorch's default init leaves a plain stack
    this deep untrainable in the budget): the usable LR band of plain SGD is narrow here."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    for _ in range(convs - 1):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    for conv in layers:
        if isinstance(conv, nn.Conv2d):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


@dataclass(frozen=True)
class Case:
    name: str
    data: Callable
    model: Callable[[], nn.Module]
    optimizer: Callable[[list, float], torch.optim.Optimizer]
    loss: Callable[[], nn.Module]
    batch: int = BATCH  # for the grid trainings and the range test alike


def sgd(momentum=0.0, nesterov=False):
    return lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov)


def adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


def rmsprop(params, lr):
    return torch.optim.RMSprop(params, lr=lr)


CASES = [
    Case("digits_mlp_sgd_momentum", digits, lambda: mlp(64, 10), sgd(0.9), nn.CrossEntropyLoss),
    Case("digits_mlp_sgd_plain", digits, lambda: mlp(64, 10), sgd(0.0), nn.CrossEntropyLoss),
    Case("digits_cnn_bn_sgd_nesterov", lambda: digits(image=True), lambda: cnn(bn=True),
         sgd(0.9, nesterov=True), nn.CrossEntropyLoss),
    Case("digits_cnn_adam", lambda: digits(image=True), lambda: cnn(bn=False), adam,
         nn.CrossEntropyLoss),
    Case("cancer_mlp_adamw", cancer, lambda: mlp(30, 2, hidden=64),
         lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=1e-2), nn.CrossEntropyLoss),
    Case("diabetes_mlp_rmsprop", diabetes, lambda: mlp(10, 1, hidden=64), rmsprop, nn.MSELoss),
    Case("sine_mlp_adam", sine, lambda: mlp(1, 1, hidden=64, act=nn.Tanh), adam, nn.MSELoss),
    Case("synthetic_bn_mlp_sgd_plain", synthetic_classes, lambda: mlp(20, 5, bn=True),
         sgd(0.0), nn.CrossEntropyLoss),
    Case("friedman_mlp_sgd_momentum", friedman, lambda: mlp(10, 1, hidden=64), sgd(0.9),
         nn.MSELoss),
    # harder kinds: deep unnormalized convs on plain SGD, curvy 2-D problems on adaptive
    # optimizers, small noisy batches, more MSE regression, a wide net with weight decay
    Case("digits_deep_cnn_sgd_plain", lambda: digits(image=True), deep_cnn, sgd(0.0),
         nn.CrossEntropyLoss),
    Case("moons_tanh_mlp_rmsprop", moons, lambda: mlp(2, 2, hidden=32, act=nn.Tanh), rmsprop,
         nn.CrossEntropyLoss),
    Case("spirals_mlp_adam", spirals, lambda: mlp(2, 2, hidden=64), adam, nn.CrossEntropyLoss),
    Case("wave2d_tanh_mlp_adam", wave2d, lambda: mlp(2, 1, hidden=64, act=nn.Tanh), adam,
         nn.MSELoss),
    Case("digits_noisy_labels_mlp_sgd_momentum_b8", lambda: digits(label_noise=0.2),
         lambda: mlp(64, 10, hidden=64), sgd(0.9), nn.CrossEntropyLoss, batch=8),
    Case("sines_gelu_mlp_sgd_nesterov", sum_of_sines, lambda: mlp(8, 1, hidden=64, act=nn.GELU),
         sgd(0.9, nesterov=True), nn.MSELoss),
    Case("regression_nonlinear_mlp_rmsprop_b8", regression_nonlinear,
         lambda: mlp(12, 1, hidden=64), rmsprop, nn.MSELoss, batch=8),
    Case("synthetic_wide_mlp_adamw", synthetic_classes, lambda: mlp(20, 5, hidden=1024, depth=1),
         lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=0.1), nn.CrossEntropyLoss),
]


# -- training --------------------------------------------------------------------------------
def batches(train, seed: int, steps: int, batch: int = BATCH):
    x, y = train
    gen = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < steps:
        order = torch.randperm(len(x), generator=gen)
        out += [(x[order[i:i + batch]], y[order[i:i + batch]])
                for i in range(0, len(x) - batch + 1, batch)]
    return out[:steps]


def fresh_model(case: Case, seed: int) -> nn.Module:
    torch.manual_seed(1000 + seed)
    return case.model()


def val_loss_after_training(case: Case, data, lr: float, seed: int, steps: int = STEPS) -> float:
    train, (xv, yv) = data
    model = fresh_model(case, seed)
    optimizer = case.optimizer(model.parameters(), lr)
    loss_fn = case.loss()
    model.train()
    for x, y in batches(train, seed, steps, case.batch):
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


@dataclass
class GroundTruth:
    """Seed-averaged val loss after constant-LR training, cached per LR: the grid and the
    suggestions share trainings, and rules often agree."""

    case: Case
    data: tuple
    seeds: tuple[int, ...] = SEEDS
    steps: int = STEPS
    cache: dict[float, float] = field(default_factory=dict)

    def val_loss(self, lr: float) -> float:
        key = float(f"{lr:.6g}")
        if key not in self.cache:
            self.cache[key] = float(np.mean([
                val_loss_after_training(self.case, self.data, key, s, self.steps)
                for s in self.seeds]))
        return self.cache[key]


def is_hit(val_loss: float | None, best: float) -> bool:
    """The benchmark's one criterion: within 25% (+0.02 for losses near zero) of the best."""
    return val_loss is not None and val_loss <= 1.25 * best + 0.02


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
    from lrexp.engine.suggest import _longest_decreasing_run

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
def has_verify() -> bool:
    """The verification probe is new in the engine; the benchmark runs with or without it."""
    return "verify" in inspect.signature(lrexp.range_test).parameters


def _suggestion_record(s) -> dict:
    """LR plus the optional fields newer engines attach (None where an engine has none)."""
    interval = getattr(s, "interval", None)
    return {"lr": s.lr, "method": s.method, "confidence": getattr(s, "confidence", None),
            "interval": None if interval is None else [float(v) for v in interval]}


def curve_suggest(lrs, losses, method: str, beta: float):
    """lrexp's pure rule on a curve; ``beta`` only where the engine's rules still take one."""
    if "beta" in inspect.signature(suggest).parameters:
        return suggest(lrs, losses, method, beta=beta)
    return suggest(lrs, losses, method)


def _suggestions(result, verified: bool) -> dict[str, dict]:
    """Every scored rule on one curve; "lrexp default" is the curve-only default in any case,
    "lrexp verified" what a verify=True user gets (the engine skips the probe on a curve that
    supports no LR, and then answers with the curve's default)."""
    records = {"lrexp default": _suggestion_record(
        curve_suggest(result.lrs, result.losses, "default", result.beta))}
    if verified:
        records["lrexp verified"] = _suggestion_record(result.suggest("default"))
    records |= {f"lrexp {name}": _suggestion_record(result.suggest(name)) for name in METHODS}
    for name, rule in PEER_RULES.items():
        records[name] = {"lr": rule(result.lrs, result.losses)}
    return records


def _range_test(case: Case, data, seed: int, verify_steps: int | None):
    """One seed's range test (with the probe when the engine has it), timed."""
    model = fresh_model(case, seed)
    optimizer = case.optimizer(model.parameters(), 1e-7)
    curve = batches(data[0], 100 + seed, CURVE_POINTS, case.batch)
    kwargs = {"progress": False, "device": "cpu"}
    if has_verify():
        kwargs["verify"] = True
        if verify_steps is not None:
            kwargs["verify_steps"] = verify_steps
    start = time.perf_counter()
    result = lrexp.range_test(model, curve, case.loss(), optimizer, **kwargs)
    seconds = time.perf_counter() - start
    full = lrexp.range_test(model, curve, case.loss(), optimizer, progress=False,
                            device="cpu", diverge_th=math.inf)
    return result, full, seconds


def _verification_record(verification) -> dict | None:
    """The probes as saved (every candidate's LR and loss), for offline looks at the probe."""
    if verification is None:
        return None
    return verification.to_dict() if hasattr(verification, "to_dict") else str(verification)


def run_case(name: str, seeds: tuple[int, ...] = SEEDS, steps: int = STEPS,
             verify_steps: int | None = None) -> dict:
    case = next(c for c in CASES if c.name == name)  # by name: lambdas do not pickle
    torch.set_num_threads(1)
    start = time.perf_counter()
    truth = GroundTruth(case, case.data(), seeds, steps)
    grid = {float(lr): truth.val_loss(lr) for lr in GRID}
    best_lr = min(grid, key=grid.get)
    best = grid[best_lr]
    trials = []
    for seed in seeds:
        result, full, seconds = _range_test(case, truth.data, seed, verify_steps)
        suggestions = _suggestions(result, has_verify())
        scores = {name: None if s["lr"] is None else truth.val_loss(s["lr"])
                  for name, s in suggestions.items()}
        verification = getattr(result, "verification", None)
        trials.append({
            "seed": seed, "stop_reason": result.stop_reason, "stop_step": len(result) - 1,
            "stop_premature": _premature(result, full),
            "lrs": result.lrs.tolist(), "losses": result.losses.tolist(), "beta": result.beta,
            "range_test_seconds": seconds,
            "probe_seconds": None if verification is None else verification.seconds,
            "verification": _verification_record(verification),
            "suggested_lr": {name: s["lr"] for name, s in suggestions.items()},
            "suggestion": suggestions, "val_loss": scores,
            "hit": {name: is_hit(score, best) for name, score in scores.items()},
        })
    return {"case": case.name, "batch": case.batch, "steps": steps, "best_lr": best_lr,
            "best_val_loss": best, "grid": grid, "trials": trials,
            "seconds": time.perf_counter() - start}


def _premature(result, full) -> bool | None:
    """Did the test stop while the loss could still go lower (judged on the unstopped curve)?"""
    if result.stop_reason != "diverged":
        return None
    stop = len(result) - 1
    best_at_stop = np.nanmin(result.smoothed)
    later = full.smoothed[stop + 1:]
    return bool(np.any(later[np.isfinite(later)] < best_at_stop))


# -- offline re-scoring ----------------------------------------------------------------------
def load_results(path: str | Path) -> list[dict]:
    """A saved run, with the grids' LR keys back as floats (JSON object keys are strings)."""
    results = json.loads(Path(path).read_text())
    for r in results:
        r["grid"] = {float(lr): float(loss) for lr, loss in r["grid"].items()}
    return results


def estimated_val_loss(grid: dict[float, float], lr: float) -> float:
    """The grid's seed-mean val loss interpolated linearly in log10(LR).

    inf above the largest grid LR (nothing says it trains there) and between a finite and an
    inf point (divergence sets in somewhere between them); below the smallest grid LR the
    smallest's loss (the loss only flattens towards LR 0).
    """
    lrs = np.array(sorted(grid))
    losses = np.array([grid[lr] for lr in lrs])
    x = math.log10(lr)
    xs = np.log10(lrs)
    if x > xs[-1] + 1e-6:  # up to rounding of the LR, as in the cache key
        return math.inf
    if x <= xs[0]:
        return float(losses[0])
    right = min(int(np.searchsorted(xs, x - 1e-6)), len(xs) - 1)
    if abs(xs[right] - x) <= 1e-6:  # on a grid point
        return float(losses[right])
    left = right - 1
    if not (math.isfinite(losses[left]) and math.isfinite(losses[right])):
        return math.inf
    w = (x - xs[left]) / (xs[right] - xs[left])
    return float((1 - w) * losses[left] + w * losses[right])


def score_rule_offline(results: list[dict], rule: Rule) -> tuple[int, int, dict[str, list[bool]]]:
    """(hits, trials, {case: [hit per seed]}) of ``rule(lrs, losses) -> lr | None`` on the saved
    curves, each suggestion's val loss estimated from the grid instead of trained."""
    per_case = {}
    for r in results:
        best = min(r["grid"].values())
        per_case[r["case"]] = [
            _offline_hit(r["grid"], best, rule(np.asarray(t["lrs"]), np.asarray(t["losses"])))
            for t in r["trials"]]
    hits = sum(sum(h) for h in per_case.values())
    return hits, sum(len(h) for h in per_case.values()), per_case


def _offline_hit(grid, best, lr) -> bool:
    return lr is not None and is_hit(estimated_val_loss(grid, lr), best)


def offline_rules() -> dict[str, Rule]:
    """Every curve-only rule the benchmark scores (the verified choice needs the probe)."""
    names = ["default", *METHODS]
    rules: dict[str, Rule] = {f"lrexp {n}": partial(_lrexp_rule, method=n) for n in names}
    return rules | PEER_RULES


def _lrexp_rule(lrs, losses, method: str) -> float | None:
    return suggest(lrs, losses, method).lr


def offline_report(results: list[dict]) -> str:
    total = sum(len(r["trials"]) for r in results)
    scored = {name: score_rule_offline(results, rule) for name, rule in offline_rules().items()}
    lines = ["Offline ESTIMATE: each suggestion's val loss is interpolated in log10(LR) from the "
             "saved grid, not trained.", "", "| rule | hits (estimated) | of |", "|---|---|---|"]
    for name in sorted(scored, key=lambda n: -scored[n][0]):
        lines.append(f"| {name} | {scored[name][0]} | {total} |")
    lines += ["", _agreement(results)]
    return "\n".join(lines)


def _agreement(results) -> str:
    """How far to trust the estimate: at the LRs the saved run trained, the estimated verdict
    against the trained one (this isolates the interpolation from changes to the rules)."""
    same = count = 0
    for r in results:
        best = min(r["grid"].values())
        for t in r["trials"]:
            for name, lr in t["suggested_lr"].items():
                same += _offline_hit(r["grid"], best, lr) == t["hit"][name]
                count += 1
    return (f"Interpolation check: at the saved run's own suggested LRs the estimated verdict "
            f"matches the trained one in {same} of {count} suggestions.")


# -- report ----------------------------------------------------------------------------------
def report(results: list[dict]) -> str:
    names = list(results[0]["trials"][0]["hit"])
    total = sum(len(r["trials"]) for r in results)
    lines = ["| rule | hits | of |", "|---|---|---|"]
    hits = {n: sum(t["hit"][n] for r in results for t in r["trials"]) for n in names}
    for name in sorted(names, key=lambda n: -hits[n]):
        lines.append(f"| {name} | {hits[name]} | {total} |")
    lines += ["", "| case | batch | best LR | best val loss | worst finite | stops (step) | "
              "premature stops | " + " | ".join(names) + " |", "|---" * (7 + len(names)) + "|"]
    for r in results:
        stops = ", ".join(f"{t['stop_reason']} ({t['stop_step']})" for t in r["trials"])
        premature = sum(bool(t["stop_premature"]) for t in r["trials"])
        cells = [",".join("✓" if t["hit"][n] else "✗" for t in r["trials"]) for n in names]
        lines.append(f"| {r['case']} | {r['batch']} | {r['best_lr']:.2g} | "
                     f"{r['best_val_loss']:.3f} | {_worst_finite(r['grid']):.3f} | {stops} | "
                     f"{premature} | " + " | ".join(cells) + " |")
    lines += ["", *_interval_lines(results), *_probe_cost_lines(results),
              *_sensitivity_lines(results)]
    return "\n".join(lines)


def _worst_finite(grid: dict[float, float]) -> float:
    return max((v for v in grid.values() if math.isfinite(v)), default=math.nan)


def _interval_lines(results) -> list[str]:
    """Coverage of the grid's best LR by each default's interval, and hits per confidence."""
    lines = []
    for name in ("lrexp default", "lrexp verified"):
        records = [(r, t) for r in results for t in r["trials"] if name in t["suggestion"]]
        with_interval = [(r, t) for r, t in records if t["suggestion"][name]["interval"]]
        if with_interval:
            inside = sum(lo <= r["best_lr"] <= hi for r, t in with_interval
                         for lo, hi in [t["suggestion"][name]["interval"]])
            lines.append(f"{name}: grid's best LR inside the interval in {inside} of "
                         f"{len(with_interval)} trials ({len(records) - len(with_interval)} "
                         "without an interval).")
        levels: dict[str, list[bool]] = {}
        for _, t in records:
            level = t["suggestion"][name]["confidence"]
            if level is not None:
                levels.setdefault(level, []).append(t["hit"][name])
        if levels:
            order = ["high", "low", "none"]  # lrexp's levels first, any other after them
            ranked = sorted(levels, key=lambda lv: (order.index(lv) if lv in order else 3, lv))
            lines.append(f"{name}: hits by confidence: " + ", ".join(
                f"{level} {sum(levels[level])}/{len(levels[level])}" for level in ranked))
    return lines


def _probe_cost_lines(results) -> list[str]:
    """The probe's price: its time over the curve's time (the rest of the range test)."""
    ratios = []
    for r in results:
        probe = [t["probe_seconds"] for t in r["trials"] if t["probe_seconds"] is not None]
        if probe:
            total = sum(t["range_test_seconds"] for t in r["trials"])
            ratios.append(sum(probe) / max(total - sum(probe), 1e-9))
    verified = [t["suggestion"]["lrexp verified"] for r in results for t in r["trials"]
                if "lrexp verified" in t["suggestion"]]
    if not verified:
        return ["Verification probe: not in this engine (no verified row)."]
    unprobed = sum(s["method"] != "verified" for s in verified)
    lines = [f"Verified row: no probe result in {unprobed} of {len(verified)} trials (the "
             "engine then answers with the curve's default)."]
    if ratios:
        lines.append(f"Verification probe cost: probe seconds / curve seconds, median over "
                     f"cases {statistics.median(ratios):.2f} (range {min(ratios):.2f} .. "
                     f"{max(ratios):.2f}; cases where it ran).")
    return lines


def _sensitivity_lines(results) -> list[str]:
    """A case only tests the rules if its LR matters and its best LR is inside the grid."""
    edges = (float(GRID[0]), float(GRID[-1]))
    flagged = [r["case"] for r in results
               if min(r["grid"], key=r["grid"].get) in edges
               or is_hit(_worst_finite(r["grid"]), r["best_val_loss"])]
    return [f"Cases not LR-sensitive or best at the grid's edge: {', '.join(flagged) or 'none'}."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=[c.name for c in CASES],
                        choices=[c.name for c in CASES])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0 .. N-1")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps per LR")
    parser.add_argument("--verify-steps", type=int, default=None,
                        help="the probe's steps per candidate (default: the engine's)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_suggest.json"))
    parser.add_argument("--offline", type=Path, metavar="PATH",
                        help="re-score a saved run's curves without training, then exit")
    args = parser.parse_args()
    if args.offline:
        print(offline_report(load_results(args.offline)))
        return
    start = time.perf_counter()
    job = partial(run_case, seeds=tuple(range(args.seeds)), steps=args.steps,
                  verify_steps=args.verify_steps)
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(job, args.cases))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print(report(results))
    print(f"\n(raw results in {args.out}; wall time {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
