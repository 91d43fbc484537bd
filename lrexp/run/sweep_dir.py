"""A sweep dir read back: its jobs' summary rows in job order, their curves, their overrides and
seeds (from the files each job's run dir holds), and the sweep's summary table as CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lrexp.run.files import CONFIG_FILE, CURVE_FILE, HYDRA_DIR
from lrexp.run.summary import COLUMNS, SUMMARY_FILE, RunSummary

__all__ = ["SweepJobs", "collect_jobs", "job_overrides", "seed_of", "seeds_vary", "swept_settings",
           "write_summary_csv"]

SEED_KEY = "seed"  # the app's seed setting


@dataclass
class SweepJobs:
    """A sweep dir's jobs, each file read once."""

    rows: list[dict[str, Any]]
    curves: dict[str, Any]  # job -> RangeTestResult, for jobs with a curve.csv
    overrides: dict[str, list[str]]  # job -> its overrides (job_overrides)


def collect_jobs(sweep_dir: Path) -> SweepJobs:
    """The jobs of a sweep dir; a job whose summary.json cannot be read is listed with the
    reason as its error."""
    from lrexp.engine.result import RangeTestResult

    rows, curves = [], {}
    summary_files = sorted(sweep_dir.glob(f"*/{SUMMARY_FILE}"), key=_job_number)
    overrides = job_overrides([path.parent for path in summary_files])
    swept = swept_settings(overrides)
    for summary_file in summary_files:
        job = summary_file.parent.name
        try:
            summary = RunSummary.read(summary_file)
        except (OSError, ValueError) as error:
            summary = RunSummary(status="unreadable", error=f"{summary_file}: {error}")
        rows.append({**summary.row(job), "swept": swept[job] or None})
        curve_file = summary_file.parent / CURVE_FILE
        if curve_file.exists():
            curves[job] = RangeTestResult.from_csv(curve_file)
    return SweepJobs(rows, curves, overrides)


def job_overrides(job_dirs: list[Path]) -> dict[str, list[str]]:
    """Each job's overrides ("seed=3") from its ``.hydra/overrides.yaml``; none where Hydra
    wrote no record (``hydra.output_subdir=null``)."""
    overrides: dict[str, list[str]] = {}
    for job_dir in job_dirs:
        try:
            record = yaml.safe_load((job_dir / HYDRA_DIR / "overrides.yaml").read_text())
        except (OSError, ValueError, yaml.YAMLError):
            record = None
        overrides[job_dir.name] = [str(o) for o in record] if isinstance(record, list) else []
    return overrides


def swept_settings(overrides: dict[str, list[str]]) -> dict[str, str]:
    """Each job's overrides (``job_overrides``) that not every job shares
    ("optimizer.weight_decay=0.0001"); "" where a job has none or Hydra wrote no record."""
    recorded = [set(own) for own in overrides.values() if own]
    shared = set.intersection(*recorded) if recorded else set()
    return {job: " ".join(o for o in own if o not in shared) for job, own in overrides.items()}


def seed_of(override: str) -> str | None:
    """The value of a ``seed=`` override (``+seed=`` and ``++seed=`` too); None for others."""
    key, _, value = override.lstrip("+").partition("=")
    return value if key == SEED_KEY else None


def seeds_vary(job_overrides: dict[str, list[str]], sweep_dir: Path) -> bool:
    """Whether the sweep's jobs ran with more than one seed: from their overrides, else (Hydra
    wrote no record) from the seed in each job's config.yaml."""
    seeds = set()
    for job, overrides in job_overrides.items():
        found = [seed for seed in map(seed_of, overrides) if seed is not None]
        if not overrides:
            try:
                config = yaml.safe_load((sweep_dir / job / CONFIG_FILE).read_text())
                found = [str(config.get(SEED_KEY))] if isinstance(config, dict) else []
            except (OSError, yaml.YAMLError):
                found = []
        seeds.update(found)
    return len(seeds) > 1


def _job_number(path: Path) -> tuple[int, str]:
    head = path.parent.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, path.parent.name)


def write_summary_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path
