"""Tiny models and data shared by the tests."""

import torch
from torch import nn


class Scalar(nn.Module):
    """One parameter w; the 'model output' is w itself."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x):
        return self.w


def quadratic_loss(a: float):
    """a/2 * mean((w - x)^2): SGD without momentum diverges for lr > 2/a."""
    return lambda w, x: a / 2 * ((w - x) ** 2).mean()


def noise_batches(n: int = 40, size: int = 64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(x, x) for x in (torch.randn(size, generator=gen) for _ in range(n))]


def classification_batches(n=8, size=16, features=10, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, features, generator=gen), torch.randint(classes, (size,), generator=gen))
        for _ in range(n)
    ]


def bn_net(features=10, classes=3):
    return nn.Sequential(
        nn.Linear(features, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(16, classes),
    )


