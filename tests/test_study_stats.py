"""Properties of the study statistics (stepdistill.study.stats): pure functions, no files, no training."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepdistill.study.stats import (accuracy_interval, binomial_two_sided, mcnemar, pick_setting, pooled_mcnemar,
                                     seed_row_bootstrap)

bits = st.lists(st.booleans(), min_size=1, max_size=60)


def as_map(values):
    return {f"r{i}": v for i, v in enumerate(values)}


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_binomial_matches_scipy(k, extra):
    scipy_stats = pytest.importorskip("scipy.stats")
    n = k + extra
    assert binomial_two_sided(k, n) == pytest.approx(scipy_stats.binomtest(k, n, 0.5).pvalue if n else 1.0,
                                                     rel=1e-9, abs=1e-300)


@given(bits, bits)
def test_mcnemar_is_symmetric_and_a_probability(a, b):
    a, b = as_map(a), as_map(b[:len(a)] + [False] * (len(a) - len(b)))
    ab, ba = mcnemar(a, b), mcnemar(b, a)
    assert ab["p_value"] == ba["p_value"] and 0 <= ab["p_value"] <= 1
    assert (ab["a_only_correct"], ab["b_only_correct"]) == (ba["b_only_correct"], ba["a_only_correct"])
    assert mcnemar(a, a)["p_value"] == 1.0


def test_mcnemar_more_lopsided_disagreement_gives_smaller_p():
    base = as_map([False] * 40)
    ps = [mcnemar(as_map([True] * k + [False] * (40 - k)), base)["p_value"] for k in (2, 6, 12, 30)]
    assert ps == sorted(ps, reverse=True) and ps[-1] < 1e-6


def test_pooled_mcnemar_counts_every_seed_row_pair():
    a, b = as_map([True, False, True]), as_map([False, False, True])
    pooled = pooled_mcnemar([(a, b), (a, b)])
    assert pooled["rows"] == 6 and pooled["a_only_correct"] == 2 and pooled["b_only_correct"] == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(bits, bits), min_size=1, max_size=3))
def test_bootstrap_holds_the_point_and_flips_with_the_sides(seeds):
    n = min(len(x) for pair in seeds for x in pair)
    pairs = [(as_map(a[:n]), as_map(b[:n])) for a, b in seeds]
    ab = seed_row_bootstrap(pairs, resamples=500)
    ba = seed_row_bootstrap([(b, a) for a, b in pairs], resamples=500)
    lo, hi = ab["ci95"]
    assert lo - 1e-9 <= ab["diff"] <= hi + 1e-9 and 0 < ab["p_value"] <= 1
    assert ba["diff"] == pytest.approx(-ab["diff"]) and ba["ci95"] == pytest.approx([-hi, -lo], abs=1e-9)


def test_bootstrap_of_identical_runs_is_zero_and_seed_spread_widens_it():
    a = as_map([True, False] * 50)
    assert seed_row_bootstrap([(a, a)])["ci95"] == [0.0, 0.0]
    same = as_map([True] * 60 + [False] * 40)
    worse, better = as_map([True] * 40 + [False] * 60), as_map([True] * 80 + [False] * 20)
    one_seed = seed_row_bootstrap([(better, same), (better, same)])  # both seeds +0.2
    spread = seed_row_bootstrap([(better, same), (worse, same)])  # seeds disagree: +0.2 and -0.2
    assert spread["ci95"][1] - spread["ci95"][0] > one_seed["ci95"][1] - one_seed["ci95"][0]
    assert spread["ci95"][0] < 0 < spread["ci95"][1] and one_seed["ci95"][0] > 0


def test_accuracy_interval_brackets_the_accuracy():
    runs = [as_map([True] * 70 + [False] * 30), as_map([True] * 74 + [False] * 26)]
    iv = accuracy_interval(runs)
    assert iv["diff"] == pytest.approx(0.72) and iv["ci95"][0] < 0.72 < iv["ci95"][1]


def test_pick_setting_uses_validation_only_and_prefers_more_seeds():
    def rec(seed, valid, test):
        return {"seed": seed, "valid_accuracy": valid, "test_accuracy": test}
    settings = {(1e-4, 1.0): [rec(0, 0.5, 0.9), rec(1, 0.5, 0.9)], (3e-4, 1.0): [rec(0, 0.6, 0.1), rec(1, 0.6, 0.1)],
                (3e-4, 2.0): [rec(0, 0.9, 0.9)]}
    assert pick_setting(settings) == (3e-4, 1.0)  # best validation among the 2-seed settings, whatever test says
    for rs in settings.values():
        for r in rs:
            r["test_accuracy"] = 1 - r["test_accuracy"]
    assert pick_setting(settings) == (3e-4, 1.0)
    tie = {(3e-4, 2.0): [rec(0, 0.5, 0)], (1e-4, 1.0): [rec(0, 0.5, 0)], (3e-4, 1.0): [rec(0, 0.5, 0)]}
    assert pick_setting(tie) == (1e-4, 1.0)  # ties: fewer epochs, then lower lr


def test_seed_row_bootstrap_includes_seed_variance():
    """(Moved from tests/test_quality_script.py.)"""
    rows = [str(i) for i in range(400)]
    base = {i: k % 2 == 0 for k, i in enumerate(rows)}  # 50% correct
    better = {i: True for i in rows}  # 100% correct on both seeds: a sure gain
    sure = seed_row_bootstrap([(better, base), (better, base)], resamples=2000)
    assert sure["diff"] == 0.5 and sure["ci95"][0] > 0.4 and sure["p_value"] <= 1 / 2000 * 2
    # seeds that disagree: +50 points on one (all right), -50 on the other (all wrong). Each seed alone is far
    # past any per-row test, but over seeds the interval must straddle 0
    good = dict.fromkeys(rows, True)
    bad = dict.fromkeys(rows, False)
    assert mcnemar(good, base)["p_value"] < 1e-6 and mcnemar(bad, base)["p_value"] < 1e-6
    split = seed_row_bootstrap([(good, base), (bad, base)], resamples=2000)
    assert split["ci95"][0] < 0 < split["ci95"][1] and split["p_value"] > 0.2
    # same predictions: no difference, p = 1
    assert seed_row_bootstrap([(base, base)])["ci95"] == [0.0, 0.0]
    assert seed_row_bootstrap([]) == {}
