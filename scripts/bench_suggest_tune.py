"""Choosing the suggestion's rule and constants on the TUNING families of bench_suggest's saved
runs (no training: each LR's val loss is interpolated on the truth grid); the held-out hits
are shown only with --held-out, once every choice is made.

    python scripts/bench_suggest.py                             # writes outputs/bench_suggest.json
    python scripts/bench_suggest_tune.py outputs/bench_suggest.json
    python scripts/bench_suggest_tune.py outputs/bench_suggest.json --held-out   # after choosing

Each rule family has one constant, scanned on a grid; the best constant of each family on the
tuning split (ties: the median of the tied constants) is reported. Rules read the curve as
lrexp's rules do (zero-lag smoothing, the blow-up point).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_suggest import (  # noqa: E402
    PEER_RULES,
    fastai_minimum,
    hit,
    load_results,
    lrexp_rule,
    replay_verify,
)

from lrexp.engine.suggest import _readable_curve  # noqa: E402


def _curve(lrs, losses):
    curve = _readable_curve(lrs, losses)
    return None if isinstance(curve, str) else curve


def reads_curve(read):
    """A rule ``(lrs, losses, pretrained, momentum)`` from ``read(curve, lrs, losses)``: None
    where lrexp cannot read the curve."""
    def rule(lrs, losses, pretrained=False, momentum=True):
        c = _curve(lrs, losses)
        return None if c is None else read(c, lrs, losses)
    return rule


def edge(k):
    def read(c, lrs, losses):
        anchor = c.blowup_lr if c.blowup_lr is not None else float(c.lrs[c.best])
        return anchor / k
    return reads_curve(read)


def zl_minimum(k):
    return reads_curve(lambda c, lrs, losses: float(c.lrs[c.best]) / k)


def lower_of(k):
    """The lower of the zero-lag minimum / k and the blow-up / (3k)."""
    def read(c, lrs, losses):
        lr = float(c.lrs[c.best]) / k
        return lr if c.blowup_lr is None else min(lr, c.blowup_lr / (3 * k))
    return reads_curve(read)


def ema_minimum(k):
    def rule(lrs, losses, pretrained=False, momentum=True):
        lr = fastai_minimum(lrs, losses)
        return None if lr is None else lr * 10 / k
    return rule


def fall_point(fraction):
    """Where the zero-lag loss has made ``fraction`` of its fall from the start to the min."""
    def read(c, lrs, losses):
        best = c.best
        level = float(np.median(c.trend[: max(3, len(c.trend) // 10)]))
        fall = level - float(c.trend[best])
        if fall <= 0:
            return float(c.lrs[best])
        reached = np.flatnonzero(c.trend[: best + 1] <= level - fraction * fall)
        return float(c.lrs[int(reached[0]) if len(reached) else best])
    return reads_curve(read)


def _valley_lr(lrs, losses):
    from lrexp.engine.suggest import valley

    return valley(lrs, losses).lr


def lower_of_edge_and_valley(k):
    """The lower of the blow-up / k and fastai's valley (each alone when the other is None)."""
    def read(c, lrs, losses):
        found = [lr for lr in (_valley_lr(lrs, losses),
                               None if c.blowup_lr is None else c.blowup_lr / k) if lr]
        return min(found) if found else float(c.lrs[c.best]) / 2
    return reads_curve(read)


def valley_over(k):
    def rule(lrs, losses, pretrained=False, momentum=True):
        lr = _valley_lr(lrs, losses)
        return None if lr is None else lr / k
    return rule


def geometric_edge_valley(k):
    """The geometric mean of the blow-up / k and the valley."""
    def rule(lrs, losses, pretrained=False, momentum=True):
        c = _curve(lrs, losses)
        lr = _valley_lr(lrs, losses)
        if c is None or lr is None:
            return lr
        return lr if c.blowup_lr is None else math.sqrt(lr * c.blowup_lr / k)
    return rule


