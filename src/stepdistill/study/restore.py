"""``stepdistill study --restore``: retrain the finished cells of the grid whose per-row test results are lost
(a record without them: imported from an old results file, or a run directory deleted before records kept them),
so their comparisons get McNemar tests and intervals again. Each retrained cell is appended to the record log as
a record that takes the old one's place (``RecordLog.load``), the old accuracies kept under ``replaced``.

    stepdistill study configs/studies/paper_svamp.yaml --restore --dry-run

A retrained run need not repeat its accuracy bit for bit (another CPU, other kernels), so every comparison that
uses it changes with it; the comparisons that lose their tests that way are named before anything runs.
"""

from __future__ import annotations

REPLACED_KEYS = ("test_accuracy", "valid_accuracy", "train_seconds", "stalled_seconds", "wall_s", "run_dir",
                 "machines", "precision", "imported_from")


def lost(cells, records: list[dict]) -> list:
    """The cells of the grid that are recorded without per-row test results, once each."""
    have = {r["cell"]: r for r in records}
    out, seen = [], set()
    for c in cells:
        if c.cid in have and not have[c.cid].get("correct") and c.cid not in seen:
            seen.add(c.cid)
            out.append(c)
    return out


def at_risk(restoring: set[str], records: list[dict], comparisons: list[dict]) -> list[str]:
    """The kept comparisons (tested by an earlier report, ``RecordLog.comparisons``) that set a cell being
    restored against one not restored that has no per-row results either: if the restored run does not repeat its
    accuracy, such a comparison has no test left. One line each, naming both sides."""
    by_cid = {r["cell"]: r for r in records}
    out = []
    for k in comparisons:
        cells = k["mine"] + k["base"]
        if set(cells) & restoring and any(c not in restoring and c in by_cid and not by_cid[c].get("correct")
                                          for c in cells):
            out.append(" vs ".join(f"{side(by_cid, k[s])}" for s in ("mine", "base")))
    return sorted(set(out))


def side(by_cid: dict, cids: list[str]) -> str:
    r = [by_cid[c] for c in cids if c in by_cid]
    if not r:
        return "?"
    return (f"{r[0]['task']} n={r[0]['train_size']} {r[0]['arm']} (lr {r[0]['lr']:g}, {r[0]['epochs']:g} ep), "
            f"seeds {sorted(x['seed'] for x in r)}")


def plan(cells, records: list[dict], comparisons: list[dict], dry_run: bool) -> tuple[list, dict[str, dict]]:
    """The cells to retrain and their old records (by cell id); prints what it will do."""
    todo = lost(cells, records)
    print(f"{len(todo)} finished cells have lost their per-row test results"
          + ("" if dry_run or not todo else "; retraining them"), flush=True)
    risky = at_risk({c.cid for c in todo}, records, comparisons)
    if risky:
        print(f"  {len(risky)} comparisons tested by an earlier report set these cells against cells not restored "
              "that have no per-row results either: where a restored cell does not repeat its accuracy, they lose "
              "their tests unless the other side is restored too:", flush=True)
        for line in risky:
            print("     " + line, flush=True)
    old = {r["cell"]: r for r in records}
    return todo, {c.cid: old[c.cid] for c in todo}


def replacing(rec: dict, old: dict) -> dict:
    """``rec`` marked as taking ``old``'s place, with the old values it replaces."""
    return {**rec, "replaced": {k: old.get(k) for k in REPLACED_KEYS}}
