"""The report's answers, one sentence per question with its evidence, from ``analysis.analyse`` groups.

    from stepdistill.study.sentences import rationales_vs_plain

Questions: does training on rationales beat plain fine-tuning, and each variant the arm it varies; how many
labelled rows are needed (an arm on fewer rows against the baseline on the most, and the smallest set at which
the student passes the teacher); how small the student can be.
"""

from __future__ import annotations

from stepdistill.study.spec import size_tag


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def interval_text(vs: dict | None) -> str:
    """``+0.9 points, 95% interval [-0.9, +2.7] (seeds × test rows), McNemar p 0.228, 0.749 per seed``."""
    if not vs:
        return "not compared"
    text = f"{100 * vs['diff_mean']:+.1f} points"
    b = vs.get("bootstrap")
    if b:
        text += f", 95% interval [{100 * b['ci95'][0]:+.1f}, {100 * b['ci95'][1]:+.1f}] (seeds × test rows)"
    if vs.get("per_seed"):
        text += ", McNemar p " + ", ".join(f"{x['p_value']:.3g}" for x in vs["per_seed"].values()) + " per seed"
    if vs.get("predictions_missing"):
        text += " (no test: per-row results not kept)"
    return text


def by_line(groups: list[dict]) -> dict[tuple, list[dict]]:
    """(task, student, common) -> its groups by increasing training-set size."""
    from stepdistill.study.analysis import size_order

    out: dict[tuple, list[dict]] = {}
    for g in groups:
        out.setdefault((g["task"], g["student"], tuple(g["common"])), []).append(g)
    return {k: sorted(v, key=lambda g: size_order(g["train_size"])) for k, v in out.items()}


def rows_text(g: dict) -> str:
    n = g["train_size"]
    return "the whole training pool" if n is None else f"{size_tag(n)} rows"


def shared_seeds(vs: dict, *arms: dict) -> str:
    """`` (Δ on the shared seeds [0])`` where the difference is paired over fewer seeds than the arms' means."""
    return "" if all(a["seeds"] == vs["seeds"] for a in arms) else f" (Δ on the shared seeds {vs['seeds']})"


def gap_sentence(g: dict, arm: str, t: dict, other: str, o: dict, vs: dict) -> str:
    """``On 720 rows of svamp (smollm2-135m), A scores x% against B's y% at their tuned settings: ...``."""
    from stepdistill.study.analysis import verdict

    return (f"On {rows_text(g)} of {g['task']} ({g['student']}), {arm} scores {pct(t['test_mean'])}% against "
            f"{other}'s {pct(o['test_mean'])}% at their tuned settings{shared_seeds(vs, t, o)}: {interval_text(vs)}"
            + ("." if vs.get("predictions_missing") else f" — {verdict(vs)}."))


def rationales_vs_plain(groups: list[dict], baseline: str) -> dict | None:
    """Every arm against the baseline on the largest training set, each at its tuned setting."""
    sentences, evidence = [], []
    for (task, student, _), gs in by_line(groups).items():
        g = gs[-1]
        base = g["tuned"].get(baseline)
        for arm, t in g["tuned"].items():
            if arm == baseline or not base or "vs_baseline" not in t:
                continue
            vs = t["vs_baseline"]
            sentences.append(gap_sentence(g, arm, t, baseline, base, vs))
            evidence.append({"task": task, "student": student, "train_size": g["train_size"], "arm": arm, **vs})
    if not sentences:
        return None
    return {"question": f"Does each arm beat {baseline}?", "answer": " ".join(sentences), "evidence": evidence}


def variants_vs_reference(groups: list[dict]) -> dict | None:
    """Every variant (an arm the spec's ``compare`` sets against another arm) against that arm on the largest
    training set, each at its tuned setting."""
    sentences, evidence = [], []
    for (task, student, _), gs in by_line(groups).items():
        g = gs[-1]
        for arm, t in g["tuned"].items():
            if not (vs := t.get("vs_reference")):
                continue
            sentences.append(gap_sentence(g, arm, t, vs["arm"], g["tuned"][vs["arm"]], vs))
            evidence.append({"task": task, "student": student, "train_size": g["train_size"], "arm": arm,
                             "reference": vs["arm"], **{k: v for k, v in vs.items() if k != "arm"}})
    if not sentences:
        return None
    return {"question": "Does each variant beat the arm it varies?", "answer": " ".join(sentences),
            "evidence": evidence}


def rows_needed(groups: list[dict], records: list[dict], baseline: str, known: list[dict]) -> dict | None:
    """The fewest rows on which an arm matches the baseline trained on the most rows (its interval reaches 0 or
    above; by the means where per-row results are lost)."""
    from stepdistill.study.analysis import versus

    cells = {r["cell"]: r for r in records}
    sentences, evidence = [], []
    for (task, student, _), gs in by_line(groups).items():
        top = gs[-1]
        if len(gs) < 2 or baseline not in top["tuned"]:
            continue
        base = [cells[c] for c in top["tuned"][baseline]["cells"]]
        for arm in [a for a in top["tuned"] if a != baseline]:
            found = None
            for g in gs[:-1]:  # fewer rows than the baseline's
                if arm not in g["tuned"]:
                    continue
                vs = versus([cells[c] for c in g["tuned"][arm]["cells"]], base, known)
                b = (vs or {}).get("bootstrap")
                if vs and (b["ci95"][1] >= 0 if b else vs["diff_mean"] >= 0):
                    found = (g, vs)
                    break
            if found:
                g, vs = found
                sentences.append(f"{arm} on {rows_text(g)} matches {baseline} on {rows_text(top)} ({task}, "
                                 f"{student}): {pct(g['tuned'][arm]['test_mean'])}% vs "
                                 f"{pct(top['tuned'][baseline]['test_mean'])}%, {interval_text(vs)}.")
                evidence.append({"task": task, "student": student, "arm": arm, "train_size": g["train_size"],
                                 "baseline_train_size": top["train_size"], **vs})
            else:
                tried = [rows_text(g) for g in gs[:-1] if arm in g["tuned"]]
                sentences.append(
                    f"{arm} does not match {baseline} on {rows_text(top)} with fewer rows ({task}, {student}): the "
                    f"interval of the difference lies below 0 on each smaller training set tried ({', '.join(tried)})."
                    if tried else f"{arm}: no training set smaller than {rows_text(top)} was tried ({task}, {student}).")
    if not sentences:
        return None
    return {"question": "How many labelled rows does each arm need?", "answer": " ".join(sentences),
            "evidence": evidence}