def median_of_three(k):
    """The (geometric) median of three readings that fail in different places: the blow-up /
    20, fastai's EMA minimum / 10 and the valley; divided by k."""
    def read(c, lrs, losses):
        readings = [lr for lr in (edge(20)(lrs, losses), fastai_minimum(lrs, losses),
                                  _valley_lr(lrs, losses)) if lr]
        return float(10 ** np.median(np.log10(readings))) / k if readings else None
    return reads_curve(read)


def geometric_edge_ema(k):
    """The geometric mean of the blow-up / 20 and fastai's EMA minimum / 10, divided by k."""
    def rule(lrs, losses, pretrained=False, momentum=True):
        readings = [lr for lr in (edge(20)(lrs, losses), fastai_minimum(lrs, losses)) if lr]
        return float(10 ** np.mean(np.log10(readings))) / k if readings else None
    return rule


def default_capped_at_valley(k):
    """From scratch the blow-up rule (``edge``), at most the descent's valley x k (the
    verdict's second reading, ``descent_valley_lr``): the engine's default with VALLEY_CAP = k.
    The cap starts from the uncapped rule: on the engine's default, capped already, any k above
    VALLEY_CAP would change nothing. Fine-tuning curves keep the engine's default (no cap)."""
    from lrexp.engine.suggest import descent_valley_lr

    default, uncapped = lrexp_rule("default"), lrexp_rule("edge")

    def rule(lrs, losses, pretrained=False, momentum=True):
        if pretrained:
            return default(lrs, losses, pretrained, momentum)
        lr, valley = uncapped(lrs, losses), descent_valley_lr(lrs, losses)
        return lr if lr is None or valley is None else min(lr, valley * k)
    return rule


def edge_capped_at_valley(ks):
    """The blow-up / k1, at most the descent's valley x k2 (``ks`` = (k1, k2)): the engine's
    from-scratch default with both its constants free, read on every curve lrexp can read."""
    from lrexp.engine.suggest import descent_valley_lr

    divisor, cap = ks

    def read(c, lrs, losses):
        anchor = c.blowup_lr if c.blowup_lr is not None else float(c.lrs[c.best])
        valley = descent_valley_lr(lrs, losses)
        return anchor / divisor if valley is None else min(anchor / divisor, valley * cap)
    return reads_curve(read)


def valley_times(k):
    """fastai's valley (on the readable curve) x k; the zero-lag minimum / 10 where it has
    none."""
    from lrexp.engine.suggest import descent_valley_lr

    def read(c, lrs, losses):
        valley = descent_valley_lr(lrs, losses)
        return float(c.lrs[c.best]) / 10 if valley is None else valley * k
    return reads_curve(read)


def blowup_when_noisy(wk):
    """The valley x 1.5 (as ``valley_times``), but the blow-up / k where the curve has a valley
    and its loss fell less than w noise widths before it blew up (the engine's descent:
    w = FALL_HIGH, k = 20)."""
    from lrexp.engine.suggest import assess, descent_valley_lr

    widths_below, k = wk
    valley = valley_times(1.5)

    def rule(lrs, losses, pretrained=False, momentum=True):
        verdict = assess(lrs, losses)
        widths = verdict.fall_in_noise_widths
        if (verdict.blowup_lr is not None and widths is not None and widths < widths_below
                and descent_valley_lr(lrs, losses) is not None):
            return verdict.blowup_lr / k
        return valley(lrs, losses)
    return rule


def toward_blowup(pb):
    """The engine's default moved toward the blow-up where the blow-up lies more than p decades
    above it, away where less: default x 10 ** (b (log10(blow-up / default) - p)), the last LR
    tested standing in for a blow-up the curve never reached (``pb`` = (p, b)). From scratch,
    log10(blow-up / default) correlated with the needed correction (log10 of the hit range's
    middle over the default) more than any other feature an in-sample scan read (r = 0.36 on
    rounds 1-16)."""
    pivot, weight = pb

    def rule(lrs, losses, pretrained=False, momentum=True):
        lr = _REMEMBERED_DEFAULT(lrs, losses, pretrained, momentum)
        c = _curve(lrs, losses)
        if lr is None or c is None:
            return lr
        top = c.blowup_lr if c.blowup_lr is not None else float(np.max(lrs))
        return lr * 10 ** (weight * (math.log10(top / lr) - pivot))
    return rule


