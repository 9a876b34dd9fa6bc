"""Rationale pools: several rationales per input, and the policies that choose which ones a student trains on.

    stepdistill train configs/svamp-smollm2.yaml --set data.extra_rationales=svamp/extra_rationales_train.jsonl \
        --set data.rationale_sources=[mcc-kd-chatgpt] --set data.rationale_policy=correct \
        --set data.max_rationales_per_input=4

An input's pool holds its teacher rationale (source ``teacher``: the bundle's, or ``data.rationales``') and,
from a rationales file, any number more. A file row is one of:

* ``{"id", "rationales": [...]}`` with items that are strings or ``{"text", "answer", "correct", "source"}``
  (the shared ``extra_rationales_train.jsonl`` format, and ``stepdistill extract --samples K`` exports);
* ``{"id", "teacher_rationale" or "rationale", "teacher_label" or "answer"}``: one rationale per row, and an id
  may have several rows.

The policies run in a fixed order and each one's drops are counted (``train.data.rationales`` in metrics.json):
sources (``data.rationale_sources``), correctness (``data.rationale_policy``: all, or correct: the rationale's
answer passes the task's check against the gold label), a word cap (``data.max_rationale_words``), then the
order (``data.rationale_order``: given, shortest, longest) and the per-input cap
(``data.max_rationales_per_input``; null = all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from stepdistill.errors import DataError, StepdistillError
from stepdistill.tasks import Example, Task, read_jsonl

TEACHER_SOURCE = "teacher"  # the example's own teacher rationale
# a run's teacher provenance (metrics.json train.data.teacher) when no row names its teacher, or when the run
# learned from gold labels alone (student/data.py writes them; study reports read them)
UNKNOWN_TEACHER = "unknown"
NO_TEACHER = "none: fine-tuned on gold labels only"
FORBIDDEN_FILES = ("extra_rationales_test_overlap",)  # questions of the test split: never train on them


@dataclass(frozen=True)
class Rationale:
    text: str
    answer: str | None = None  # the answer the rationale reaches, as text; None when unknown
    correct: bool | None = None  # the file's own flag, used only when there is no answer to check
    source: str = TEACHER_SOURCE

    @property
    def words(self) -> int:
        return len(self.text.split())


def length_stats(words: Iterable[int]) -> dict:
    """Length statistics of rationales, from their word counts: n, mean, median, p10, p90, min, max (words).
    Percentiles interpolate linearly (numpy's default); empty input gives n=0 and None elsewhere."""
    xs = sorted(int(w) for w in words)
    n = len(xs)
    if not n:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None, "min": None, "max": None}

    def pct(q: float) -> float:
        pos = (n - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        return round(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo), 2)

    return {"n": n, "mean": round(sum(xs) / n, 2), "median": pct(0.5), "p10": pct(0.1), "p90": pct(0.9),
            "min": xs[0], "max": xs[-1]}


def word_count(text: str) -> int:
    return len(text.split())


# ---- reading rationale files -----------------------------------------------------------------------

def _item(raw, where: str, default_source: str) -> Rationale | None:
    """One rationale from a list item (a string or an object); None for an empty text."""
    if isinstance(raw, str):
        raw = {"text": raw}
    if not isinstance(raw, dict):
        raise DataError(f"{where}: a rationale must be a string or an object, got {type(raw).__name__}")
    text = raw.get("text", raw.get("rationale", raw.get("teacher_rationale")))
    if text is not None and not isinstance(text, str):
        raise DataError(f"{where}: rationale text must be a string, got {type(text).__name__}")
    if not text or not text.strip():
        return None
    answer = raw.get("answer", raw.get("label", raw.get("teacher_label")))
    correct = raw.get("correct")
    return Rationale(text=text.strip(), answer=None if answer is None else str(answer),
                     correct=correct if isinstance(correct, bool) else None,
                     source=str(raw.get("source") or default_source))


