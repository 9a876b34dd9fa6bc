"""What a study's records say: the tuned and same-settings comparisons of every arm with the baseline arm,
the accuracy-vs-training-examples curves, and one answer per question. Pure functions of the records.

    from stepdistill.study.analysis import analyse
    analyse(records, baseline="standard_ft")

Selection rule: per arm and group (task, student, training-set size, common overrides), the (lr, epochs) with
the best mean validation accuracy over seeds is the tuned setting (``stats.pick_setting``); test accuracy is read
only for that setting and for the same-settings comparison (by default every arm at the baseline's tuned
setting), never to choose.
"""

from __future__ import annotations

import statistics
from collections import Counter

from stepdistill.student.rationales import NO_TEACHER, UNKNOWN_TEACHER
from stepdistill.study.stats import (accuracy_interval, by_setting, mean_spread, mcnemar, pick_setting,
                                     pooled_mcnemar, seed_row_bootstrap)


def group_key(r: dict) -> tuple:
    return (r["task"], r["student"], r["train_size"], tuple(r.get("common") or []))


def size_order(n) -> float:
    return float("inf") if n is None else float(n)


def versus(mine: list[dict], base: list[dict], known: list[dict] = ()) -> dict | None:
    """One setting's records against another's, paired by seed on the same test rows: mean difference,
    exact McNemar per seed and pooled, and the seed x row bootstrap. Where a run's per-row results are lost,
    the statistics kept for exactly these runs (``known``, from an earlier report) if they agree on the mean
    difference, else only the difference. None if the two share no seed."""
    mine_by, base_by = {r["seed"]: r for r in mine}, {r["seed"]: r for r in base}
    seeds = sorted(set(mine_by) & set(base_by))
    if not seeds:
        return None
    diff = round(statistics.mean(mine_by[s]["test_accuracy"] - base_by[s]["test_accuracy"] for s in seeds), 4)
    pairs = [(mine_by[s].get("correct") or {}, base_by[s].get("correct") or {}) for s in seeds]
    if all(a and b for a, b in pairs):
        return {"diff_mean": diff, "seeds": seeds, "per_seed": {str(s): mcnemar(*p) for s, p in zip(seeds, pairs)},
                "pooled": pooled_mcnemar(pairs), "bootstrap": seed_row_bootstrap(pairs)}
    cells = ([mine_by[s]["cell"] for s in seeds], [base_by[s]["cell"] for s in seeds])
    for k in known:
        if (k["mine"], k["base"]) == cells and abs(k["stats"]["diff_mean"] - diff) < 1e-4:
            return {**k["stats"], "seeds": seeds, "from_report": k.get("from")}
    return {"diff_mean": diff, "seeds": seeds, "per_seed": {}, "pooled": None, "bootstrap": None,
            "predictions_missing": True}


def summarise(rs: list[dict]) -> dict:
    """Test mean and spread over one setting's seeds, with the seed x row interval of the accuracy."""
    m, sd = mean_spread([x["test_accuracy"] for x in rs])
    out = {"lr": rs[0]["lr"], "epochs": rs[0]["epochs"], "seeds": sorted(x["seed"] for x in rs),
           "valid_mean": round(statistics.mean(x["valid_accuracy"] or 0 for x in rs), 4),
           "test_mean": round(m, 4), "test_sd": round(sd, 4), "n_test": rs[0]["n_test"],
           "n_train_used": rs[0].get("n_train_used"), "cells": [x["cell"] for x in sorted(rs, key=lambda x: x["seed"])]}
    if all(x.get("correct") for x in rs):
        out["interval"] = accuracy_interval([x["correct"] for x in sorted(rs, key=lambda x: x["seed"])])["ci95"]
    return out


