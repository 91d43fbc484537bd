"""A run's results in its run dir and on the console: the curve, summary.json and plots written,
the summary printed, errors said in one paragraph."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lrexp.engine.suggest import REGIMES
from lrexp.run.files import CURVE_FILE, PLOT_FILE, SCHEDULE_PLOT_FILE, SUMMARY_FILE
from lrexp.run.summary import RunSummary

__all__ = ["report_error", "summary_text", "write_files"]

log = logging.getLogger(__name__)


def write_files(result: Any, summary: RunSummary, out_dir: Path, files: dict[str, Path]) -> None:
    """curve.csv, summary.json and the two plots; ``files`` gains each one as it is written, so
    a failure half-way still knows what exists."""
    from lrexp.plotting import plot, plot_schedule, save_figure

    files["curve"] = result.to_csv(out_dir / CURVE_FILE)
    if result.repeats:  # to_csv wrote each repeat's curve beside the median's
        files["repeats"] = result.repeats_path(files["curve"])
    files["summary"] = summary.write(out_dir / SUMMARY_FILE)
    title = f"{summary.net} / {summary.dataset} / {summary.optimizer} ({result.stop_reason})"
    files["plot"] = save_figure(plot(result, title=title), out_dir / PLOT_FILE)
    files["schedule"] = save_figure(plot_schedule(result), out_dir / SCHEDULE_PLOT_FILE)


def report_error(message: str) -> None:
    """One ``lrexp: error:`` paragraph, in the log and on the console (once)."""
    message = f"lrexp: error: {message}"
    log.error(message)
    if not _logs_reach_the_console():
        sys.stderr.write(message + "\n")


def _logs_reach_the_console() -> bool:
    return any(
        isinstance(handler, logging.StreamHandler)
        and getattr(handler, "stream", None) in (sys.stderr, sys.stdout)
        for handler in logging.getLogger().handlers
    )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _schedule_lines(summary: RunSummary) -> list[str]:
    """One line per training schedule the curve gave bounds for (``OneCycleLR: max_lr=...``)."""
    schedules = summary.schedules()
    if not schedules:
        return ["  training schedules: none, the curve gives no bounds (see why above)"]
    return [f"  {settings}" for settings in schedules.values()]


def _repeats_line(summary: RunSummary) -> list[str]:
    """How many repeats the curve is the median of, and how far their suggestions spread."""
    if summary.repeats <= 1:
        return []
    iqr, full = summary.suggested_lr_iqr_decades, summary.suggested_lr_range_decades
    spread = ("no spread: fewer than two repeats gave a suggestion" if iqr is None or
              full is None else f"suggested LR spread {iqr:.2g} decades (IQR), {full:.2g} "
              "(min to max)")
    each = ", ".join(_fmt(lr) for lr in summary.repeat_suggested_lrs)
    return [f"  median of {summary.repeats} repeats; {spread}; per repeat: {each}"]


def _regime_line(summary: RunSummary) -> list[str]:
    """Which regime the suggestion assumed, and the weights that made it so."""
    if not summary.regime:
        return []
    source = f" (weights: {summary.weights})" if summary.weights else ""
    # the from-scratch default reads it (lrexp.engine.suggest.NO_MOMENTUM_FACTOR)
    raised = summary.momentum is False and summary.regime == REGIMES[0]
    optimizer = "; the optimizer keeps no momentum" if raised else ""
    return [f"  assumed: {summary.regime}{source}{optimizer}"]


def summary_text(summary: RunSummary, files: Mapping[str, Path], out_dir: Path) -> str:
    """The console's account of a finished run."""
    suggestions = "   ".join(f"{name} {_fmt(lr)}" for name, lr in summary.suggestions.items())
    interval = summary.interval
    lines = [
        f"LR range test: {summary.net} on {summary.dataset} with {summary.optimizer}, "
        f"{summary.steps} LR points on {summary.device} in {summary.seconds or 0:.1f} s"
        f"{', verify included' if summary.verification is not None else ''} ({summary.status})",
        f"  suggested LR ({summary.default_method}): {_fmt(summary.suggested_lr)}   "
        f"confidence: {summary.confidence}"
        + (f", supported {_fmt(interval[0])} – {_fmt(interval[1])}" if interval else ""),
        *_repeats_line(summary),
        f"  why: {summary.confidence_reason}",
        *_regime_line(summary),
        f"  by method:    {suggestions}",
        f"  min loss {_fmt(summary.min_loss)} at LR {_fmt(summary.lr_at_min_loss)}; "
        f"diverged at LR {_fmt(summary.diverged_lr)}",
        *_schedule_lines(summary),
    ]
    probe = summary.verification
    if probe is not None:
        losses = ", ".join(f"{_fmt(p.lr)} → {_fmt(p.loss)}" for p in probe.probes)
        curve_seconds = max((summary.seconds or 0) - probe.seconds, 1e-9)
        lines.append(
            f"  verify: {len(probe.probes)} probes × {probe.steps_per_probe} steps in "
            f"{probe.seconds:.1f} s ({probe.seconds / curve_seconds:.1f}x the range "
            f"test's {curve_seconds:.1f} s); {probe.loss_kind} loss by LR: {losses}")
    lines.append(f"  files in {out_dir}: {', '.join(path.name for path in files.values())}")
    return "\n".join(lines)
