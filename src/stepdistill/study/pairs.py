"""Arm-vs-arm comparisons beyond the tuned one, seed for seed on the same test rows: every (lr, epochs) that two
arms both ran (the same-settings comparisons, including settings validation did not pick), and each arm against
the baseline at an equal epoch budget with each lr tuned within it. Pure functions of the records.

    from stepdistill.study.pairs import shared_settings, equal_budget

An arm is compared with the baseline, or with the arm the spec's ``compare`` names for it (``dsbs_suffix: dsbs``:
a variant of dsbs against dsbs, at every setting both ran).
"""

from __future__ import annotations

import statistics

from stepdistill.study.stats import by_setting, pick_setting


def seed_mean(rs: list[dict], seeds: list[int], key: str) -> float | None:
    """The mean of ``key`` over the records of ``seeds`` (a missing value counts 0); None if none has it."""
    values = [r.get(key) for r in rs if r["seed"] in seeds]
    if all(v is None for v in values):
        return None
    return round(statistics.mean(v or 0 for v in values), 4)


def paired(mine: list[dict], base: list[dict], known: list[dict]) -> dict | None:
    """Two settings' records on their shared seeds: each side's test (and validation, training seconds) mean over
    those seeds and ``analysis.versus``; None if they share no seed."""
    from stepdistill.study.analysis import versus

    seeds = sorted({r["seed"] for r in mine} & {r["seed"] for r in base})
    if not seeds:
        return None
    out = {"seeds": seeds}
    for key, name in [("test_accuracy", "test_mean"), ("valid_accuracy", "valid_mean"),
                      ("train_seconds", "train_seconds")]:
        out[name], out["base_" + name] = seed_mean(mine, seeds, key), seed_mean(base, seeds, key)
    return {**out, "vs": versus(mine, base, known)}


def shared_settings(by_arm: dict[str, list[dict]], reference: dict[str, str], known: list[dict]) -> list[dict]:
    """Each arm against its reference arm (``reference[arm]``) at every (lr, epochs) both ran."""
    out = []
    for arm, rs in by_arm.items():
        ref = reference.get(arm)
        if ref is None or ref == arm or ref not in by_arm:
            continue
        base = by_setting(by_arm[ref])
        for (lr, epochs), srs in sorted(by_setting(rs).items()):
            if pair := paired(srs, base.get((lr, epochs), []), known):
                out.append({"arm": arm, "vs_arm": ref, "lr": lr, "epochs": epochs, **pair})
    return out


def equal_budget(arm: str, mine: list[dict], base: list[dict], known: list[dict]) -> list[dict]:
    """``mine`` against the baseline's records at each epoch budget both ran, each lr picked on validation within
    that budget. The budget reported (``picked``) is chosen jointly, on validation only: most shared seeds, then
    the best sum of both validation means, then fewer epochs; the tuned comparison instead lets each arm pick its
    own budget, so it can set different budgets against each other."""
    mine_settings, base_settings = by_setting(mine), by_setting(base)
    out = []
    for epochs in sorted({s[1] for s in mine_settings} & {s[1] for s in base_settings}):
        m = mine_settings[pick_setting({s: v for s, v in mine_settings.items() if s[1] == epochs})]
        b = base_settings[pick_setting({s: v for s, v in base_settings.items() if s[1] == epochs})]
        if pair := paired(m, b, known):
            out.append({"arm": arm, "epochs": epochs, "lr": m[0]["lr"], "base_lr": b[0]["lr"], **pair,
                        "picked": False})
    if out:
        max(out, key=lambda c: (len(c["seeds"]), (c["valid_mean"] or 0) + (c["base_valid_mean"] or 0),
                                -c["epochs"]))["picked"] = True
    return out
