"""Per-step overhead of lrexp.range_test against a bare training loop and torch-lr-finder.

All contenders run in this one process, interleaved round by round in a shuffled order, on the
same model (same initial weights), the same batches (one DataLoader over pre-built batches), the
same number of steps and the same exponential LR ramp. The bare loop sets the LR, trains and
reads each loss with .item(), which is the least any range test must do. Reported: the median
over rounds of (time / bare-loop time in the same round) with its interquartile range, and the
ratio of the fastest rounds. The process is pinned to one core with one torch thread to cut
scheduler noise.

    python scripts/bench_overhead.py              # both models, 15 rounds
    python scripts/bench_overhead.py --rounds 3 --models mlp
    PYTHONPATH=/tmp/engine-before python scripts/bench_overhead.py   # another checkout's engine

The last lines ("lrexp overhead") are the numbers to compare between two engines; the script
prints which lrexp it imported, so two runs say what they measured.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import time

import numpy as np
import torch
from torch import nn

import lrexp
from lrexp.engine.schedules import exp_schedule

MIN_LR, MAX_LR = 1e-5, 2e-3  # stays below divergence, so every contender runs every step


def tiny_mlp():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)), (32,), 32


def small_cnn():
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
    )
    return model, (3, 32, 32), 64


MODELS = {"mlp": (tiny_mlp, 1000), "cnn": (small_cnn, 40)}


def bare_loop(model, loader, optimizer, loss_fn, lrs):
    losses = []
    batches = iter(loader)
    model.train()
    for lr in lrs.tolist():
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def run_lrexp(model, loader, optimizer, loss_fn, lrs):
    result = lrexp.range_test(model, loader, loss_fn, optimizer, min_lr=MIN_LR, max_lr=MAX_LR,
                              num_iter=len(lrs), device="cpu", progress=False)
    assert len(result) == len(lrs), result.stop_reason
    return result


def run_torch_lr_finder(model, loader, optimizer, loss_fn, lrs):
    from torch_lr_finder import LRFinder

    finder = LRFinder(model, optimizer, loss_fn, device="cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        # its ramp ends exactly at end_lr; give it our last LR so both cover the same LRs
        finder.range_test(loader, start_lr=MIN_LR, end_lr=float(lrs[-1]), num_iter=len(lrs),
                          diverge_th=1e9)
        finder.reset()
    assert len(finder.history["lr"]) == len(lrs)


def contenders():
    found = {"bare loop": bare_loop, "lrexp": run_lrexp}
    try:
        import torch_lr_finder  # noqa: F401

        found["torch-lr-finder"] = run_torch_lr_finder
    except ImportError:
        print("torch-lr-finder not installed (pip install torch-lr-finder): left out")
    return found


def bench_model(name: str, rounds: int) -> dict[str, float]:
    build, steps = MODELS[name]
    torch.manual_seed(0)
    model, shape, batch = build()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, *shape, generator=gen), torch.randint(10, (batch,),
                generator=gen)) for _ in range(steps)]
    loader = torch.utils.data.DataLoader(batches, batch_size=None)  # the same loader for all
    lrs = exp_schedule(MIN_LR, MAX_LR, steps)
    loss_fn = nn.CrossEntropyLoss()
    runners = contenders()
    times: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(rounds + 1):  # round 0 warms up allocators and caches; not counted
        order = list(runners)
        random.shuffle(order)
        for key in order:
            model.load_state_dict(initial)
            optimizer = torch.optim.SGD(model.parameters(), lr=MIN_LR, momentum=0.9)
            start = time.perf_counter()
            runners[key](model, loader, optimizer, loss_fn, lrs)
            times[key].append(time.perf_counter() - start)
    ratios = {}
    bare = np.array(times["bare loop"][1:])
    for key, values in times.items():
        counted = np.array(values[1:])
        paired = counted / bare
        low, high = np.percentile(paired, [25, 75])
        ratios[key] = median_ratio = float(np.median(paired))
        print(f"  {name:4s} {key:16s} {1e3 * np.median(counted) / steps:8.3f} ms/step   "
              f"× bare loop: median {median_ratio:.3f} (IQR {low:.3f}-{high:.3f}), "
              f"fastest rounds {counted.min() / bare.min():.3f}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = less noise)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if hasattr(os, "sched_setaffinity") and args.threads == 1:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    random.seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds, "
          f"lrexp from {os.path.dirname(os.path.dirname(lrexp.__file__))}")
    summary = {}
    for name in args.models:
        ratios = summary[name] = bench_model(name, args.rounds)
        if "torch-lr-finder" in ratios:
            print(f"  {name:4s} lrexp / torch-lr-finder (medians): "
                  f"{ratios['lrexp'] / ratios['torch-lr-finder']:.3f}")
    for name, ratios in summary.items():
        print(f"lrexp overhead, {name}: {ratios['lrexp']:.3f} x bare loop "
              f"(median over {args.rounds} rounds)")


if __name__ == "__main__":
    main()
