"""Small nets for quick tests and the offline default."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lrexp.app.errors import ConfigError
from lrexp.app.models import register


@register("mlp")
def mlp(num_classes: int, in_channels: int, input_size: int = 32,
        hidden: Sequence[int] = (256, 256), activation: str = "relu") -> nn.Module:
    """Flatten, then fully connected layers. For vector data (the sine toy) input_size is 1."""
    activations = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
    if activation not in activations:
        raise ConfigError(f"Invalid setting net.activation={activation}: choose one of "
                          f"{', '.join(activations)}.")
    if not all(isinstance(size, int) and size >= 1 for size in hidden):
        raise ConfigError(f"Invalid setting net.hidden={list(hidden)}: give layer widths as "
                          "positive integers, e.g. net.hidden=[256,256].")
    act = activations[activation]
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * input_size * input_size
    for size in hidden:
        layers += [nn.Linear(width, size), act()]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register("simple_cnn")
def simple_cnn(num_classes: int, in_channels: int, input_size: int = 32,
               width: int = 16) -> nn.Module:
    """Two conv-BN-ReLU-pool stages and a linear head; works for any input size >= 4."""

    def stage(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2)]

    return nn.Sequential(*stage(in_channels, width), *stage(width, 2 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))