FAMILIES = {
    "median of blow-up/20, EMA minimum/10, valley; / k": (median_of_three,
                                                          [0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5]),
    "geometric mean of blow-up/20 and EMA minimum/10; / k": (geometric_edge_ema,
                                                             [0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5]),
    "lower of blow-up / k and valley": (lower_of_edge_and_valley,
                                        [3, 5, 10, 20, 30, 50, 100, 200]),
    "valley / k": (valley_over, [0.3, 0.5, 1, 1.5, 2, 3, 5, 10]),
    "geometric mean of blow-up / k and valley": (geometric_edge_valley,
                                                 [3, 5, 10, 20, 30, 50, 100, 200]),
    "edge (blow-up / k)": (edge, [10, 20, 30, 50, 70, 100, 150, 200, 300, 500, 1000]),
    "zero-lag minimum / k": (zl_minimum, [1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100]),
    "lower of minimum / k, blow-up / 3k": (lower_of, [1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30]),
    "EMA minimum / k (fastai k=10)": (ema_minimum, [3, 5, 7, 10, 15, 20, 30, 50, 100]),
    "fall point (fraction of the fall)": (fall_point, [0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9]),
    "default, at most the valley x k": (default_capped_at_valley,
                                        [1, 2, 3, 5, 7, 10, 15, 30, 100]),
}


# Cross-validated across families: each family's hits come from the constant chosen on the
# other families, so a family of rules whose best constant does not carry over scores low. The
# rule families compared (their constants' grids); the peers and the engine's default ride along.
CV_FAMILIES = {
    "blow-up / k1, at most valley x k2": (edge_capped_at_valley, [
        (k1, k2) for k1 in (10, 20, 30, 50) for k2 in (1, 2, 3, 5, 7, 10, 30, 1000)]),
    "valley x k": (valley_times, [0.3, 0.5, 0.7, 1, 1.5, 2, 3]),
    "valley x 1.5; blow-up / k where the fall < 5 noise widths": (
        blowup_when_noisy, [(5, k) for k in (10, 20, 30, 50)]),
    "the same, w widths scanned too": (blowup_when_noisy, [
        (w, k) for w in (2, 3, 5, 8, 12, 20, math.inf) for k in (10, 20, 30, 50)]),
    "EMA minimum / k (fastai k=10)": (ema_minimum, [3, 5, 7, 10, 15, 20, 30, 50]),
    "zero-lag minimum / k": (zl_minimum, [3, 5, 7, 10, 15, 20, 30, 50]),
    "edge (blow-up / k)": (edge, [10, 20, 30, 50, 70, 100]),
    "default x 10^(b (log10(blow-up / default) - p)); (p, b)": (toward_blowup, [
        (p, b) for p in (1.0, 1.2, 1.3, 1.4, 1.5) for b in (0.1, 0.2, 0.25, 0.3, 0.4)]),
}


def per_case_hits(results, rule, cases) -> dict[str, int]:
    found = {}
    for r in results:
        if r["case"] in cases:
            found[r["case"]] = sum(
                hit(r["grid"], rule(np.asarray(t["curve"]["lrs"]),
                                    np.asarray(t["curve"]["losses"]), r["pretrained"],
                                    r["momentum"]))
                for t in r["trials"])
    return found