def analyse_group(records: list[dict], baseline: str, same: tuple | None, known: list[dict],
                  compare: dict[str, str] | None = None) -> dict:
    """One group's tuned and same-settings tables, every arm against ``baseline`` (and a variant against its
    reference arm, ``compare``, each at its tuned setting); every shared setting of each arm against its
    reference arm (``compare``, else the baseline); each arm at equal epoch budgets."""
    from stepdistill.study.pairs import equal_budget, shared_settings

    by_arm: dict[str, list[dict]] = {}
    for r in records:
        by_arm.setdefault(r["arm"], []).append(r)
    tuned, chosen = {}, {}
    for arm, rs in by_arm.items():
        settings = by_setting(rs)
        best = pick_setting(settings)
        chosen[arm] = settings[best]
        tuned[arm] = {**summarise(settings[best]), "grid": {
            f"lr={lr:g},epochs={ep:g}": {"valid_mean": round(statistics.mean(x["valid_accuracy"] or 0 for x in v), 4),
                                         "seeds": len(v)} for (lr, ep), v in sorted(settings.items())}}
    reference = {arm: (compare or {}).get(arm, baseline) for arm in by_arm}
    for arm, info in tuned.items():
        if arm != baseline and baseline in chosen and (vs := versus(chosen[arm], chosen[baseline], known)):
            info["vs_baseline"] = vs
        ref = reference[arm]  # a variant against the arm it varies, each at its own pick
        if ref not in (arm, baseline) and ref in chosen and (vs := versus(chosen[arm], chosen[ref], known)):
            info["vs_reference"] = {"arm": ref, **vs}
    if same is None and baseline in tuned:
        same = (tuned[baseline]["lr"], tuned[baseline]["epochs"])
    same_table = {}
    if same is not None:
        base_same = by_setting(by_arm.get(baseline, [])).get(same, [])
        for arm, rs in by_arm.items():
            if rs_same := by_setting(rs).get(same):
                same_table[arm] = summarise(rs_same)
                if arm != baseline and (vs := versus(rs_same, base_same, known)):
                    same_table[arm]["vs_baseline"] = vs
    task, student, size, common = group_key(records[0])
    return {"task": task, "student": student, "train_size": size, "common": list(common), "baseline": baseline,
            "tuned": tuned, "same_settings": {"lr": same[0] if same else None, "epochs": same[1] if same else None,
                                              "arms": same_table},
            "shared_settings": shared_settings(by_arm, reference, known),
            "equal_budget": [c for arm, rs in by_arm.items() if arm != baseline and reference[arm] == baseline
                             for c in equal_budget(arm, rs, by_arm.get(baseline, []), known)]}


def analyse(records: list[dict], baseline: str, same_settings: dict | None = None, known: list[dict] = (),
            teacher: dict | None = None, compare: dict[str, str] | None = None) -> dict:
    """Every group's comparisons, the curves and the answers. ``teacher``: {name, accuracy} for the line;
    ``compare``: arm -> the arm its shared settings are compared with (default: the baseline)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(group_key(r), []).append(r)
    same = (float(same_settings["lr"]), float(same_settings["epochs"])) if same_settings else None
    out = [analyse_group(rs, baseline, same, list(known), compare)
           for _, rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], size_order(kv[0][2]), kv[0][3]))]
    teacher = teacher or teacher_from(records)
    return {"baseline": baseline, "teacher": teacher, "groups": out, "curves": curves(out),
            "answers": answers(out, records, baseline, teacher, list(known))}


def named_teacher(provenance: str | None) -> bool:
    """Whether a run's ``train.data.teacher`` names a teacher: not missing, not unknown, not the one of a run
    on gold labels alone."""
    return bool(provenance) and provenance not in (NO_TEACHER, UNKNOWN_TEACHER)


def own_teacher(provenance: str | None) -> str | None:
    """The task's own teacher in a run's ``train.data.teacher``, without the sources of other rationales files
    ("X (rationales from FILE)"): the teacher whose labels the test split's teacher accuracy measures."""
    if not named_teacher(provenance):
        return None
    return ", ".join(p for p in provenance.split(", ") if "(rationales from " not in p) or None


def teacher_from(records: list[dict]) -> dict | None:
    """The teacher labels' own test accuracy, where the runs measured it, under the name the rationale-trained
    runs give the task's own teacher (the rows' ``teacher`` field or the task's ``teacher:``; not the writers of
    an extra rationales file, whose labels the test split does not hold), else "teacher"."""
    values = [r["teacher_test_accuracy"] for r in records if r.get("teacher_test_accuracy") is not None]
    names = Counter(n for n in (own_teacher(r.get("teacher")) for r in records) if n)
    name = names.most_common(1)[0][0] if names else "teacher"
    return {"name": name, "accuracy": round(statistics.mean(values), 4)} if values else None


def curves(groups: list[dict]) -> dict:
    """(task, student, common) -> arm -> [tuned cell summary + train_size] by training-set size."""
    out: dict[str, dict] = {}
    for g in groups:
        key = " | ".join([g["task"], g["student"], *g["common"]])
        for arm, t in g["tuned"].items():
            out.setdefault(key, {}).setdefault(arm, []).append({"train_size": g["train_size"], **t})
    return out


def verdict(vs: dict | None) -> str:
    b = (vs or {}).get("bootstrap")
    if not b:
        return "untested (per-row results not kept)"
    lo, hi = b["ci95"]
    return "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"


def answers(groups: list[dict], records: list[dict], baseline: str, teacher: dict | None,
            known: list[dict]) -> list[dict]:
    """One sentence per question, each with its evidence (numbers and intervals)."""
    from stepdistill.study.sentences import (model_size, passes_teacher, rationales_vs_plain, rows_needed,
                                             variants_vs_reference)

    out = [rationales_vs_plain(groups, baseline), variants_vs_reference(groups),
           rows_needed(groups, records, baseline, known)]
    if teacher:
        out.append(passes_teacher(groups, teacher))
    if len({g["student"] for g in groups}) > 1:
        out.append(model_size(groups, teacher))
    return [a for a in out if a]
