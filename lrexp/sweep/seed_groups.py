"""A sweep's seeds read together: jobs that differ only in ``seed`` are repeats of one test,
read as ``range_test(..., repeats=k)`` reads its repeats (``RangeTestResult.of_repeats``). One
group per other setting, of jobs that ran their course (two at least), written to
``<sweep dir>/seeds/`` (``seeds_<setting>/`` with several groups).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrexp.run.summary import SUMMARY_FILE, RunSummary, SeedGroup
from lrexp.run.sweep_dir import seed_of

if TYPE_CHECKING:
    from lrexp.engine.result import RangeTestResult

__all__ = ["GROUP_SUMMARY", "SeedGroup", "describe_group", "seed_groups", "write_group"]

log = logging.getLogger(__name__)

GROUP_SUMMARY = "median_summary.json"  # not summary.json: the folder is no job of the sweep
MAX_SLUG = 40  # characters of a setting kept in a group's folder and metric prefix


def seed_groups(job_overrides: dict[str, list[str]], rows: list[dict[str, Any]],
                curves: dict[str, RangeTestResult], sweep_dir: Path,
                counted_statuses: Collection[str]) -> list[SeedGroup]:
    """The groups of jobs with a curve and a counted status that differ only in their seed."""
    members = _members(job_overrides, rows, curves, counted_statuses)
    shared = set.intersection(*(set(key) for key in members)) if members else set()
    groups: list[SeedGroup] = []
    names: set[str] = set()
    for key, jobs in members.items():
        setting = " ".join(o for o in key if o not in shared)
        name = "seeds" if len(members) == 1 else f"seeds_{_slug(setting)}"
        if name in names:  # another group's setting gave the same slug
            name += f"_{_digest(setting)}"
        group = _read_group(name, setting, jobs, curves, sweep_dir)
        if group is not None:
            groups.append(group)
            names.add(name)
    return groups


def _members(job_overrides: dict[str, list[str]], rows: list[dict[str, Any]],
             curves: dict[str, RangeTestResult],
             counted_statuses: Collection[str]) -> dict[tuple[str, ...], list[tuple[str, str]]]:
    """(job, seed) lists by the overrides besides the seed, where more than one seed ran."""
    members: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for row in rows:
        job, overrides = row["job"], job_overrides.get(row["job"], [])
        seeds = [seed for seed in map(seed_of, overrides) if seed is not None]
        if len(seeds) != 1 or row.get("status") not in counted_statuses or job not in curves:
            continue
        key = tuple(sorted(o for o in overrides if seed_of(o) is None))
        members.setdefault(key, []).append((job, seeds[0]))
    return {key: jobs for key, jobs in members.items() if len({s for _, s in jobs}) > 1}


def _read_group(name: str, setting: str, jobs: list[tuple[str, str]],
                curves: dict[str, RangeTestResult], sweep_dir: Path) -> SeedGroup | None:
    """The jobs' curves as repeats of one test (each keeps its job and seed); None, with a
    warning, when they cannot be (the seeds ran on different LR grids, a summary is unreadable)."""
    from lrexp.engine.result import RangeTestResult

    try:
        result = RangeTestResult.of_repeats([
            replace(curves[job], extra={**curves[job].extra, "job": job, "seed": seed})
            for job, seed in jobs])  # job and seed go into curve_repeats.csv's record
        summaries = [RunSummary.read(sweep_dir / job / SUMMARY_FILE) for job, _ in jobs]
    except (OSError, ValueError) as error:  # e.g. a job's max_lr differs: not one grid
        log.warning("The seeds of %s are not read together: %s", setting or "the sweep", error)
        return None
    first = summaries[0]
    summary = RunSummary.of_result(
        result, {"net": first.net, "dataset": first.dataset, "optimizer": first.optimizer},
        seconds=sum(s.seconds or 0.0 for s in summaries), device=first.device)
    return SeedGroup(name, setting, [job for job, _ in jobs], [seed for _, seed in jobs],
                     result, summary)


def write_group(group: SeedGroup, sweep_dir: Path) -> SeedGroup:
    """The group with its files (its curves, summary and plot) written in its folder."""
    from lrexp.plotting import plot, save_figure

    folder = sweep_dir / group.name
    folder.mkdir(exist_ok=True)
    curve = group.result.to_csv(folder / "curve.csv")
    title = f"Median of seeds {', '.join(group.seeds)}" + \
        (f" ({group.setting})" if group.setting else "")
    return replace(group, files={
        "curve": curve, "repeats": group.result.repeats_path(curve),
        "summary": group.summary.write(folder / GROUP_SUMMARY),
        "plot": save_figure(plot(group.result, title=title), folder / "plot.png")})


def describe_group(group: SeedGroup) -> str:
    """The group on one line: what its median curve suggests and how far the seeds spread."""
    summary = group.summary
    where = f" ({group.setting})" if group.setting else ""
    iqr, full = summary.suggested_lr_iqr_decades, summary.suggested_lr_range_decades
    spread = ("fewer than two seeds gave a suggestion" if iqr is None or full is None else
              f"the seeds' own suggestions spread {iqr:.2g} decades (IQR), {full:.2g} "
              "(min to max)")
    suggested = "no suggestion" if summary.suggested_lr is None else \
        f"suggested LR {summary.suggested_lr:.3g} (confidence {summary.confidence})"
    return (f"Seeds {', '.join(group.seeds)}{where}: the median curve gives {suggested}; "
            f"{spread}. Files: {group.name}/")


def _slug(setting: str) -> str:
    """A setting as a folder and metric prefix ("net=mlp" -> "net_mlp"), hashed past MAX_SLUG."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", setting).strip("_") or "group"
    if len(slug) > MAX_SLUG:
        slug = f"{slug[:MAX_SLUG - 9]}_{_digest(setting)}"
    return slug


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]
