"""The study's comparisons beyond the tuned one (stepdistill.study.pairs, tables): equal epoch budgets, every
shared setting against a reference arm, the machines line, groups of other overrides kept apart. Pure functions
of records; no training. (Moved from tests/test_quality_script.py with benchmarks/quality.py's own copies.)"""

from stepdistill.study.analysis import analyse
from stepdistill.study.pairs import equal_budget, shared_settings
from stepdistill.study.tables import machines_line


def record(arm, lr, epochs, seed, valid, test, common=(), task="t", train_seconds=None):
    right = round(test * 100)
    return {"cell": f"{arm}-{lr}-{epochs}-{seed}-{'-'.join(common)}", "arm": arm, "task": task, "student": "s",
            "train_size": 100, "common": list(common), "lr": lr, "epochs": epochs, "seed": seed,
            "valid_accuracy": valid, "test_accuracy": right / 100, "n_test": 100, "train_seconds": train_seconds,
            "correct": {str(i): i < right for i in range(100)}}


def test_equal_budget_picks_one_budget_for_both_methods_on_validation():
    """Each arm would pick its own budget (standard FT 2 epochs, dsbs 3); the equal-budget comparison gives
    both the budget with the best joint validation score, tunes each lr within it, and never looks at test."""
    grid = [("standard_ft", 1e-4, 1.0, 0.40, 0.43), ("standard_ft", 1e-4, 2.0, 0.44, 0.50),
            ("dsbs", 1e-4, 1.0, 0.41, 0.44), ("dsbs", 3e-4, 2.0, 0.40, 0.49), ("dsbs", 1e-4, 2.0, 0.39, 0.30),
            ("dsbs", 1e-4, 3.0, 0.90, 0.10)]  # (arm, lr, epochs, valid, test) with 2 seeds each
    records = [record(arm, lr, ep, seed, valid, test) for arm, lr, ep, valid, test in grid for seed in (0, 1)]
    base = [r for r in records if r["arm"] == "standard_ft"]
    mine = [r for r in records if r["arm"] == "dsbs"]
    out = equal_budget("dsbs", mine, base, [])
    assert [c["epochs"] for c in out] == [1.0, 2.0]  # 3 epochs: standard FT never ran it
    one, two = out
    assert two["picked"] and not one["picked"]  # 0.44 + 0.40 beats 0.40 + 0.41
    assert two["lr"] == 3e-4 and two["base_lr"] == 1e-4  # dsbs's 2-epoch lr picked on validation, not test
    assert two["test_mean"] == 0.49 and two["base_test_mean"] == 0.50
    assert abs(two["vs"]["diff_mean"] + 0.01) < 1e-9 and one["vs"]["diff_mean"] > 0
    assert equal_budget("dsbs", mine, [], []) == []
    # the group's tables: dsbs at equal budgets vs the baseline; its shared settings are (1e-4, 1) and (1e-4, 2)
    (g,) = analyse(records, "standard_ft")["groups"]
    assert [(c["epochs"], c["picked"]) for c in g["equal_budget"]] == [(1.0, False), (2.0, True)]
    assert {(c["lr"], c["epochs"]) for c in g["shared_settings"]} == {(1e-4, 1.0), (1e-4, 2.0)}


def test_a_variant_is_compared_with_its_own_arm_at_every_shared_setting():
    records = [record("dsbs", 3e-4, 1.0, s, 0.5, 0.5, train_seconds=100) for s in (0, 1)]
    records += [record("dsbs_fast", 3e-4, 1.0, s, 0.5, 0.48, train_seconds=40) for s in (0, 1)]
    records += [record("standard_ft", 3e-4, 1.0, s, 0.5, 0.45) for s in (0, 1)]
    by_arm = {a: [r for r in records if r["arm"] == a] for a in ("dsbs", "dsbs_fast", "standard_ft")}
    out = shared_settings(by_arm, {"dsbs": "standard_ft", "dsbs_fast": "dsbs", "standard_ft": "standard_ft"}, [])
    fast = next(c for c in out if c["arm"] == "dsbs_fast")
    assert fast["vs_arm"] == "dsbs" and fast["seeds"] == [0, 1]
    assert (fast["base_train_seconds"], fast["train_seconds"]) == (100, 40)
    assert round(fast["vs"]["diff_mean"], 4) == -0.02 and fast["vs"]["bootstrap"]["seeds"] == 2
    (g,) = analyse(records, "standard_ft", compare={"dsbs_fast": "dsbs"})["groups"]
    assert {c["arm"]: c["vs_arm"] for c in g["shared_settings"]} == {"dsbs": "standard_ft", "dsbs_fast": "dsbs"}
    assert [c["arm"] for c in g["equal_budget"]] == ["dsbs"]  # a variant's budget is its own arm's