def passes_teacher(groups: list[dict], teacher: dict) -> dict | None:
    """Per arm, the smallest training set whose tuned test accuracy passes the teacher's: by the mean, and,
    where that set's interval still holds the teacher's accuracy, the smallest whose whole interval is above."""
    acc, name = teacher["accuracy"], teacher.get("name", "teacher")
    sentences, evidence = [], []
    for (task, student, _), gs in by_line(groups).items():
        first, clearly = {}, {}
        for arm in dict.fromkeys(a for g in gs for a in g["tuned"]):
            mine = [g for g in gs if arm in g["tuned"]]
            g = next((g for g in mine if g["tuned"][arm]["test_mean"] > acc), None)
            clear = next((g for g in mine if (g["tuned"][arm].get("interval") or [0])[0] > acc), None)
            first[arm], clearly[arm] = g, clear
            if g:
                sentences.append(f"{arm} ({task}, {student}) passes {name}'s {pct(acc)}% from {rows_text(g)} on: "
                                 + _accuracy_text(g["tuned"][arm], acc) + _clearly_text(g, clear, arm, acc, mine))
            else:
                best = max((g["tuned"][arm]["test_mean"] for g in mine), default=None)
                sentences.append(f"{arm} ({task}, {student}) does not pass {name}'s {pct(acc)}% at any size tried "
                                 f"(best {pct(best)}%).")
            evidence.append({"task": task, "student": student, "arm": arm,
                             "train_size": first[arm]["train_size"] if first[arm] else "none",
                             "clearly_from": clear["train_size"] if clear else "none"})
        sentences += _fewest(first, "by the mean") + _fewest(clearly, "with the whole interval above it")
    return {"question": "At which training-set size does the student pass the teacher?",
            "answer": " ".join(sentences), "evidence": evidence}


def _fewest(first: dict[str, dict | None], how: str) -> list[str]:
    """Which arm gets past the teacher on the fewest rows (``first``: arm -> its first such group), when two
    or more arms get there at all."""
    from stepdistill.study.analysis import size_order

    sizes = {a: g["train_size"] for a, g in first.items() if g}
    if len(sizes) < 2:
        return []
    fewest = min(sizes, key=lambda a: size_order(sizes[a]))
    if len(set(sizes.values())) == 1:
        return [f"{how[0].upper() + how[1:]}, {' and '.join(sizes)} get there on the same rows "
                f"({rows_text(first[fewest])})."]
    return [f"{fewest} gets there ({how}) with the fewest rows."]


def _accuracy_text(t: dict, acc: float) -> str:
    """``76.2 ± 2.5%, interval [72.6, 79.8]``, saying so where the interval holds the teacher's accuracy."""
    text = f"{pct(t['test_mean'])} ± {100 * t['test_sd']:.1f}%"
    if t.get("interval"):
        low, high = t["interval"]
        text += f", interval [{pct(low)}, {pct(high)}]" + (f", which holds {pct(acc)}%" if low <= acc else "")
    return text


def _clearly_text(g: dict, clear: dict | None, arm: str, acc: float, mine: list[dict]) -> str:
    """Where the first set that passes by the mean is not clearly above: the first that is, if any."""
    low = (g["tuned"][arm].get("interval") or [None])[0]
    if low is None or low > acc:
        return "."
    if clear is not None:
        return (f"; the whole interval is above it from {rows_text(clear)} on "
                f"({_accuracy_text(clear['tuned'][arm], acc)}).")
    unknown = [rows_text(x) for x in mine if "interval" not in x["tuned"][arm] and x["tuned"][arm]["test_mean"] > acc]
    return ("; no size tried puts the whole interval above it"
            + (f" (no interval on {', '.join(unknown)}: per-row results not recorded)." if unknown else "."))


def model_size(groups: list[dict], teacher: dict | None) -> dict:
    """On the largest training set, each student's best arm; the smallest student that passes the teacher."""
    sentences, evidence = [], []
    for student in dict.fromkeys(g["student"] for g in groups):
        gs = [g for g in groups if g["student"] == student]
        top = max(gs, key=lambda g: float("inf") if g["train_size"] is None else g["train_size"])
        arm, t = max(top["tuned"].items(), key=lambda kv: kv[1]["test_mean"])
        passed = teacher is not None and t["test_mean"] > teacher["accuracy"]
        sentences.append(f"{student}: best {arm} at {pct(t['test_mean'])}% on {rows_text(top)}"
                         + (" (passes the teacher)" if passed else "") + ".")
        evidence.append({"student": student, "arm": arm, "test_mean": t["test_mean"], "passes_teacher": passed})
    return {"question": "How small can the student be?", "answer": " ".join(sentences), "evidence": evidence}
