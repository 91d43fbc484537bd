"""Plots of range-test curves. Figures are built without pyplot, so they render headless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lrexp.result import RangeTestResult
from lrexp.suggest import METHODS

__all__ = ["plot", "plot_overlay", "plot_schedule", "save_figure"]

_MARKERS = {"default": ("*", "tab:red", 14), "steepest": ("o", "tab:orange", 7),
            "minimum": ("s", "tab:green", 7), "valley": ("D", "tab:purple", 7)}


def plot(result: RangeTestResult, ax: Axes | None = None, *, title: str | None = None) -> Figure:
    """The curve: raw and smoothed loss against LR, suggestions marked, diverged tail shaded."""
    if ax is None:
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    lrs, raw, smoothed = result.lrs, result.losses, result.smoothed
    if len(lrs) == 0:
        ax.text(0.5, 0.5, "empty curve", ha="center", va="center", transform=ax.transAxes)
        return fig
    ax.plot(lrs, raw, color="tab:blue", alpha=0.3, linewidth=1, label=f"{result.loss_kind} loss")
    ax.plot(lrs, smoothed, color="tab:blue", linewidth=2, label=f"smoothed (β={result.beta})")
    if result.schedule == "exp":
        ax.set_xscale("log")

    default = result.suggest("default")
    for name in ["default", *METHODS]:
        suggestion = default if name == "default" else result.suggest(name)
        if suggestion.lr is None:
            continue
        marker, color, size = _MARKERS.get(name, ("o", "gray", 7))
        y = float(np.interp(np.log(suggestion.lr), np.log(lrs), smoothed))
        ax.plot([suggestion.lr], [y], marker=marker, color=color, markersize=size, linestyle="",
                label=f"{suggestion.method}: {suggestion.lr:.2e}")

    if result.diverged_lr is not None and result.best_index is not None:
        ax.axvspan(lrs[result.best_index], lrs[-1], color="tab:red", alpha=0.08,
                   label=f"{result.stop_reason} at {result.diverged_lr:.2e}")
        ax.plot([lrs[-1]], [np.nanmax(smoothed[-1:]) if np.isfinite(smoothed[-1]) else
                            np.nanmax(smoothed)], marker="x", color="tab:red", markersize=10)
    _set_useful_ylim(ax, raw, smoothed)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(title or f"LR range test ({result.stop_reason}, {len(result)} points)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _set_useful_ylim(ax: Axes, raw: np.ndarray, smoothed: np.ndarray) -> None:
    """Keep the descent readable: an exploding tail would squash it to a flat line."""
    finite_smooth = smoothed[np.isfinite(smoothed)]
    finite_raw = raw[np.isfinite(raw)]
    if not len(finite_smooth):
        return
    best = int(np.argmin(finite_smooth))
    start_level = float(np.max(finite_smooth[: best + 1]))
    low = float(min(finite_raw.min(initial=np.inf), finite_smooth.min()))
    span = max(start_level - low, 1e-12)
    ax.set_ylim(low - 0.05 * span, start_level + 0.5 * span)


def plot_overlay(results: dict[str, RangeTestResult]) -> Figure:
    """Every curve's smoothed loss on one log-x axes, each with its default suggestion."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    colors = iter(_palette(len(results)))
    for label, result in results.items():
        if not len(result):
            continue
        color = next(colors)
        ax.plot(result.lrs, result.smoothed, color=color, linewidth=1.8, label=label)
        suggestion = result.suggest("default")
        if suggestion.lr is not None:
            y = float(np.interp(np.log(suggestion.lr), np.log(result.lrs), result.smoothed))
            ax.plot([suggestion.lr], [y], marker="*", markersize=13, color=color,
                    markeredgecolor="black", linestyle="")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    ax.set_title("LR range tests (★ = suggested LR)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    low = min((np.nanmin(r.smoothed) for r in results.values() if len(r)), default=0.0)
    high = max((np.nanmax(r.smoothed[: (r.best_index or 0) + 1]) for r in results.values()
                if len(r)), default=1.0)
    if np.isfinite(low) and np.isfinite(high) and high > low:
        ax.set_ylim(low - 0.05 * (high - low), high + 0.5 * (high - low))
    return fig


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_schedule(result: RangeTestResult) -> Figure:
    """LR against iteration (the original toy demo's second plot)."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(np.arange(len(result)), result.lrs, marker=".", linewidth=1)
    if result.schedule == "exp":
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{result.schedule} schedule, {len(result)} points")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig``; the format follows the extension (.png, .jpg, .pdf, .svg, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
