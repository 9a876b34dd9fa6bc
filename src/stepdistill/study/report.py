"""A study's report: ``study.json`` (records' summary, comparisons, curves, answers), ``report.md`` and PNG
plots, rebuilt from the record log alone (no run directories needed).

    stepdistill study configs/studies/esnli_sizes.yaml --report-only
"""

from __future__ import annotations

import json
from pathlib import Path

from stepdistill.study.analysis import analyse, size_order
from stepdistill.study.sentences import interval_text, pct
from stepdistill.study.spec import size_tag
from stepdistill.study.tables import (compute_table, equal_budget_table, group_title, machines_line, shared_table,
                                     variants_table)


def write_report(spec, records: list[dict], known: list[dict], out: Path, stem: str | None = None,
                 extra: list[str] = ()) -> dict:
    """Write study.json, report.md and the plots under ``out`` (``<stem>.json``, ``<stem>.md`` and plots named
    ``<stem>_*.png`` when given), ``extra`` markdown lines at the end; returns the summary."""
    result = analyse(records, spec.baseline, spec.same_settings, known, spec.teacher, spec.compare)
    prefix = f"{stem}_" if stem else ""
    plots = [*plot_sizes(result, out, prefix), *plot_students(result, out, prefix),
             *plot_differences(result, out, prefix)]
    summary = {"study": spec.name, "spec": str(spec.path), "description": spec.description,
               "grid": {"methods": spec.methods, "baseline": spec.baseline, "compare": spec.compare,
                        "train_sizes": spec.train_sizes,
                        "students": spec.students, "seeds": spec.seeds, "lrs": spec.lrs, "epochs": spec.epochs,
                        "set": spec.set},
               "records": [{k: v for k, v in r.items() if k != "correct"} for r in records],
               **result, "plots": plots}
    json_name, md_name = (f"{stem}.json", f"{stem}.md") if stem else ("study.json", "report.md")
    for name, text in [(json_name, json.dumps(summary, indent=1, default=str)),
                       (md_name, "\n".join(markdown(spec, result, records, plots) + list(extra)) + "\n")]:
        tmp = out / f"{name}.tmp"  # a kill never leaves half a report
        tmp.write_text(text)
        tmp.replace(out / name)
    return summary


def markdown(spec, result: dict, records: list[dict], plots: list[str]) -> list[str]:
    teacher = result["teacher"]
    lines = [f"# Study: {spec.name}", "", spec.description, "" if spec.description else None,
             f"{len(records)} cells recorded. Arms: " + ", ".join(f"`{a}` ({' '.join(o) or 'base config'})"
                                                                for a, o in spec.methods.items())
             + f"; baseline `{spec.baseline}`. Seeds {spec.seeds}, lr {spec.lrs}, epochs {spec.epochs}"
             + (f"; every cell with `{' '.join(spec.set)}`" if spec.set else "") + ". " + machines_line(records),
             "", "Tuned = lr and epochs picked per arm on validation (most seeds, best mean validation accuracy); "
             "test accuracy is read only for that pick and for the same-settings comparison. Accuracy in %, mean "
             "± sample sd over seeds. Δ: vs the baseline, paired by seed, with a 95% bootstrap interval over "
             "seeds × test rows and exact McNemar p per seed.", ""]
    lines += ["## Answers", ""] + [f"* **{a['question']}** {a['answer']}" for a in result["answers"]] + [""]
    if teacher:
        lines += [f"Teacher ({teacher.get('name', 'teacher')}): {pct(teacher['accuracy'])}%.", ""]
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [])
    for g in result["groups"]:
        lines += [f"## {g['task']}, {g['student']}, {size_tag(g['train_size'])} training rows"
                  + (f" ({', '.join(g['common'])})" if g["common"] else ""), "",
                  f"| arm | tuned lr, epochs | valid | test (tuned) | Δ vs {spec.baseline} | same settings (lr "
                  f"{g['same_settings']['lr']:g}, {g['same_settings']['epochs']:g} ep) | Δ vs {spec.baseline} |"
                  if g["same_settings"]["lr"] is not None else
                  f"| arm | tuned lr, epochs | valid | test (tuned) | Δ vs {spec.baseline} | same settings | Δ |",
                  "|---|---|---|---|---|---|---|"]
        for arm, t in g["tuned"].items():
            s = g["same_settings"]["arms"].get(arm)
            lines.append(f"| {arm} | {t['lr']:g}, {t['epochs']:g} | {pct(t['valid_mean'])} | {pct(t['test_mean'])} "
                         f"± {100 * t['test_sd']:.1f} (seeds {t['seeds']}) | "
                         f"{interval_text(t.get('vs_baseline')) if arm != spec.baseline else '–'} | "
                         + (f"{pct(s['test_mean'])} ± {100 * s['test_sd']:.1f}" if s else "not run") + " | "
                         + (interval_text(s.get("vs_baseline")) if s and arm != spec.baseline else "–") + " |")
        lines += ["", "Validation grid: " + "; ".join(
            f"{arm}: " + ", ".join(f"{k} {pct(v['valid_mean'])} ({v['seeds']} seeds)" for k, v in t["grid"].items())
            for arm, t in g["tuned"].items()), ""]
    lines += variants_table(result["groups"]) + equal_budget_table(result["groups"], spec.baseline)
    lines += shared_table(result["groups"])
    lines += compute_table(records)
    return [x for x in lines if x is not None]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sizes(result: dict, out: Path, prefix: str = "") -> list[str]:
    """accuracy vs training examples, a line per arm with error bars over seeds, the teacher as a line."""
    plt = _pyplot()
    curves = {k: v for k, v in result["curves"].items()
              if len({p["train_size"] for arm in v.values() for p in arm}) > 1}
    if plt is None or not curves:
        return []
    names = []
    for i, (key, arms) in enumerate(curves.items()):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for arm, points in arms.items():
            pts = sorted((p for p in points if p.get("n_train_used")), key=lambda p: size_order(p["train_size"]))
            xs = [p["n_train_used"] for p in pts]
            ax.errorbar(xs, [100 * p["test_mean"] for p in pts], yerr=[100 * p["test_sd"] for p in pts],
                        marker="o", capsize=3, label=arm)
        if result["teacher"]:
            ax.axhline(100 * result["teacher"]["accuracy"], ls="--", color="grey",
                       label=result["teacher"].get("name", "teacher"))
        ax.set_xscale("log")
        ticks = sorted({p["n_train_used"] for v in arms.values() for p in v if p.get("n_train_used")})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training examples")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(key.split(" | ")[0] + ": " + key.split(" | ")[1] + " student", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        names.append(prefix + ("accuracy_vs_examples.png" if i == 0 else f"accuracy_vs_examples_{i}.png"))
        fig.savefig(out / names[-1], dpi=120)
        plt.close(fig)
    return names


