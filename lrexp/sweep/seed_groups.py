"""A sweep's seeds read together: jobs that differ only in ``seed`` are repeats of one test.

``sweep=seeds`` (or any sweep with several ``seed=`` values) runs one test with several seeds.
Their curves share one LR grid, so the sweep's end reads them the way ``range_test(...,
repeats=k)`` reads its repeats (``RangeTestResult.of_repeats``): the median curve and its
interquartile band, the suggestion read off the median, and how far the seeds' own suggestions
spread, which caps the confidence when they disagree. Jobs that also differ in something else
(``net=mlp,simple_cnn``) form one group per setting. Only jobs that ran their course count; a
group needs two of them.

Each group is written to ``<sweep dir>/seeds/`` (``seeds_<setting>/`` with several groups):
curve.csv (the median), curve_repeats.csv (each seed's curve), summary.json and plot.png.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrexp.tracking.summary import SUMMARY_FILE, RunSummary

if TYPE_CHECKING:
    from lrexp.engine.result import RangeTestResult

__all__ = ["SEED_OVERRIDE", "SeedGroup", "describe_group", "seed_groups", "write_group"]

log = logging.getLogger(__name__)

SEED_OVERRIDE = "seed="  # the app's seed setting, as an override in .hydra/overrides.yaml


@dataclass
class SeedGroup:
    """Jobs of one setting run with different seeds, and their median result."""

    name: str  # "seeds", or "seeds_<setting>" with several groups: its folder in the sweep dir
    setting: str  # the overrides its jobs share that other groups' jobs do not; "" with one group
    jobs: list[str]
    seeds: list[str]
    result: RangeTestResult
    summary: RunSummary
    files: dict[str, Path] = field(default_factory=dict)  # write_group's, by kind


def seed_groups(job_overrides: dict[str, list[str]], rows: list[dict[str, Any]],
                sweep_dir: Path, counted_statuses: set[str]) -> list[SeedGroup]:
    """The groups of jobs (named as in ``rows``, each with its overrides) that differ only in
    their seed, among jobs whose status is in ``counted_statuses`` and whose curve is on disk."""
    from lrexp.engine.result import RangeTestResult

    members: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for row in rows:
        job, overrides = row["job"], job_overrides.get(row["job"], [])
        seeds = [o[len(SEED_OVERRIDE):] for o in overrides if o.startswith(SEED_OVERRIDE)]
        if len(seeds) != 1 or row.get("status") not in counted_statuses or \
                not (sweep_dir / job / "curve.csv").is_file():
            continue
        key = tuple(sorted(o for o in overrides if not o.startswith(SEED_OVERRIDE)))
        members.setdefault(key, []).append((job, seeds[0]))
    groups = {key: jobs for key, jobs in members.items() if len({s for _, s in jobs}) > 1}
    shared = set.intersection(*(set(key) for key in groups)) if groups else set()
    found = []
    for key, jobs in groups.items():
        setting = " ".join(o for o in key if o not in shared)
        name = "seeds" if len(groups) == 1 else f"seeds_{_slug(setting)}"
        try:
            curves = [RangeTestResult.from_csv(sweep_dir / job / "curve.csv") for job, _ in jobs]
            result = RangeTestResult.of_repeats(curves)
        except (OSError, ValueError) as error:  # e.g. a job's max_lr differs: not one grid
            log.warning("The seeds of %s are not read together: %s", setting or "the sweep", error)
            continue
        first = RunSummary.read(sweep_dir / jobs[0][0] / SUMMARY_FILE)
        seconds = sum(RunSummary.read(sweep_dir / job / SUMMARY_FILE).seconds or 0.0
                      for job, _ in jobs)
        summary = RunSummary.of_result(
            result, {"net": first.net, "dataset": first.dataset, "optimizer": first.optimizer},
            seconds=seconds, device=first.device)
        found.append(SeedGroup(name, setting, [job for job, _ in jobs],
                               [seed for _, seed in jobs], result, summary))
    return found


def write_group(group: SeedGroup, sweep_dir: Path) -> dict[str, Path]:
    """The group's median curve, each seed's curve, its summary and plot, in its folder."""
    from lrexp.plotting import plot, save_figure

    folder = sweep_dir / group.name
    folder.mkdir(exist_ok=True)
    curve = group.result.to_csv(folder / "curve.csv")
    title = f"Median of seeds {', '.join(group.seeds)}" + \
        (f" ({group.setting})" if group.setting else "")
    return {"curve": curve, "repeats": group.result.repeats_path(curve),
            "summary": group.summary.write(folder / SUMMARY_FILE),
            "plot": save_figure(plot(group.result, title=title), folder / "plot.png")}


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
    """A setting as a folder and MLflow metric prefix ("net=mlp" -> "net_mlp")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", setting).strip("_") or "group"
