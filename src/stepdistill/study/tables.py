"""The report's tables beyond the tuned one, from ``analysis.analyse`` groups: each variant against the arm it
varies at their tuned settings; every shared setting (each arm vs its reference arm at the same lr and epochs,
seed for seed, with training time: the variant tables) and the equal-epoch-budget comparison; the compute each
arm cost; and which machines trained the cells.

    from stepdistill.study.tables import shared_table, equal_budget_table, variants_table
"""

from __future__ import annotations

from collections import Counter

from stepdistill.study.sentences import interval_text, pct
from stepdistill.study.spec import size_tag


def group_title(g: dict) -> str:
    return f"{g['task']}, {g['student']}, {size_tag(g['train_size'])}" + (" *" if g["common"] else "")


def seconds(x) -> str:
    return "–" if x is None else f"{x:.0f}"


def shared_table(groups: list[dict]) -> list[str]:
    """Each arm against its reference arm at every (lr, epochs) both ran, whether or not validation picked it."""
    lines = []
    for g in groups:
        for c in sorted(g["shared_settings"], key=lambda c: (c["vs_arm"], c["epochs"], c["lr"], c["arm"])):
            lines.append(f"| {group_title(g)} | {c['arm']} vs {c['vs_arm']} | {c['lr']:g}, {c['epochs']:g} | "
                         f"{c['seeds']} | {pct(c['base_test_mean'])} | {pct(c['test_mean'])} | "
                         f"{interval_text(c['vs'])} | {seconds(c['base_train_seconds'])} → "
                         f"{seconds(c['train_seconds'])} |")
    if not lines:
        return []
    return ["## Every shared setting: each arm vs its reference arm at the same lr and epochs", "",
            "Seed for seed, every (lr, epochs) both arms were run with, whether or not validation picked it; means "
            "over the shared seeds only. The reference arm is the baseline, or the one the spec's `compare` names "
            "(a variant against the arm it varies). Train s: mean training seconds per run.", "",
            "| task, student, rows | arm vs reference | lr, epochs | seeds | reference test | arm test | Δ | "
            "train s/run (reference → arm) |", "|---|---|---|---|---|---|---|---|", *lines, ""]


def variants_table(groups: list[dict]) -> list[str]:
    """Each variant against the arm it varies (the spec's ``compare``), both at their tuned settings."""
    lines = []
    for g in groups:
        for arm, t in g["tuned"].items():
            if vs := t.get("vs_reference"):
                ref = g["tuned"][vs["arm"]]
                lines.append(f"| {group_title(g)} | {arm} vs {vs['arm']} | {ref['lr']:g} / {t['lr']:g} | "
                             f"{ref['epochs']:g} / {t['epochs']:g} | {vs['seeds']} | {pct(ref['test_mean'])} | "
                             f"{pct(t['test_mean'])} | {interval_text(vs)} |")
    if not lines:
        return []
    return ["## Tuned: each variant vs the arm it varies", "",
            "The arms the spec's `compare` sets against another arm than the baseline, each at its own tuned "
            "setting (lr and epochs picked on validation); test means over the shared seeds in Δ, over each "
            "arm's own seeds in the test columns.", "",
            "| task, student, rows | arm vs reference | lr (reference / arm) | epochs (reference / arm) | seeds | "
            "reference test | arm test | Δ |", "|---|---|---|---|---|---|---|---|", *lines, ""]


def equal_budget_table(groups: list[dict], baseline: str) -> list[str]:
    """Each arm against the baseline at each epoch budget both ran, the lr tuned per arm within it."""
    lines = []
    for g in groups:
        for c in sorted(g["equal_budget"], key=lambda c: (c["arm"], c["epochs"])):
            lines.append(f"| {group_title(g)} | {c['arm']} | {c['epochs']:g}{' (picked)' if c['picked'] else ''} | "
                         f"{c['base_lr']:g} / {c['lr']:g} | {c['seeds']} | "
                         f"{pct(c['base_valid_mean'])} / {pct(c['valid_mean'])} | {pct(c['base_test_mean'])} | "
                         f"{pct(c['test_mean'])} | {interval_text(c['vs'])} |")
    if not lines:
        return []
    return [f"## Tuned at an equal epoch budget: each arm vs {baseline}", "",
            "At each epoch budget both were run with, each arm's lr is picked on its own validation scores within "
            "that budget. `picked`: the budget chosen jointly on validation (most shared seeds, then the best sum "
            "of both validation means, then fewer epochs), so both get the same budget, unlike the tuned table, "
            "where each arm picks its own. Means over the shared seeds.", "",
            f"| task, student, rows | arm | epochs | lr ({baseline} / arm) | seeds | valid ({baseline} / arm) | "
            f"{baseline} test | arm test | Δ |", "|---|---|---|---|---|---|---|---|---|", *lines, ""]


def machines_line(records: list[dict]) -> str:
    """Which CPUs trained the cells: the same cell gives other numbers on another CPU model or thread count, and
    bf16 cells run several times slower on a CPU without bf16 units."""
    from stepdistill.student.machine import has_bf16_units

    seen = Counter()
    for r in records:
        for m in r.get("machines") or [None]:
            if m is None:
                seen["not recorded"] += 1
                continue
            units = "" if "isa" not in m else ", bf16 units" if has_bf16_units(m["isa"]) else ", no bf16 units"
            seen[f"{m['cpu']}{units}, {m['threads']} thread{'s' * (m['threads'] != 1)}, torch {m['torch']}"] += 1
    return "Trained on: " + "; ".join(f"{k} ({n} cells)" for k, n in seen.most_common()) + "."


def compute_table(records: list[dict]) -> list[str]:
    """What each arm cost per run: training sequences per epoch (labels and rationales: an arm with several
    rationales per input trains several times the sequences of its inputs), sequences seen, training and wall
    seconds. Only where records carry the sequence count (cells recorded since it was kept)."""
    if not any(r.get("train_sequences") for r in records):
        return []
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    arms: dict[tuple, list[dict]] = {}
    for r in records:
        arms.setdefault((r.get("task"), r.get("student"), size_tag(r.get("train_size")), r["arm"]), []).append(r)
    lines = ["## Compute per arm", "",
             "Means per run; `–` where a record predates the sequence count. Train s leaves out stalls (steps over "
             "5x the median step, counted at the median: a paused or starved process); `†`: some of the arm's runs "
             "were recorded before stalls were kept apart, so their pauses, if any, are in it (n of the runs). Wall "
             "s: every process a cell took, a run resumed after a kill included (cells recorded before the wall "
             "ledger: the last process only).", "",
             "| task, student, rows | arm | runs | sequences / epoch | sequences seen | train s | wall s |",
             "|---|---|---|---|---|---|---|"]
    for (task, student, rows, arm), rs in sorted(arms.items(), key=lambda kv: [str(k) for k in kv[0]]):
        seqs = mean([r["train_sequences"] for r in rs if r.get("train_sequences")])
        seen = mean([r["train_sequences"] * r["epochs"] for r in rs if r.get("train_sequences")])
        unsure = sum(r.get("stalled_seconds") is None for r in rs)
        lines.append(f"| {task}, {student}, {rows} | {arm} | {len(rs)} | {seconds(seqs)} | {seconds(seen)} | "
                     f"{seconds(mean([r['train_seconds'] for r in rs if r.get('train_seconds') is not None]))}"
                     f"{f' † ({unsure} of {len(rs)})' if unsure else ''} | "
                     f"{seconds(mean([r['wall_s'] for r in rs if r.get('wall_s') is not None]))} |")
    return lines + [""]