def plot_students(result: dict, out: Path, prefix: str = "") -> list[str]:
    """accuracy vs student (in the spec's order) on the largest training set, a line per arm."""
    plt = _pyplot()
    students = list(dict.fromkeys(g["student"] for g in result["groups"]))
    if plt is None or len(students) < 2:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    arms = list(dict.fromkeys(a for g in result["groups"] for a in g["tuned"]))
    for arm in arms:
        xs, ys, es = [], [], []
        for i, student in enumerate(students):
            gs = [g for g in result["groups"] if g["student"] == student and arm in g["tuned"]]
            if gs:
                t = max(gs, key=lambda g: size_order(g["train_size"]))["tuned"][arm]
                xs.append(i), ys.append(100 * t["test_mean"]), es.append(100 * t["test_sd"])
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=arm)
    if result["teacher"]:
        ax.axhline(100 * result["teacher"]["accuracy"], ls="--", color="grey",
                   label=result["teacher"].get("name", "teacher"))
    ax.set_xticks(range(len(students)), students, fontsize=7)
    ax.set_xlabel("student")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{prefix}accuracy_vs_student.png", dpi=120)
    plt.close(fig)
    return [f"{prefix}accuracy_vs_student.png"]


def overrides_apart(g: dict, tops: list[dict]) -> str:
    """`` (mixed_precision=bf16)`` or `` (without mixed_precision=bf16)``: what sets ``g`` apart from the other
    lines of the same title (task, student, size), which differ only in the overrides all their arms shared."""
    same = [set(t["common"]) for t in tops if group_title(t) == group_title(g)]
    differ = set.union(*same) - set.intersection(*same)
    mine = sorted(differ & set(g["common"]))
    short = lambda xs: ", ".join(x.split(".")[-1] for x in xs)  # noqa: E731
    return "" if len(same) < 2 else f" ({short(mine)})" if mine else f" (without {short(sorted(differ))})"


def plot_differences(result: dict, out: Path, prefix: str = "") -> list[str]:
    """Each arm's difference from the baseline, and each variant's from the arm it varies, at their tuned settings
    on the largest training set of each task and student: the mean difference over seeds with its 95% interval
    over seeds x test rows, a line at zero. Only comparisons that kept per-row results."""
    from stepdistill.study.sentences import by_line

    plt = _pyplot()
    rows = []  # (label, diff, lo, hi)
    tops = [gs[-1] for gs in by_line(result["groups"]).values()]  # each task and student's most rows
    for g in tops:
        where = "" if len(tops) == 1 else f"{group_title(g)}{overrides_apart(g, tops)}: "
        for arm, t in g["tuned"].items():
            for vs, ref in [(t.get("vs_baseline"), result["baseline"]), (t.get("vs_reference"), None)]:
                if vs and vs.get("bootstrap"):
                    lo, hi = vs["bootstrap"]["ci95"]
                    n = len(vs["seeds"])
                    label = f"{where}{arm} − {ref or vs['arm']} ({n} seed{'s' * (n > 1)})"
                    rows.append((label, vs["diff_mean"], lo, hi))
    if plt is None or not rows:
        return []
    fig, ax = plt.subplots(figsize=(3.5 + 0.055 * max(len(r[0]) for r in rows), 1.3 + 0.4 * len(rows)))
    ys = list(range(len(rows)))[::-1]
    for y, (_, d, lo, hi) in zip(ys, rows):
        color = "tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:blue"
        ax.errorbar([100 * d], [y], xerr=[[100 * (d - lo)], [100 * (hi - d)]], fmt="o", color=color, capsize=3)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(ys, [r[0] for r in rows], fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("Δ test accuracy (points), 95% interval\n(seeds × test rows; tuned settings, most rows)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{prefix}differences.png", dpi=120)
    plt.close(fig)
    return [f"{prefix}differences.png"]
