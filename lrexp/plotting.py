"""Plots of range-test curves. Figures are built without pyplot, so they render headless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lrexp.engine.result import RangeTestResult
from lrexp.engine.suggest import METHODS

__all__ = ["plot", "plot_overlay", "plot_probes", "plot_schedule", "save_figure"]

_MARKERS = {"default": ("*", "tab:red", 14), "edge": ("^", "tab:brown", 8),
            "steepest": ("o", "tab:orange", 7), "minimum": ("s", "tab:green", 7),
            "valley": ("D", "tab:purple", 7), "descent": ("v", "tab:cyan", 8)}


def plot(result: RangeTestResult, ax: Axes | None = None, *, title: str | None = None) -> Figure:
    """The curve as the rules read it: raw loss, the zero-lag smoothing, every suggestion, the
    interval the curve supports (shaded) and where the test stopped. With a verify probe and
    no ``ax`` given, a second panel shows the probes' short trainings. With repeats, the curve
    is their median: each repeat's smoothed loss is drawn faintly, and the band between the
    25th and 75th percentile of their losses is shaded around it."""
    fig, ax = _curve_axes(result, ax)
    lrs, raw, trend = result.lrs, result.losses, result.zero_lag
    if len(lrs) == 0:
        ax.text(0.5, 0.5, "empty curve", ha="center", va="center", transform=ax.transAxes)
        return fig
    if result.repeats:
        _draw_repeats(ax, result)
    what = f"median {result.loss_kind} loss" if result.repeats else f"{result.loss_kind} loss"
    ax.plot(lrs, raw, color="tab:blue", alpha=0.3, linewidth=1, label=what)
    ax.plot(lrs, result.smoothed, color="tab:gray", linewidth=1, linestyle=":",
            label=f"online EMA (β={result.beta}, stopping rule)")
    ax.plot(lrs, trend, color="tab:blue", linewidth=2, label="zero-lag smoothing (rules read it)")
    if result.range_schedule == "exp":
        _log_axis(ax, "x")

    default = result.suggest("default")
    if default.interval is not None:
        ax.axvspan(*default.interval, color="tab:green", alpha=0.1,
                   label=f"supported: {default.interval[0]:.2g} – {default.interval[1]:.2g}")
    _mark_suggestions(ax, result, default)
    _mark_divergence(ax, result)
    _set_useful_ylim(ax, raw, trend)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title((title or f"LR range test ({result.stop_reason}, {len(result)} points)")
                 + f" · confidence {default.confidence}",
                 color=_CONFIDENCE_COLORS[default.confidence])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _curve_axes(result: RangeTestResult, ax: Axes | None) -> tuple[Figure, Axes]:
    """The figure and the axes the curve goes into: ``ax``'s, else a new figure (with a panel
    of the verify probes beside the curve's where the test ran them)."""
    if ax is not None:
        root = ax.get_figure(root=True)
        if root is None:
            raise ValueError("plot(ax=...) needs an Axes that belongs to a Figure")
        return root, ax
    probes = result.verification.probes if result.verification is not None else []
    fig = _figure(12 if probes else 7, 4.5, panels=2 if probes else 1)
    axes = fig.subplots(1, 2, width_ratios=(3, 2)) if probes else [fig.add_subplot()]
    if probes:
        plot_probes(result, axes[1])
    return fig, axes[0]


def _draw_repeats(ax: Axes, result: RangeTestResult) -> None:
    """Each repeat's zero-lag smoothing, faint, and the interquartile band of their losses. A
    sweep's seed group names its curves by their jobs (lrexp.sweep.seed_groups): "seeds"."""
    noun = "seeds" if all("job" in repeat.extra for repeat in result.repeats) else "repeats"
    for index, repeat in enumerate(result.repeats):
        ax.plot(repeat.lrs, repeat.zero_lag, color="tab:cyan", alpha=0.45, linewidth=0.8,
                label=f"each of {len(result.repeats)} {noun} (smoothed)" if index == 0 else None)
    band = result.band
    if band is not None:
        finite = np.isfinite(band.q25) & np.isfinite(band.q75)
        ax.fill_between(band.lrs, np.where(finite, band.q25, np.nan),
                        np.where(finite, band.q75, np.nan), color="tab:blue", alpha=0.15,
                        linewidth=0, label=f"25th-75th percentile of the {noun}")


def _mark_divergence(ax: Axes, result: RangeTestResult) -> None:
    """Shade from where the loss blew up (the point the rules anchor on) to the end of the
    curve, and draw the stop as a vertical line: a line spans the y-axis, so an exploding last
    loss cannot push it out of view, and the x-limits end at the last LR tested."""
    last_lr = float(result.lrs[-1])
    if result.blowup_lr is not None and result.blowup_lr < last_lr:
        ax.axvspan(result.blowup_lr, last_lr, color="tab:red", alpha=0.08,
                   label=f"blew up from {result.blowup_lr:.2e}")
    if result.diverged_lr is not None:
        ax.axvline(result.diverged_lr, color="tab:red", linestyle="--", linewidth=1,
                   label=f"stopped ({result.stop_reason}) at {result.diverged_lr:.2e}")
    first_lr = float(result.lrs[0])
    if last_lr > first_lr:  # a margin on the axis's own scale, so the stop line stays inside
        pad = (last_lr / first_lr) ** 0.02 if ax.get_xscale() == "log" else None
        ax.set_xlim(*((first_lr / pad, last_lr * pad) if pad else
                      (first_lr - 0.02 * (last_lr - first_lr),
                       last_lr + 0.02 * (last_lr - first_lr))))


