"""Statistics of a study: pure functions of per-row correctness and of recorded accuracies.

    from stepdistill.study.stats import mcnemar, seed_row_bootstrap
    mcnemar({"a": True, "b": False}, {"a": True, "b": True})

A correctness map is ``{test row id: bool}``; a pair ``(a, b)`` holds two runs' maps for one seed, on the same
test rows. Nothing here reads files or trains; tests check the properties (tests/test_study_stats.py).
"""

from __future__ import annotations

import math
import statistics

Correct = dict[str, bool]


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial p of ``k`` successes in ``n`` draws at probability 1/2 (as scipy's binomtest):
    twice the smaller tail, at most 1. Exact integer sums, so no cancellation for large ``n``."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    if 2 * k == n:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2 ** n)


def mcnemar(a: Correct, b: Correct) -> dict:
    """Exact McNemar (two-sided binomial on the discordant pairs) for per-row correctness on the shared rows."""
    ids = sorted(set(a) & set(b))
    a_only = sum(a[i] and not b[i] for i in ids)
    b_only = sum(b[i] and not a[i] for i in ids)
    p = binomial_two_sided(min(a_only, b_only), a_only + b_only)
    return {"rows": len(ids), "a_only_correct": a_only, "b_only_correct": b_only, "p_value": float(f"{p:.3g}")}


def pooled_mcnemar(pairs: list[tuple[Correct, Correct]]) -> dict:
    """McNemar over the (seed, row) pairs of several seeds (rows repeat across seeds: not independent)."""
    a, b = {}, {}
    for s, (x, y) in enumerate(pairs):
        a.update({f"{s}:{k}": v for k, v in x.items()})
        b.update({f"{s}:{k}": v for k, v in y.items()})
    return mcnemar(a, b)


def seed_row_bootstrap(pairs: list[tuple[Correct, Correct]], resamples: int = 10000, rng_seed: int = 0) -> dict:
    """Hierarchical paired bootstrap of the accuracy difference a - b over seeds and test rows.

    Each resample draws test rows with replacement (the same draw for every seed, since the seeds share the
    test rows) and seeds with replacement, and averages the paired per-row differences. Training-seed variance
    is thus part of the interval, which per-seed McNemar tests leave out. With few seeds the interval is
    coarse (2 seeds: each resample holds one or both), but it cannot be narrower than the seeds disagree.
    ``p_value``: two-sided, twice the share of resamples on the other side of zero (floored at 1/resamples).
    {} when the pairs share no row.
    """
    import numpy as np

    ids = sorted(set.intersection(*(set(a) & set(b) for a, b in pairs))) if pairs else []
    if not ids:
        return {}
    diffs = np.array([[int(a[i]) - int(b[i]) for i in ids] for a, b in pairs], dtype=np.float64)  # seeds x rows
    k, n = diffs.shape
    rng = np.random.default_rng(rng_seed)
    rows = rng.integers(0, n, size=(resamples, n))
    per_seed = np.stack([d[rows].mean(axis=1) for d in diffs])  # seeds x resamples
    picks = rng.integers(0, k, size=(resamples, k))
    stats = per_seed[picks, np.arange(resamples)[:, None]].mean(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    point = float(diffs.mean())
    other_side = (stats <= 0).mean() if point > 0 else (stats >= 0).mean()
    p = min(1.0, max(2 * float(other_side), 1 / resamples))
    return {"diff": round(point, 4), "ci95": [round(float(lo), 4), round(float(hi), 4)], "p_value": float(f"{p:.3g}"),
            "seeds": k, "rows": n, "resamples": resamples}


def accuracy_interval(runs: list[Correct], resamples: int = 10000) -> dict:
    """The seed x row bootstrap of one setting's accuracy itself (its runs against an always-wrong run)."""
    return seed_row_bootstrap([(c, dict.fromkeys(c, False)) for c in runs], resamples)


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = statistics.mean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def pick_setting(settings: dict[tuple[float, float], list[dict]]) -> tuple[float, float]:
    """The tuned (lr, epochs) of one method, chosen on validation only: among the settings run with the most
    seeds, the best mean ``valid_accuracy`` over seeds; ties -> fewer epochs, lower lr. Never reads test."""
    return max(settings, key=lambda s: (len(settings[s]),
                                        statistics.mean(x["valid_accuracy"] or 0 for x in settings[s]), -s[1], -s[0]))


def by_setting(records: list[dict]) -> dict[tuple[float, float], list[dict]]:
    """One method's records grouped by (lr, epochs)."""
    settings: dict[tuple, list[dict]] = {}
    for r in records:
        settings.setdefault((r["lr"], r["epochs"]), []).append(r)
    return settings