def test_a_variant_is_compared_with_its_own_arm_each_at_its_tuned_setting(tmp_path):
    """The variant picks lr 3e-4 and its arm 1e-4 on validation: the tuned comparison pairs those picks (the
    shared-settings table pairs equal lrs only), answers the variant question, gets its own table, and the differences plot shows both."""
    from types import SimpleNamespace

    from stepdistill.study.report import markdown, plot_differences

    grid = [("standard_ft", 1e-4, 0.40, 0.45), ("dsbs", 1e-4, 0.50, 0.50), ("dsbs", 3e-4, 0.45, 0.90),
            ("dsbs_long", 1e-4, 0.40, 0.99), ("dsbs_long", 3e-4, 0.55, 0.60)]  # (arm, lr, valid, test)
    records = [record(arm, lr, 3.0, s, valid, test) for arm, lr, valid, test in grid for s in (0, 1)]
    result = analyse(records, "standard_ft", compare={"dsbs_long": "dsbs"})
    (g,) = result["groups"]
    vs = g["tuned"]["dsbs_long"]["vs_reference"]
    assert vs["arm"] == "dsbs" and vs["seeds"] == [0, 1] and round(vs["diff_mean"], 4) == 0.10  # 0.60 - 0.50
    assert vs["bootstrap"]["ci95"][0] > 0  # 10 more rows right, the same ones in both seeds
    assert "vs_reference" not in g["tuned"]["dsbs"]  # its reference is the baseline: vs_baseline says it
    answer = next(a for a in result["answers"] if a["question"] == "Does each variant beat the arm it varies?")
    assert "dsbs_long scores 60.0% against dsbs's 50.0% at their tuned settings: +10.0 points" in answer["answer"]
    assert answer["answer"].endswith("— better.") and answer["evidence"][0]["reference"] == "dsbs"
    spec = SimpleNamespace(name="t", description="", methods={}, baseline="standard_ft", seeds=[0, 1], lrs=[1e-4],
                           epochs=[3], set=[])
    text = "\n".join(markdown(spec, result, records, []))
    assert "| t, s, 100 | dsbs_long vs dsbs | 0.0001 / 0.0003 | 3 / 3 | [0, 1] | 50.0 | 60.0 | +10.0 points" in text
    assert plot_differences(result, tmp_path) == ["differences.png"] and (tmp_path / "differences.png").stat().st_size
    one_seed = [r for r in records if not (r["arm"] == "dsbs_long" and r["seed"] == 1)]
    answer = next(a for a in analyse(one_seed, "standard_ft", compare={"dsbs_long": "dsbs"})["answers"]
                  if a["question"] == "Does each variant beat the arm it varies?")
    assert "at their tuned settings (Δ on the shared seeds [0]):" in answer["answer"]


def test_groups_with_other_overrides_stay_apart_from_the_main_comparison():
    """A one-seed precision check trained with other --set overrides must not replace (or mix into) the main
    comparison of the same task and size."""
    main = [record(a, 1e-4, 3.0, s, 0.5, t, common=("fast", "bf16")) for a, t in (("standard_ft", 0.49),
                                                                                  ("dsbs", 0.52)) for s in (0, 1, 2)]
    check = [record("standard_ft", 1e-4, 3.0, 0, 0.5, 0.40, common=("fast",))]
    for records in (main + check, check + main):
        groups = {tuple(g["common"]): g for g in analyse(records, "standard_ft")["groups"]}
        assert len(groups[("fast", "bf16")]["tuned"]["standard_ft"]["seeds"]) == 3
        assert groups[("fast",)]["tuned"]["standard_ft"]["test_mean"] == 0.40
    from stepdistill.study.report import overrides_apart  # the differences plot names what sets them apart

    tops = analyse(main + check, "standard_ft")["groups"]
    assert [overrides_apart(g, tops) for g in tops] == [" (without bf16)", " (bf16)"]


def test_machines_line_says_whether_each_cpu_has_bf16_units():
    line = machines_line([
        {"machines": [{"cpu": "Zen", "threads": 2, "torch": "2", "isa": ["avx512_bf16", "avx512f"]}]},
        {"machines": [{"cpu": "Ice Lake", "threads": 1, "torch": "2", "isa": ["avx512f"]}]},
        {"machines": [{"cpu": "Old", "threads": 2, "torch": "2"}]}, {}])
    assert "Zen, bf16 units, 2 threads" in line and "Ice Lake, no bf16 units, 1 thread," in line
    assert "Old, 2 threads" in line and "not recorded" in line
