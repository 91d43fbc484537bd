"""The original blog post's object API, kept as a thin facade over ``range_test``.

    finder = lr_finder(net, train_loader, loss_function)
    finder.update()            # runs the range test
    finder.plotshow()          # shows the plot (a no-op without a display)
    finder.save("result.jpg")  # format from the extension
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch import nn

from lrexp.engine.result import RangeTestResult

__all__ = ["lr_finder"]


class lr_finder:  # noqa: N801 - the original name, kept for code written against it
    """Holds a model, a loader and a loss; ``update()`` runs the test with ``range_test``'s
    keyword arguments given here (optimizer, min_lr, max_lr, num_iter, ...)."""

    def __init__(
        self, net: nn.Module, train_loader: Iterable, loss_function: Callable, **kwargs: Any
    ) -> None:
        self.net = net
        self.train_loader = train_loader
        self.loss_function = loss_function
        self.kwargs = kwargs
        self.result: RangeTestResult | None = None

    def update(self) -> RangeTestResult:
        from lrexp.engine.rangetest import range_test

        self.result = range_test(self.net, self.train_loader, self.loss_function, **self.kwargs)
        return self.result

    def _figure(self, ax=None):
        if self.result is None:
            raise RuntimeError("No curve yet: call update() to run the range test first.")
        from lrexp.plotting import plot

        return plot(self.result, ax)

    def plotshow(self) -> None:
        """Show the plot in a window (pyplot's current backend; nothing happens headless)."""
        import matplotlib.pyplot as plt

        self._figure(plt.figure(figsize=(7, 4.5), layout="constrained").add_subplot())
        plt.show()

    def save(self, path: str | Path = "result.jpg") -> Path:
        from lrexp.plotting import save_figure

        return save_figure(self._figure(), path)

    @property
    def lrs(self):
        return None if self.result is None else self.result.lrs

    @property
    def losses(self):
        return None if self.result is None else self.result.losses
