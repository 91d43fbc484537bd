"""A curve file read strictly, as ``RangeTestResult.to_csv`` writes one: for a file from
anywhere (``RangeTestResult.from_csv(path, strict=True)``, ``python -m lrexp.tracking.import_run``).

Every row is checked: whole numbers before ``lr``, a finite lr > 0, then numbers (a loss may be
NaN or inf: a diverged test ends so). A crash mid-write may cut a curve's last row: that one is
dropped with a warning. A repeats file must hold repeats 0..n-1, each one's steps 0, 1, 2, ...,
whose median is exactly the curve (a stale or planted file is not). Of the settings line only
the stop reason is read.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import numpy as np

from lrexp.engine.repeats import median_curve
from lrexp.engine.settings import STOP_REASONS

__all__ = ["CURVE_COLUMNS", "META_PREFIX", "REPEAT_COLUMNS", "START_FLAGS", "CurveFileError",
           "read_rows", "repeat_curves", "start_flags", "stop_reason"]

log = logging.getLogger(__name__)

# A comment line with the settings as JSON, then a header and one row per step.
CURVE_COLUMNS = ("step", "lr", "loss", "loss_smooth")
# Each repeat's curve, one row per repeat and step, beside the median curve's file
REPEAT_COLUMNS = ("repeat", *CURVE_COLUMNS)
META_PREFIX = "# lrexp "

Row = tuple[float, ...]


class CurveFileError(ValueError):
    """A curve file unlike what ``to_csv`` writes; the message says where and what, and
    ``repeats`` whether it is the repeats file."""

    def __init__(self, problem: str, repeats: bool = False) -> None:
        super().__init__(problem)
        self.repeats = repeats


def read_rows(text: str, columns: tuple[str, ...], last_row_may_be_cut: bool = False
              ) -> list[Row]:
    """Every row of a curve file's ``text`` with the header ``columns``, each row's values in
    that order; a cut last row is dropped where ``last_row_may_be_cut``, else refused."""
    repeats = columns == REPEAT_COLUMNS
    lines = text.splitlines(keepends=True)
    first = 1 if lines and lines[0].startswith("#") else 0
    if len(lines) <= first:
        raise CurveFileError("is empty: the run recorded no step", repeats)
    header = lines[first].strip()
    if tuple(header.split(",")) != columns:
        raise CurveFileError(f"is not an lrexp curve file: line {first + 1} is {_shown(header)}, "
                             f"expected the header {','.join(columns)}", repeats)
    rows: list[Row] = []
    for number in range(first + 1, len(lines)):
        line, cut_allowed = lines[number], last_row_may_be_cut and number == len(lines) - 1
        try:
            rows.append(_row(line, columns, check_end=cut_allowed))
        except ValueError as error:
            if not cut_allowed:
                raise CurveFileError(
                    f"line {number + 1} is not a step: {_shown(line.strip())} ({error}); only "
                    "the last line may be cut by a crash", repeats) from None
            log.warning("Dropped the last line %s, cut mid-write (%s); reading the %d complete "
                        "rows.", _shown(line.strip()), error, len(rows))
    if not rows:
        raise CurveFileError("has a header but no complete row: the run stopped before its "
                             "first step", repeats)
    return rows


def _row(line: str, columns: tuple[str, ...], check_end: bool) -> Row:
    """One line's values; ValueError says what is wrong with it."""
    if check_end and not line.endswith(("\n", "\r")):
        raise ValueError("no line end")
    fields = line.strip().split(",")
    if len(fields) != len(columns):
        raise ValueError(f"{len(fields)} fields, expected {len(columns)}")
    counted = columns.index("lr")  # step (and repeat) come first
    for name, field in zip(columns[:counted], fields, strict=False):
        if not field.isdigit():
            raise ValueError(f"{name} {field!r} is not a whole number >= 0")
    numbers = [float(field) for field in fields[counted:]]  # a ValueError names the field
    if not (math.isfinite(numbers[0]) and numbers[0] > 0):
        raise ValueError(f"lr {numbers[0]!r} is not a finite number > 0")
    return (*(float(field) for field in fields[:counted]), *numbers)


def repeat_curves(rows: list[Row], lrs: np.ndarray, losses: np.ndarray) -> list[np.ndarray]:
    """Each repeat's (lr, loss, loss_smooth) columns from a repeats file's rows, checked to be
    repeats 0..n-1 with steps 0, 1, 2, ... whose median is the curve ``lrs``, ``losses``."""
    curves: dict[int, list[Row]] = {}
    for repeat, step, *values in rows:
        steps = curves.setdefault(int(repeat), [])
        if int(step) != len(steps):
            raise CurveFileError(f"has step {int(step)} of repeat {int(repeat)} out of order "
                                 f"({len(steps)} steps before it)", repeats=True)
        steps.append(tuple(values))
    if sorted(curves) != list(range(len(curves))):
        raise CurveFileError(f"holds repeats {sorted(curves)}, not 0 to {len(curves) - 1}",
                             repeats=True)
    columns = [np.array(curves[index], dtype=np.float64).T for index in range(len(curves))]
    try:
        band = median_curve([c[0] for c in columns], [c[1] for c in columns])
    except ValueError as error:
        raise CurveFileError(f"does not hold repeats of one test ({error})", True) from None
    if len(band.median) != len(losses) or not (
            np.allclose(band.lrs, lrs, rtol=1e-9, atol=0) and np.allclose(
                band.median, np.where(np.isnan(losses), np.inf, losses), rtol=1e-9, atol=0)):
        raise CurveFileError(f"does not match the curve: the median of its {len(columns)} "
                             "repeats has other LRs or losses", repeats=True)
    return columns


def _settings_line(text: str) -> dict[str, Any]:
    """A curve file's settings line as a dict; empty where there is none or it is not JSON."""
    first = text.split("\n", 1)[0]
    if not first.startswith(META_PREFIX):
        return {}
    try:
        settings = json.loads(first[len(META_PREFIX):])
    except (ValueError, RecursionError):
        return {}
    return settings if isinstance(settings, dict) else {}


def stop_reason(text: str) -> str:
    """The stop reason in a curve file's settings line; "completed" where it says none."""
    reason = _settings_line(text).get("stop_reason")
    return reason if reason in STOP_REASONS else "completed"


# What the suggestion reads of how the test started (RangeTestResult's fields of those names).
START_FLAGS = ("pretrained", "momentum")


def start_flags(text: str) -> dict[str, Any]:
    """The START_FLAGS a curve file's settings line holds as booleans (others are ignored)."""
    settings = _settings_line(text)
    return {name: settings[name] for name in START_FLAGS
            if isinstance(settings.get(name), bool)}


def _shown(text: str, limit: int = 60) -> str:
    shown = json.dumps(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