_CONFIDENCE_COLORS = {"high": "black", "low": "tab:orange", "none": "tab:red"}  # title colour


def _mark_suggestions(ax: Axes, result: RangeTestResult, default) -> None:
    finite = np.isfinite(result.zero_lag)
    log_lrs, trend = np.log(result.lrs[finite]), result.zero_lag[finite]
    for name in ["default", *METHODS]:
        suggestion = default if name == "default" else result.suggest(name)
        if suggestion.lr is None or not len(trend):
            continue
        marker, color, size = _MARKERS.get(name, ("o", "gray", 7))
        y = float(np.interp(np.log(suggestion.lr), log_lrs, trend))
        ax.plot([suggestion.lr], [y], marker=marker, color=color, markersize=size, linestyle="",
                label=f"{suggestion.method}: {suggestion.lr:.2e}")


def plot_probes(result: RangeTestResult, ax: Axes) -> None:
    """The verify probes: each candidate's training loss per step, the chosen one bold."""
    verification = result.verification
    if verification is None:
        raise ValueError("plot_probes needs a result from range_test(..., verify=True)")
    colors = _palette(len(verification.probes))
    for index, (probe, color) in enumerate(zip(verification.probes, colors)):
        chosen = index == verification.chosen
        ax.plot(np.arange(1, len(probe.losses) + 1), probe.losses, color=color,
                linewidth=2.5 if chosen else 1, alpha=1 if chosen else 0.7,
                label=f"{probe.lr:.2e} → {probe.loss:.3g}{'  ✓' if chosen else ''}")
    finite = [v for p in verification.probes for v in p.losses if np.isfinite(v)]
    if finite:
        low, high = min(finite), max(p.losses[0] for p in verification.probes)
        if np.isfinite(high) and high > low:
            ax.set_ylim(low - 0.05 * (high - low), high + 0.3 * (high - low))
    ax.set_xlabel("probe step")
    ax.set_ylabel("training loss")
    ax.set_title(f"verify: {len(verification.probes)} probes × {verification.steps} steps "
                 f"({verification.loss_kind} loss decides)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", title="LR → measured loss", title_fontsize="small")


def _set_useful_ylim(ax: Axes, raw: np.ndarray, smoothed: np.ndarray) -> None:
    """Keep the descent readable: an exploding tail would squash it to a flat line."""
    finite_smooth = smoothed[np.isfinite(smoothed)]
    if not len(finite_smooth):
        return
    best = int(np.argmin(finite_smooth))
    start_level = float(np.max(finite_smooth[: best + 1]))
    # the raw loss's lowest percentile, not its minimum: one lucky batch would stretch the axis
    low = float(min(np.percentile(raw[np.isfinite(raw)], 1), finite_smooth.min()))
    span = max(start_level - low, 1e-12)
    ax.set_ylim(low - 0.05 * span, start_level + 0.5 * span)


def plot_overlay(results: dict[str, RangeTestResult]) -> Figure:
    """Every curve's zero-lag smoothing on one log-x axes, each with its default suggestion."""
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    colors = iter(_palette(len(results)))
    lows, highs = [], []
    for label, result in results.items():
        trend = result.zero_lag
        finite = np.isfinite(trend)
        if not finite.any():
            continue
        color = next(colors)
        suggestion = result.suggest("default")
        ax.plot(result.lrs, trend, color=color, linewidth=1.8,
                label=f"{label} ({suggestion.confidence})")
        if suggestion.lr is not None:
            y = float(np.interp(np.log(suggestion.lr), np.log(result.lrs[finite]), trend[finite]))
            ax.plot([suggestion.lr], [y], marker="*", markersize=13, color=color,
                    markeredgecolor="black", linestyle="")
        best = int(np.nanargmin(trend))
        lows.append(float(trend[best]))
        highs.append(float(np.nanmax(trend[: best + 1])))
    _log_axis(ax, "x")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (zero-lag smoothing)")
    ax.set_title("LR range tests (★ = suggested LR; confidence in brackets)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    if lows and max(highs) > min(lows):
        low, high = min(lows), max(highs)
        ax.set_ylim(low - 0.05 * (high - low), high + 0.5 * (high - low))
    return fig


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_schedule(result: RangeTestResult) -> Figure:
    """LR against iteration (the original toy demo's second plot)."""
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    ax.plot(np.arange(len(result)), result.lrs, marker=".", linewidth=1)
    if result.range_schedule == "exp":
        _log_axis(ax, "y")
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{result.range_schedule} schedule, {len(result)} points")
    ax.grid(True, alpha=0.3)
    return fig


def _log_axis(ax: Axes, which: str) -> None:
    """A log scale with minor ticks at 2 and 5 of each decade, which matplotlib labels when the
    axis spans about a decade or less (a narrow LR range stays readable); two, not matplotlib's
    default eight: every tick is laid out and drawn on each save, and eight slow it noticeably."""
    from matplotlib.ticker import LogLocator

    if which == "x":
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(LogLocator(subs=(2, 5)))
    else:
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(LogLocator(subs=(2, 5)))


def _figure(width: float, height: float, panels: int = 1) -> Figure:
    """A figure with fixed margins, in inches, wide enough for the tick labels, axis labels and
    titles these plots draw: a layout engine measures every text on each save, which costs as
    much as drawing the plots."""
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.25 / width, bottom=0.6 / height,
                        top=1 - 0.45 / height, wspace=0.9 * panels / width)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig``; the format follows the extension (.png, .jpg, .pdf, .svg, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