def read_rationale_file(path: str | Path, test_ids: set[str] = frozenset()) -> dict[str, list[Rationale]]:
    """Rationales per id from a file in any of the module's row formats, in file order. Refuses the test-overlap
    file by name and any id of the test split (``test_ids``), naming ``file:line``."""
    path = Path(path)
    if any(path.name.startswith(name) for name in FORBIDDEN_FILES):
        raise DataError(f"{path}: refusing to train on {path.name}: its questions are in the test split "
                        "(use extra_rationales_train.jsonl)")
    pools: dict[str, list[Rationale]] = {}
    for lineno, row in read_jsonl(path):
        where = f"{path}:{lineno}"
        if "id" not in row:
            raise DataError(f"{where}: rationale record without 'id'")
        rid = str(row["id"])
        if rid in test_ids:
            raise DataError(f"{where}: id {rid!r} is in the test split; never train on test questions")
        source = str(row.get("source") or TEACHER_SOURCE)
        if "rationales" in row:
            if not isinstance(row["rationales"], list):
                raise DataError(f"{where}: 'rationales' must be a list")
            items = [_item(r, f"{where}: rationales[{i}]", source) for i, r in enumerate(row["rationales"])]
        else:
            if row.get("teacher_parse_ok") is False:
                continue
            items = [_item(row, where, source)]
        pools.setdefault(rid, []).extend(r for r in items if r is not None)
    return pools


def test_split_ids(task: Task, data_dir) -> set[str]:
    """Ids of the task's test split (empty when it has none)."""
    if "test" not in task.files:
        return set()
    path = task.path("test", data_dir)
    if not path.exists():
        return set()
    return {str(row.get(task.id_field)) for _, row in read_jsonl(path)}


# ---- policies --------------------------------------------------------------------------------------

def is_correct(task: Task, r: Rationale, ex: Example) -> bool:
    """The rationale's answer passes the task's check against the gold label; the file's flag when it states
    no answer; else False."""
    if r.answer is not None:
        return task.answer.correct(task.answer.normalize(r.answer, ex.row), ex.label, ex.row)
    return bool(r.correct)


CORRECTNESS = {"all": lambda task, r, ex: True, "correct": is_correct}
ORDERS = {
    "given": lambda pool: list(pool),
    "shortest": lambda pool: sorted(pool, key=lambda r: r.words),  # stable: ties keep the given order
    "longest": lambda pool: sorted(pool, key=lambda r: -r.words),
}
COUNTERS = ("candidates", "dropped_source", "dropped_wrong", "dropped_too_long", "dropped_over_cap", "kept")


