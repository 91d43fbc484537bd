"""From a range test to a training schedule, measured: the worked example in scripts/methods.md.

On scikit-learn's digits (1437 training images, 360 held out) with the zoo's MLP and SGD
(momentum 0.9), for each seed: a range test, then three short trainings from the same initial
weights and data order:

* ``constant``: SGD at the range test's suggested LR for every step;
* ``onecycle``: torch's OneCycleLR with the bounds ``res.schedule("onecycle")`` gives;
* ``constant at max_lr``: SGD at one-cycle's peak LR for every step (what the schedule's
  warm-up and annealing buy at that LR).

Prints the held-out accuracy and loss (mean and spread over the seeds) as a markdown table.

    python scripts/schedule_example.py [--epochs 6] [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn

import lrexp
from lrexp.app.data import load_digits

BATCH = 64


def digits_split(seed: int = 0) -> tuple[torch.utils.data.TensorDataset, ...]:
    pixels, targets = load_digits()
    x = torch.tensor(pixels, dtype=torch.float32) / 16
    y = torch.tensor(targets)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    held_out, train = order[:360], order[360:]
    return (torch.utils.data.TensorDataset(x[train], y[train]),
            torch.utils.data.TensorDataset(x[held_out], y[held_out]))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def train(model: nn.Module, loader, epochs: int, lr: float,
          make_scheduler: Callable | None = None) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = make_scheduler(optimizer) if make_scheduler else None
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss_fn(model(inputs), labels).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()


@torch.no_grad()
def evaluate(model: nn.Module, data) -> tuple[float, float]:
    inputs, labels = data.tensors
    logits = model(inputs)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    loss = nn.functional.cross_entropy(logits, labels).item()
    return accuracy, loss if loss == loss else float("inf")


def one_seed(seed: int, epochs: int) -> dict[str, tuple[float, float]]:
    train_set, held_out = digits_split()
    torch.manual_seed(seed)
    model = mlp()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    loader = torch.utils.data.DataLoader(train_set, batch_size=BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    res = lrexp.range_test(model, loader, nn.CrossEntropyLoss(), progress=False)
    suggested, onecycle = res.suggest().lr, res.schedule("onecycle")
    total_steps = epochs * len(loader)
    plans = {
        f"constant at the suggested LR ({suggested:.3g})": (suggested, None),
        str(onecycle): (onecycle.max_lr, lambda opt: res.make_scheduler(
            opt, "onecycle", total_steps=total_steps)),
        f"constant at one-cycle's max_lr ({onecycle.max_lr:.3g})": (onecycle.max_lr, None),
    }
    scores = {}
    for name, (lr, scheduler) in plans.items():
        model.load_state_dict(initial)
        loader.generator.manual_seed(seed)  # the same data order for every plan
        train(model, loader, epochs, lr, scheduler)
        scores[name] = evaluate(model, held_out)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_plan: dict[str, list[tuple[float, float]]] = {}
    for seed in range(args.seeds):
        for index, (name, score) in enumerate(one_seed(seed, args.epochs).items()):
            # the settings in a plan's name vary with the seed: keep the first seed's wording
            per_plan.setdefault(list(per_plan)[index] if seed else name, []).append(score)
    print(f"digits, MLP 64-128-10, SGD(momentum 0.9), batch {BATCH}, {args.epochs} epochs, "
          f"{args.seeds} seeds (names show seed 0's settings); held-out set of 360 images\n")
    print("| plan | held-out accuracy | held-out loss |")
    print("|---|---|---|")
    for name, scores in per_plan.items():
        accuracies, losses = [s[0] for s in scores], [s[1] for s in scores]
        print(f"| {name} | {statistics.mean(accuracies):.3f} ± {statistics.pstdev(accuracies):.3f}"
              f" | {statistics.median(losses):.3f} (median) |")


if __name__ == "__main__":
    main()
