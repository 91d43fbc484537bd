"""lrexp: learning-rate range tests for PyTorch.

The public names are imported lazily, so ``python -m lrexp --help`` (and anything else that only
needs the package) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "CyclicSettings", "OneCycleSettings", "RangeTestResult", "ScheduleBoundsError", "Suggestion",
    "lr_finder", "plot", "range_test",
]

_LAZY = {
    "range_test": "lrexp.engine.rangetest",
    "RangeTestResult": "lrexp.engine.result",
    "Suggestion": "lrexp.engine.suggest",
    "OneCycleSettings": "lrexp.engine.training_schedules",
    "CyclicSettings": "lrexp.engine.training_schedules",
    "ScheduleBoundsError": "lrexp.engine.training_schedules",
    "plot": "lrexp.plotting",
    "lr_finder": "lrexp.finder",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from lrexp.engine.rangetest import range_test
    from lrexp.engine.result import RangeTestResult
    from lrexp.engine.suggest import Suggestion
    from lrexp.engine.training_schedules import (
        CyclicSettings,
        OneCycleSettings,
        ScheduleBoundsError,
    )
    from lrexp.finder import lr_finder
    from lrexp.plotting import plot


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lrexp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
