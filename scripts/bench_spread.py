"""Does the seeds' spread say when a suggestion misses? Read off bench_suggest's saved curves.

``scripts/bench_suggest.py`` runs every case's range test with 3 seeds and trains a grid of LRs
for the ground truth. This script reads those 3 curves per case as a seeds sweep reads its jobs
(``RangeTestResult.of_repeats``): the median curve's default suggestion, whether it hits (its
val loss estimated from the grid, as ``bench_suggest --offline`` does), the IQR of the seeds'
own suggestions in decades, and the confidence verdict with the spread rule
(``SPREAD_HIGH_DECADES``). It prints one row per case, then the hit rate on each side of the
threshold and how many "high" verdicts hit.

    python scripts/bench_suggest.py          # ~14 min: writes outputs/bench_suggest.json
    python scripts/bench_spread.py           # seconds
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_suggest import estimated_val_loss, is_hit, load_results  # noqa: E402

from lrexp.engine.result import RangeTestResult  # noqa: E402
from lrexp.engine.suggest import SPREAD_HIGH_DECADES, suggest  # noqa: E402


def case_row(case: dict) -> dict:
    """The case's seeds read together: the median suggestion, its hit, the spread, the verdict."""
    best = min(case["grid"].values())
    start = {"pretrained": case["pretrained"], "momentum": case["momentum"]}  # as range_test
    curves = [RangeTestResult(np.asarray(t["lrs"]), np.asarray(t["losses"]),
                              np.asarray(t["losses"]), **start) for t in case["trials"]]
    median = RangeTestResult.of_repeats(curves)
    chosen = median.suggest()
    spread = median.suggestion_spread()

    def hits(lr: float | None) -> bool:
        return lr is not None and is_hit(estimated_val_loss(case["grid"], lr), best)

    return {"case": case["case"], "iqr": spread.iqr_decades, "range": spread.range_decades,
            "lr": chosen.lr, "best_lr": case["best_lr"], "hit": hits(chosen.lr),
            "seed_hits": sum(hits(suggest(c.lrs, c.losses, **start).lr) for c in curves),
            "seeds": len(curves), "confidence": chosen.confidence}


def report(rows: list[dict]) -> str:
    def fmt(value: float | None, digits: str = ".2f") -> str:
        return "—" if value is None else format(value, digits)

    lines = ["| case | IQR (decades) | range | median-curve LR | best grid LR | hit | seeds "
             "hitting alone | confidence |", "|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r["iqr"] is None, r["iqr"] or 0.0)):
        lines.append(f"| {row['case']} | {fmt(row['iqr'])} | {fmt(row['range'])} | "
                     f"{fmt(row['lr'], '.3g')} | {row['best_lr']:.3g} | "
                     f"{'yes' if row['hit'] else 'no'} | {row['seed_hits']}/{row['seeds']} | "
                     f"{row['confidence']} |")
    spread = [r for r in rows if r["iqr"] is not None]
    wide = [r for r in spread if r["iqr"] > SPREAD_HIGH_DECADES]
    narrow = [r for r in spread if r["iqr"] <= SPREAD_HIGH_DECADES]
    high = [r for r in rows if r["confidence"] == "high"]
    largest = max((r["iqr"] for r in spread), default=math.nan)
    lines += ["", f"threshold {SPREAD_HIGH_DECADES} decades: median curve hits "
              f"{sum(r['hit'] for r in narrow)}/{len(narrow)} at or below it, "
              f"{sum(r['hit'] for r in wide)}/{len(wide)} above it; largest IQR {largest:.2f}",
              f"'high' verdicts that hit: {sum(r['hit'] for r in high)}/{len(high)}; "
              f"median-curve hits {sum(r['hit'] for r in rows)}/{len(rows)} vs single seeds "
              f"{sum(r['seed_hits'] for r in rows)}/{sum(r['seeds'] for r in rows)}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("outputs/bench_suggest.json"),
                        help="bench_suggest.py's output")
    args = parser.parse_args()
    if not args.results.exists():
        sys.exit(f"{args.results} not found: run python scripts/bench_suggest.py first "
                 "(about 14 min), or pass --results PATH.")
    print(report([case_row(case) for case in load_results(args.results)]))


if __name__ == "__main__":
    main()