class RationaleSelector:
    """Choose each input's rationales by the ``data.*`` policies, counting what every step drops.

    ``own``: more rationales of the example's teacher (``data.rationales`` lists: extract --samples K); an item
    equal to the teacher rationale is that rationale and is not added twice. ``extra``: ``data.extra_rationales``."""

    def __init__(self, data_cfg, task: Task, own: dict[str, list[Rationale]] | None = None,
                 extra: dict[str, list[Rationale]] | None = None):
        self.cfg, self.task, self.own, self.extra = data_cfg, task, own or {}, extra or {}
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.inputs_with_candidates = 0
        self.per_input: list[int] = []
        self.kept_words: list[int] = []
        self.candidate_words: list[int] = []
        self.kept_sources: dict[str, int] = {}

    def pool(self, ex: Example, teacher_ok: bool) -> list[Rationale]:
        """Every candidate of ``ex``, teacher first; ``teacher_ok``: its own teacher rationale is usable."""
        pool = []
        if teacher_ok and ex.teacher_rationale:
            pool.append(Rationale(ex.teacher_rationale, ex.teacher_label, None, TEACHER_SOURCE))
        pool += [r for r in self.own.get(ex.id, []) if r.text != ex.teacher_rationale]
        return pool + self.extra.get(ex.id, [])

    def select(self, ex: Example, teacher_ok: bool) -> list[str]:
        """The texts to train on for ``ex``."""
        c, cfg = self.counts, self.cfg
        pool = self.pool(ex, teacher_ok)
        c["candidates"] += len(pool)
        self.inputs_with_candidates += bool(pool)
        self.candidate_words += [r.words for r in pool]
        steps = [
            ("dropped_source", cfg.rationale_sources is not None,
             lambda r: r.source in cfg.rationale_sources),
            ("dropped_wrong", True, lambda r: CORRECTNESS[cfg.rationale_policy](self.task, r, ex)),
            ("dropped_too_long", cfg.max_rationale_words is not None,
             lambda r: r.words <= cfg.max_rationale_words),
        ]
        for counter, active, keep in steps:
            if active:
                kept = [r for r in pool if keep(r)]
                c[counter] += len(pool) - len(kept)
                pool = kept
        pool = ORDERS[cfg.rationale_order](pool)
        cap = cfg.max_rationales_per_input
        if cap is not None:
            c["dropped_over_cap"] += max(0, len(pool) - cap)
            pool = pool[:cap]
        c["kept"] += len(pool)
        for r in pool:
            self.kept_sources[r.source] = self.kept_sources.get(r.source, 0) + 1
        self.per_input.append(len(pool))
        self.kept_words += [r.words for r in pool]
        return [r.text for r in pool]

    def report(self) -> dict:
        cfg, k = self.cfg, self.per_input
        hist: dict[str, int] = {}
        for n in sorted(k):
            hist[str(n)] = hist.get(str(n), 0) + 1
        return {
            "file": cfg.extra_rationales, "sources": cfg.rationale_sources, "policy": cfg.rationale_policy,
            "order": cfg.rationale_order, "max_per_input": cfg.max_rationales_per_input,
            "max_words": cfg.max_rationale_words, "weighting": cfg.rationale_weighting,
            **self.counts, "inputs": len(k), "inputs_with_candidates": self.inputs_with_candidates,
            "inputs_with_rationales": sum(1 for n in k if n), "inputs_label_only": sum(1 for n in k if not n),
            "rationales_per_input": hist, "kept_by_source": dict(sorted(self.kept_sources.items())),
            "words_kept": length_stats(self.kept_words), "words_candidates": length_stats(self.candidate_words),
        }


def resolve_rationale_path(path: str | None, data_dir) -> Path | None:
    """``path`` as given when it exists, else relative to the benchmark data folder (``data.data_dir`` or
    $STEPDISTILL_DATA), so configs can say ``svamp/extra_rationales_train.jsonl`` on any machine."""
    if not path or Path(path).exists() or Path(path).is_absolute():
        return Path(path) if path else None
    from stepdistill.tasks.core import resolve_data_dir

    try:
        candidate = resolve_data_dir(data_dir) / path
    except StepdistillError:
        return Path(path)
    return candidate if candidate.exists() else Path(path)


def provenance(selector: RationaleSelector, own_teacher: str, teacher_labels: bool) -> str:
    """Who wrote what a run trains on: the input's own teacher (``own_teacher``) where its rationales or labels are
    used, and each other source of kept rationales with its file, most rationales first."""
    others = sorted((s for s in selector.kept_sources if s != TEACHER_SOURCE), key=lambda s: -selector.kept_sources[s])
    parts = [own_teacher] if selector.kept_sources.get(TEACHER_SOURCE) or teacher_labels else []
    name = Path(selector.cfg.extra_rationales or "").name
    parts += [f"{s} (rationales from {name})" for s in others]
    return ", ".join(parts) or "none: fine-tuned on gold labels only"


def make_selector(data_cfg, task: Task) -> RationaleSelector:
    """The selector for a run: more teacher rationales from ``rationales`` lists in ``data.rationales``
    (extract --samples K exports) and other rationales from ``data.extra_rationales``; both files are checked
    against the test split."""
    files = [resolve_rationale_path(p, data_cfg.data_dir) for p in (data_cfg.rationales, data_cfg.extra_rationales)]
    test_ids = test_split_ids(task, data_cfg.data_dir) if any(files) else set()
    own, extra = ({} if not path else read_rationale_file(path, test_ids) for path in files)
    return RationaleSelector(data_cfg, task, own, extra)
