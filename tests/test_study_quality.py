"""The study engine reads the 133 rows of benchmarks/quality.py (a frozen copy under tests/data/quality_frozen:
quality.jsonl, its per-row results and the legacy report's comparisons) and rebuilds today's tuned numbers and
intervals (benchmarks/results/quality.md, summary table)."""

from pathlib import Path

import pytest

from stepdistill.study.analysis import analyse
from stepdistill.study.legacy import load_quality

FROZEN = Path(__file__).parent / "data" / "quality_frozen" / "quality.jsonl"
FAST = ["student.prompt_layout=suffix", "train.mixed_precision=bf16"]
# quality.md summary: dataset -> (n_train, options, {arm: (mean %, sd %, seeds, lr, epochs)},
#                                 dsbs - standard_ft: (diff points, per-seed McNemar p, interval points, its p))
TODAY = {
    "anli1": (None, FAST, {"standard_ft": (49.7, 2.5, 3, 1e-4, 3), "standard_distill": (39.6, 5.3, 2, 1e-4, 2),
                           "dsbs": (52.2, 2.0, 3, 1e-4, 3), "single_task": (42.0, 4.5, 2, 1e-4, 2)},
              (2.5, [0.0486, 0.000281, 0.425], (-1.5, 6.5), 0.226)),
    "cqa": (2000, FAST, {"standard_ft": (37.8, 0.8, 2, 1e-4, 2), "standard_distill": (36.2, 1.7, 2, 1e-4, 1),
                         "dsbs": (38.9, 0.5, 2, 1e-4, 2), "single_task": (35.6, 0.1, 2, 3e-4, 1)},
            (1.1, [0.286, 0.499], (-1.0, 3.2), 0.288)),
    "esnli": (2000, FAST, {"standard_ft": (82.8, 0.2, 2, 1e-4, 2), "standard_distill": (73.0, 5.2, 2, 1e-4, 2),
                           "dsbs": (83.6, 0.9, 2, 1e-4, 2), "single_task": (79.3, 1.4, 2, 1e-4, 2)},
              (0.9, [0.228, 0.749], (-0.9, 2.7), 0.36)),
    "svamp": (720, [], {"standard_ft": (53.8, 0.4, 2, 1e-4, 3), "standard_distill": (47.2, 1.8, 2, 1e-4, 3),
                        "dsbs": (54.8, 4.6, 2, 3e-4, 3), "single_task": (40.5, 2.1, 2, 3e-4, 3)},
              (1.0, [0.229, 0.652], (-6.5, 8.0), 0.751)),
}


@pytest.fixture(scope="module")
def rebuilt():
    records, known = load_quality(FROZEN)
    assert len(records) == 133 and len({r["cell"] for r in records}) == 133
    return analyse(records, "standard_ft", known=known)


@pytest.mark.parametrize("dataset", sorted(TODAY))
def test_rebuilt_summary_gives_todays_tuned_numbers_and_intervals(rebuilt, dataset):
    n_train, options, arms, (diff, per_seed, (lo, hi), p) = TODAY[dataset]
    (group,) = [g for g in rebuilt["groups"] if (g["task"], g["train_size"], g["common"]) == (dataset, n_train,
                                                                                            options)]
    for arm, (mean, sd, seeds, lr, epochs) in arms.items():
        t = group["tuned"][arm]
        assert (round(100 * t["test_mean"], 1), round(100 * t["test_sd"], 1)) == (mean, sd), arm
        assert (len(t["seeds"]), t["lr"], t["epochs"]) == (seeds, lr, epochs), arm
    vs = group["tuned"]["dsbs"]["vs_baseline"]
    assert round(100 * vs["diff_mean"], 1) == diff
    assert [x["p_value"] for x in vs["per_seed"].values()] == per_seed
    b = vs["bootstrap"]
    assert (round(100 * b["ci95"][0], 1), round(100 * b["ci95"][1], 1), b["p_value"]) == (lo, hi, p)


def test_comparisons_without_per_row_results_stay_untested_unless_the_legacy_report_had_them(rebuilt):
    tested = missing = 0
    for g in rebuilt["groups"]:
        for t in g["tuned"].values():
            vs = t.get("vs_baseline")
            if vs:
                tested += bool(vs["bootstrap"])
                missing += bool(vs.get("predictions_missing"))
                assert bool(vs["bootstrap"]) != bool(vs.get("predictions_missing"))
    assert tested > 10 and missing > 0