def cross_validated(results, make, constants, cases) -> tuple[int, list]:
    """Leave one family out: the hits on each family of the constant that scores best on the
    others (ties: the middle of the tied constants, in the grid's order); the constants
    chosen."""
    table = {k: per_case_hits(results, make(k), cases) for k in constants}
    family_of = {r["case"]: r["family"] for r in results if r["case"] in cases}
    total, chosen = 0, []
    for family in sorted(set(family_of.values())):
        inside = [c for c in cases if family_of[c] == family]
        scores = [sum(v for c, v in table[k].items() if family_of[c] != family)
                  for k in constants]
        tied = [k for k, score in zip(constants, scores, strict=True) if score == max(scores)]
        k = tied[len(tied) // 2]
        chosen.append(k)
        total += sum(table[k][c] for c in inside)
    return total, chosen


def print_cross_validation(results) -> None:
    print("\n## leave one family out (tuning split): hits of the constant chosen on the other "
          "families\n")
    print("| regime | rule | cross-validated hits | trials | constants chosen (their spread) |\n"
          "|---|---|---|---|---|")
    for regime in ("from scratch", "fine-tuning"):
        cases = {r["case"] for r in results if r["split"] == "tuning"
                 and r["pretrained"] == (regime == "fine-tuning")}
        trials = sum(len(r["trials"]) for r in results if r["case"] in cases)
        for name, (make, constants) in CV_FAMILIES.items():
            total, chosen = cross_validated(results, make, constants, cases)
            spread = ", ".join(f"{k}: {chosen.count(k)}" for k in dict.fromkeys(chosen))
            print(f"| {regime} | {name} | {total} | {trials} | {spread} |")
        for name, peer in [*PEER_RULES.items(), ("lrexp default (this engine, its constants "
                                                  "chosen on all of these)", None)]:
            rule = lrexp_rule("default") if peer is None else (
                lambda a, b, p=False, m=True, r=peer: r(a, b))
            total = sum(per_case_hits(results, rule, cases).values())
            print(f"| {regime} | {name} | {total} | {trials} | - |")
    print_finetune_through_verify(results)


def print_finetune_through_verify(results) -> None:
    """When fine-tuning the app answers with verify: each rule's LR replayed through the
    engine's fine-tuning verify on the saved probes (the rule's LR and a third of it, held-out
    batches at 30 steps, the lower within FINE_TUNING_WITHIN), on the tuning split."""
    from lrexp.engine.verify import AROUND_DEFAULT, FINE_TUNING_WITHIN

    chosen = [r for r in results if r["split"] == "tuning" and r["pretrained"]]
    trials = sum(len(r["trials"]) for r in chosen)
    print("\n## fine-tuning through verify (tuning split, replayed on the saved probes)\n")
    print("| rule | its own hits | through verify | trials |\n|---|---|---|---|")
    for name, rule in (("lrexp default", lrexp_rule("default")),
                       ("blow-up / 30, at most the valley", edge_capped_at_valley((30, 1)))):
        rule = remembered(rule)
        own = sum(per_case_hits(chosen, rule, {r["case"] for r in chosen}).values())
        verified = replay_verify(chosen, rule, AROUND_DEFAULT, "holdout", 30, FINE_TUNING_WITHIN)
        print(f"| {name} | {own} | {sum(map(sum, verified.values()))} | {trials} |")


def hits(results, rule, cases):
    """(hits, trials) of ``rule`` on ``cases``."""
    trials = sum(len(r["trials"]) for r in results if r["case"] in cases)
    return sum(per_case_hits(results, rule, cases).values()), trials


def log_error(results, rule, cases):
    """Median |log10(suggested / best grid LR)| and the median signed error."""
    errors = []
    for r in results:
        if r["case"] not in cases:
            continue
        best = min(r["grid"], key=r["grid"].get)
        for t in r["trials"]:
            lr = rule(np.asarray(t["curve"]["lrs"]), np.asarray(t["curve"]["losses"]),
                      r["pretrained"], r["momentum"])
            if lr:
                errors.append(math.log10(lr / best))
    return statistics.median(errors) if errors else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="saved runs (joined)")
    parser.add_argument("--held-out", action="store_true",
                        help="also show the held-out hits (only after every choice is made: "
                             "a scan that shows them invites choosing on them)")
    parser.add_argument("--cross-validate", action="store_true",
                        help="only the leave-one-family-out comparison of the rule families")
    parser.add_argument("--verdict-features", action="store_true",
                        help="only the hit rate by what a verdict could read off the curve")
    parser.add_argument("--verify-cv", action="store_true",
                        help="only the leave-one-family-out comparison of verify variants")
    parser.add_argument("--momentum-cv", action="store_true",
                        help="only the leave-one-family-out choice of NO_MOMENTUM_FACTOR")
    args = parser.parse_args()
    results = load_results(*args.results)
    if args.cross_validate:
        print_cross_validation(results)
        return
    if args.verdict_features:
        print_verdict_features(results)
        return
    if args.verify_cv:
        print_verify_cross_validation(results)
        return
    if args.momentum_cv:
        print_momentum_cross_validation(results)
        return

    def shown(counts):
        return f"{counts[0]}/{counts[1]}" if args.held_out else "-"

    groups = {regime: {split: {r["case"] for r in results if r["split"] == split
                               and r["pretrained"] == (regime == "fine-tuning")}
                       for split in ("tuning", "held-out")}
              for regime in ("from scratch", "fine-tuning")}
    for regime, splits in groups.items():
        print(f"\n## {regime}: tuning {len(splits['tuning'])} cases, "
              f"held-out {len(splits['held-out'])}\n")
        print("| rule | best constant (tuning) | tuning hits | median log10 error (tuning) | "
              "held-out hits |\n|---|---|---|---|---|")
        for family, (make, constants) in FAMILIES.items():
            scores = [(hits(results, make(k), splits["tuning"])[0], k) for k in constants]
            top = max(s for s, _ in scores)
            tied = [k for s, k in scores if s == top]
            k = tied[len(tied) // 2]
            tune = hits(results, make(k), splits["tuning"])
            held = hits(results, make(k), splits["held-out"])
            scan = ", ".join(f"{c}:{s}" for s, c in scores)
            print(f"| {family} | {k} (scan {scan}) | {tune[0]}/{tune[1]} | "
                  f"{log_error(results, make(k), splits['tuning']):+.2f} | {shown(held)} |")
        for name, peer in PEER_RULES.items():
            def as_rule(a, b, p=False, m=True, r=peer):
                return r(a, b)
            tune, held = (hits(results, as_rule, splits[s]) for s in ("tuning", "held-out"))
            error = log_error(results, as_rule, splits["tuning"])
            print(f"| {name} (peer) | - | {tune[0]}/{tune[1]} | {error:+.2f} | "
                  f"{shown(held)} |")
        rule = lrexp_rule("default")
        tune, held = (hits(results, rule, splits[s]) for s in ("tuning", "held-out"))
        print(f"| lrexp default (this engine) | - | {tune[0]}/{tune[1]} | "
              f"{log_error(results, rule, splits['tuning']):+.2f} | {shown(held)} |")
    print_verify_scan(results, args.held_out)
    print_verdict_scan(results, args.held_out)


MOMENTUM_FACTORS = (1 / 1.5, 1.0, 1.5, 2.0, 3.0, 4.5)


def print_momentum_cross_validation(results) -> None:
    """From scratch on the tuning split: the default for an optimizer without momentum times
    each of MOMENTUM_FACTORS (``NO_MOMENTUM_FACTOR``), the others' default as it is; the factor
    chosen leaving one family out (ties: the one nearest 1)."""
    from lrexp.engine import suggest as rules

    chosen_factor = rules.NO_MOMENTUM_FACTOR
    scratch = [r for r in results if r["split"] == "tuning" and not r["pretrained"]]
    table = {}  # factor -> {case: hits}
    for factor in MOMENTUM_FACTORS:
        rules.NO_MOMENTUM_FACTOR = factor
        table[factor] = per_case_hits(scratch, lrexp_rule("default"),
                                      {r["case"] for r in scratch})
    rules.NO_MOMENTUM_FACTOR = chosen_factor
    without = {r["case"] for r in scratch if not r["momentum"]}
    family_of = {r["case"]: r["family"] for r in scratch}
    trials = sum(len(r["trials"]) for r in scratch)
    print(f"\n## the default x k for optimizers without momentum (tuning, from scratch: {trials} "
          f"trials, {sum(len(r['trials']) for r in scratch if r['case'] in without)} without)\n")
    print("| k | hits without momentum | all hits |\n|---|---|---|")
    for factor in MOMENTUM_FACTORS:
        print(f"| {factor:.3g} | {sum(table[factor][c] for c in without)} | "
              f"{sum(table[factor].values())} |")
    total, folds = 0, []
    for family in sorted(set(family_of.values())):
        outside = {f: sum(v for c, v in table[f].items() if family_of[c] != family)
                   for f in MOMENTUM_FACTORS}
        best = max(outside.values())
        factor = min((f for f in MOMENTUM_FACTORS if outside[f] == best),
                     key=lambda f: abs(math.log(f)))
        folds.append(factor)
        total += sum(v for c, v in table[factor].items() if family_of[c] == family)
    counts = ", ".join(f"{f:.3g} in {folds.count(f)}" for f in MOMENTUM_FACTORS if f in folds)
    print(f"\nLeaving one family out ({len(folds)} folds): {total} hits ({counts}); one factor "
          f"for every optimizer (k = 1): {sum(table[1.0].values())}.")


VERIFY_FACTORS = ((1, 3), (1 / 3, 1), (1 / 3, 1, 3), (1 / 10, 1 / 3, 1), (1 / 10, 1 / 3, 1, 3))


def print_verify_scan(results, show_held_out: bool, top: int = 12) -> None:
    """Verify variants replayed on the probe table, per regime, best first by tuning hits
    (ties: the cheaper, in probe steps): candidates, judge, horizon, tolerance, halving."""
    anchor = remembered(lrexp_rule("default"))
    variants = [(f, k, h, tol, halving, False) for f in VERIFY_FACTORS
                for k in ("train", "holdout", "val") for h in (20, 30, 40)
                for tol in (0.0, 0.05, 0.1, 0.2) for halving in (None, 20)
                if halving is None or (h == 40 and len(f) > 2)]
    # the engine's rule: the default stands unless a lower candidate beats it by `tol`
    variants += [(f, k, h, tol, None, True) for f in VERIFY_FACTORS if max(f) == 1
                 for k in ("train", "holdout", "val") for h in (20, 30, 40)
                 for tol in (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)]
    for regime in ("from scratch", "fine-tuning"):
        chosen = [r for r in results if r["pretrained"] == (regime == "fine-tuning")]
        splits = {split: {r["case"] for r in chosen if r["split"] == split}
                  for split in ("tuning", "held-out")}
        rows = []
        for factors, kind, horizon, tolerance, halving, keep in variants:
            per_case = replay_verify(chosen, anchor, factors, kind, horizon, tolerance, halving,
                                     keep)
            counts = {split: (sum(sum(per_case[c]) for c in cases),
                              sum(len(per_case[c]) for c in cases))
                      for split, cases in splits.items()}
            cost = len(factors) * horizon if halving is None else \
                len(factors) * halving + (len(factors) + 1) // 2 * (horizon - halving)
            rows.append((counts["tuning"][0], -cost, factors, kind, horizon, tolerance,
                         halving, keep, counts))
        rows.sort(key=lambda row: row[:2], reverse=True)
        print(f"\n## verify variants, {regime} (best {top} on the tuning split)\n")
        print("| factors | judge | horizon | tolerance | halving at | keeps | probe steps |"
              " tuning hits | held-out hits |\n|---|---|---|---|---|---|---|---|---|")
        for _, cost, factors, kind, horizon, tolerance, halving, keep, counts in rows[:top]:
            fs = ",".join(f"{f:.3g}" for f in factors)
            held = counts["held-out"]
            shown = f"{held[0]}/{held[1]}" if show_held_out else "-"
            keeps = "default" if keep else "lowest"
            print(f"| {fs} | {kind} | {horizon} | {tolerance} | {halving or '-'} | {keeps} | "
                  f"{-cost} | {counts['tuning'][0]}/{counts['tuning'][1]} | {shown} |")


# The verify variants the leave-one-family-out scan compares: at most ``VERIFY_BUDGET`` probe
# steps (the engine's 2 probes of 30 steps cost a median 0.65x the range test's 100 points on
# the tuning split, so 80 steps stay under about 1x; scripts/bench_suggest.md).
VERIFY_BUDGET = 80
CV_VERIFY_FACTORS = ((1 / 3, 1), (1, 3), (1 / 3, 1, 3), (1 / 10, 1 / 3, 1), (1 / 10, 1))


def verify_variants():
    """(factors, judge, horizon, tolerance, halving, keeps the default) within the budget."""
    return [(f, kind, h, tol, None, keep) for f in CV_VERIFY_FACTORS
            for kind in ("holdout", "val") for h in (20, 30, 40)
            for tol in (0.0, 0.02, 0.05, 0.1, 0.2) for keep in (False, True)
            if len(f) * h <= VERIFY_BUDGET and (keep or tol < 0.2)]


def remembered(rule):
    """``rule`` computed once per curve (the scans replay it on every curve many times)."""
    found: dict[int, float | None] = {}

    def once(lrs, losses, pretrained=False, momentum=True):
        key = hash((lrs.tobytes(), losses.tobytes(), pretrained, momentum))
        if key not in found:
            found[key] = rule(lrs, losses, pretrained, momentum)
        return found[key]
    return once


# the engine's default, once per curve across every constant of a scan (``toward_blowup``)
_REMEMBERED_DEFAULT = remembered(lrexp_rule("default"))


def _left_out_families(tables, variants, family_of) -> tuple[int, list[int]]:
    """Leave one family out: each family's hits with the variant that hits most on the others
    (ties: the cheaper in probe steps, then the first); the total and the variants picked."""
    total, picks = 0, []
    for family in sorted(set(family_of.values())):
        def outside(i, family=family):
            hits = sum(sum(h) for c, h in tables[i].items() if family_of[c] != family)
            return hits, -len(variants[i][0]) * variants[i][2]
        best = max(range(len(variants)), key=outside)
        picks.append(best)
        total += sum(sum(h) for c, h in tables[best].items() if family_of[c] == family)
    return total, picks


def print_verify_cross_validation(results) -> None:
    """Leave one family out over the verify variants, per regime and judge: each family scored
    with the variant that hits most on the other families (ties: the cheaper, then the first)."""
    default = remembered(lrexp_rule("default"))
    print("\n## verify, leave one family out (tuning split)\n")
    print("| regime | judge | horizons | cross-validated hits | default's hits | trials | "
          "variants chosen |\n|---|---|---|---|---|---|---|")
    for regime in ("from scratch", "fine-tuning"):
        chosen = [r for r in results if r["split"] == "tuning"
                  and r["pretrained"] == (regime == "fine-tuning")]
        family_of = {r["case"]: r["family"] for r in chosen}
        default_hits = sum(per_case_hits(chosen, default, set(family_of)).values())
        trials = sum(len(r["trials"]) for r in chosen)
        for judge, horizons in [(j, h) for j in ("holdout", "val") for h in ((20, 30, 40), (30,))]:
            variants = [v for v in verify_variants() if v[1] == judge and v[2] in horizons]
            tables = [replay_verify(chosen, default, *v) for v in variants]
            total, picks = _left_out_families(tables, variants, family_of)
            named: dict[str, int] = {}
            for i in picks:
                f, _, h, tol, _, keep = variants[i]
                name = (f"{','.join(f'{x:.3g}' for x in f)} at {h}, tol {tol}, "
                        f"{'keeps default' if keep else 'lowest'}")
                named[name] = named.get(name, 0) + 1
            spread = "; ".join(f"{k}: {v}" for k, v in named.items())
            print(f"| {regime} | {judge} | {', '.join(map(str, horizons))} | {total} | "
                  f"{default_hits} | {trials} | {spread} |")


def _curve_features(lrs, losses, pretrained: bool,
                    momentum: bool = True) -> dict[str, float] | None:
    """What a verdict could read off a curve, for the default's suggestion: how far the loss
    fell in noise widths, how far the rules disagree (decades), how far the default sits from
    the minimum / 7 and from the blow-up / 20, and how many decades the descent spans."""
    from lrexp.engine import suggest as rules

    c = _curve(lrs, losses)
    lr = lrexp_rule("default")(lrs, losses, pretrained, momentum)
    if c is None or lr is None:
        return None
    widths = rules.assess(lrs, losses).fall_in_noise_widths
    widths = math.inf if widths is None else widths
    minimum = float(c.lrs[c.best]) / 7
    edge = c.blowup_lr / 20 if c.blowup_lr is not None else minimum
    readings = [x for x in (minimum, edge, rules.descent_valley_lr(lrs, losses),
                            fastai_minimum(lrs, losses), lr) if x]
    return {"fall in noise widths (log10)": math.log10(min(max(widths, 1e-3), 1e9)),
            "spread of the rules (decades)": math.log10(max(readings) / min(readings)),
            "default vs minimum / 7 (decades)": abs(math.log10(lr / minimum)),
            "default vs blow-up / 20 (decades)": abs(math.log10(lr / edge)),
            "descent's span (decades)": math.log10(c.lrs[c.best] / c.lrs[c.start])}


def print_verdict_features(results) -> None:
    """Does anything a verdict could read off the curve predict a hit? The default's hit rate
    below and above each feature's tercile cuts (tuning split)."""
    rows = []
    for r in results:
        if r["split"] != "tuning":
            continue
        for t in r["trials"]:
            lrs, losses = np.asarray(t["curve"]["lrs"]), np.asarray(t["curve"]["losses"])
            features = _curve_features(lrs, losses, r["pretrained"], r["momentum"])
            if features is not None:
                lr = lrexp_rule("default")(lrs, losses, r["pretrained"], r["momentum"])
                rows.append((hit(r["grid"], lr), features))
    print(f"\n## verdict features: the default's hit rate by curve feature ({len(rows)} tuning "
          f"trials, {sum(h for h, _ in rows)} hits)\n")
    print("| feature | at most the 1st tercile | above the 2nd tercile |\n|---|---|---|")
    hits = np.array([h for h, _ in rows], dtype=float)
    for name in rows[0][1]:
        values = np.array([f[name] for _, f in rows])
        low, high = np.quantile(values, [1 / 3, 2 / 3])
        below, above = hits[values <= low], hits[values > high]
        print(f"| {name} | {below.mean():.0%} of {len(below)} | {above.mean():.0%} of "
              f"{len(above)} |")


def print_verdict_scan(results, show_held_out: bool) -> None:
    """The default's hit rate when "high" and when "low", per AGREEMENT_DECADES (how near the
    descent's valley a "high" suggestion must be; inf: no such check)."""
    from lrexp.engine import suggest as rules

    chosen = rules.AGREEMENT_DECADES
    print("\n## verdict: agreement with the descent's valley (decades)\n")
    print("| decades | tuning high | tuning low | held-out high | held-out low |\n"
          "|---|---|---|---|---|")
    for decades in (0.3, 0.5, 0.7, 1.0, 1.5, math.inf):
        rules.AGREEMENT_DECADES = decades
        rates = {}
        for split in ("tuning", "held-out"):
            for level in ("high", "low"):
                found = [hit(r["grid"], s.lr) for r in results if r["split"] == split
                         for t in r["trials"]
                         for s in [rules.suggest(t["curve"]["lrs"], t["curve"]["losses"],
                                                 pretrained=r["pretrained"],
                                                 momentum=r["momentum"])]
                         if s.confidence == level]
                rates[split, level] = f"{sum(found)}/{len(found)}"
        held = [rates["held-out", level] if show_held_out else "-" for level in ("high", "low")]
        print(f"| {decades:g} | {rates['tuning', 'high']} | {rates['tuning', 'low']} | "
              f"{held[0]} | {held[1]} |")
    rules.AGREEMENT_DECADES = chosen


if __name__ == "__main__":
    main()
