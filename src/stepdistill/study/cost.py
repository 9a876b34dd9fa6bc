"""What a study's cells will cost, for ``--dry-run``, the order cells run in and the ETA.

Training time on one machine follows the tokens trained: the 135M student on a 2-core CPU trained ~80 real
tokens/s whether each input brought one sequence (standard fine-tuning), two (dsbs) or five longer ones (dsbs
with four sampled rationales per input), while its examples/s differed 8-fold. So a cell is priced by the tokens
its arm trains per epoch (its training data built and tokenized exactly as training would: the rationale policies,
the teacher-failure policy, the truncation) over the tokens/s of finished cells of the same student, taken from
this machine's cells where there are any (the same CPU model with the same bf16 units, a VM may hide them, in the
same precision: bf16 trained 3.8x faster than fp32 on a CPU with bf16 units and 0.35x on one without). Where the
tokens cannot be counted (the student's tokenizer is not at hand, the data does not build), the examples/s of the
arm's own cells, else of the student's other arms.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field

from stepdistill.study.spec import Cell, StudySpec

# how an estimate was made; dry-run marks the weaker ones
TOKENS, TOKENS_ELSEWHERE, ARM_RATE, OTHER_ARMS = "tokens", "tokens, rate of another machine", "arm", "other arms"


def this_machine() -> dict:
    """This machine's description, as a run records it in ``machines``."""
    import torch

    from stepdistill.student.machine import machine_info

    return machine_info(torch.device("cpu"))


def bf16_units(machine: dict) -> bool:
    from stepdistill.student.machine import has_bf16_units

    return has_bf16_units(machine.get("isa") or [])


def same_kind(a: dict, b: dict) -> bool:
    """Whether two machine descriptions train at the same speed: the same CPU model with the same bf16 units."""
    return bool(a.get("cpu")) and a.get("cpu") == b.get("cpu") and bf16_units(a) == bf16_units(b)


def training_tokens(spec: StudySpec, cell: Cell) -> int:
    """Real (unpadded) tokens one epoch of ``cell`` trains: every view of every kept input, decoder targets
    included for seq2seq students."""
    from stepdistill.student.data import attach_rationales, build_training_data
    from stepdistill.student.models import load_tokenizer
    from stepdistill.tasks import get_task, load_splits

    cfg = spec.resolve(cell.overrides)
    task = get_task(cfg.data.task)
    splits = load_splits(task, cfg.data.data_dir, train_size=cfg.data.train_size, valid_size=cfg.data.valid_size,
                         seed=cfg.train.seed, valid_fraction=cfg.data.valid_fraction, with_test=False)
    examples = splits.train
    if cfg.data.rationales:
        examples, _ = attach_rationales(task, examples, cfg.data.rationales)
    data = build_training_data(cfg, task, examples, load_tokenizer(cfg.student.family, cfg.student.name))
    if data.shared is not None:  # the suffix layout trains each input's views in one sequence
        return sum(len(f.input_ids) for f in data.shared)
    decoder = cfg.student.family == "seq2seq"
    return sum(len(f.input_ids) + (len(f.labels) if decoder else 0) for f in data.features)


@dataclass
class CostModel:
    """Estimates for the cells of ``spec`` from its finished ``records``; token counts are built once per arm,
    student and training size (``tokens_of`` replaces the counting, for tests)."""

    spec: StudySpec
    records: list[dict]
    cells: list[Cell]
    tokens_of: object = None
    machine: dict | None = None
    _tokens: dict = field(default_factory=dict)

    def __post_init__(self):
        self.tokens_of = self.tokens_of or (lambda cell: training_tokens(self.spec, cell))
        self.by_cid = {c.cid: c for c in self.cells}

    def tokens(self, cell: Cell) -> int | None:
        key = (cell.arm, cell.student, cell.train_size)
        if key not in self._tokens:
            try:
                self._tokens[key] = self.tokens_of(cell)
            except Exception as exc:  # an estimate never stops a study; the cell itself will say what is wrong
                print(f"[study] cannot count the training tokens of {cell.arm} n={cell.train_size} "
                      f"({type(exc).__name__}: {exc}); pricing it by examples/s", file=sys.stderr)
                self._tokens[key] = None
        return self._tokens[key]

    def precision(self, cell: Cell) -> str:
        """The precision ``cell`` trains in on this machine (train.mixed_precision, auto resolved)."""
        setting = self.spec.resolve(cell.overrides).train.mixed_precision
        if setting != "auto":
            return setting
        return "bf16" if self.machine and bf16_units(self.machine) else "fp32"

    def token_rates(self, cell: Cell) -> tuple[list[float], bool]:
        """Tokens/s of the finished cells of ``cell``'s student: those of this kind of machine in ``cell``'s
        precision if any (True), else those of any machine in that precision, else all of them."""
        rates: list[tuple[float, bool, bool]] = []
        precision = self.precision(cell) if self.machine else None
        for r in self.records:
            done = self.by_cid.get(r.get("cell"))
            if done is None or done.student != cell.student or not r.get("train_seconds"):
                continue
            tokens = self.tokens(done)
            if tokens:
                same = r.get("precision") == precision
                here = same and any(same_kind(m, self.machine) for m in r.get("machines") or [])
                rates.append((tokens * float(r["epochs"]) / r["train_seconds"], here, same))
        local = [rate for rate, here, _ in rates if here]
        same_precision = [rate for rate, _, same in rates if same]
        return (local, True) if local else (same_precision or [rate for rate, _, _ in rates], False)

    def estimate(self, cell: Cell) -> tuple[float | None, str | None]:
        """``(seconds, basis)``: training by tokens where counted, else by examples/s; plus evaluation."""
        same = [r for r in self.records if r.get("student") == cell.student]
        evals = [r["wall_s"] - r["train_seconds"] for r in same if r.get("wall_s") and r.get("train_seconds")]
        evaluation = statistics.mean(evals) if evals else 0.0
        rates, here = self.token_rates(cell) if same else ([], False)
        tokens = self.tokens(cell) if rates else None
        if rates and tokens:
            return tokens * cell.epochs / statistics.mean(rates) + evaluation, TOKENS if here else TOKENS_ELSEWHERE
        seconds = examples_estimate(cell, self.records)
        return seconds, (None if seconds is None else OTHER_ARMS if rate_records(cell, self.records)[1] else ARM_RATE)


def rate_records(cell: Cell, records: list[dict]) -> tuple[list[dict], bool]:
    """The finished cells whose examples/s price ``cell``: those of its arm and student, else (borrowed: True)
    those of its student in other arms, which may train on other data (several rationales per input cost
    several times more per example)."""
    same = [r for r in records if r.get("student") == cell.student and r.get("examples_per_s")]
    arm = [r for r in same if r.get("arm") == cell.arm]
    return (arm, False) if arm else (same, bool(same))


def examples_estimate(cell: Cell, records: list[dict]) -> float | None:
    """A cell's cost from measured examples/s: training examples x epochs / the rate of finished cells of the
    same student (same arm if any), plus their mean evaluation time. None if nothing was measured."""
    arm, _ = rate_records(cell, records)
    if not arm:
        return None
    sizes = [r["n_train_used"] for r in records if r.get("train_size") == cell.train_size and r.get("n_train_used")]
    n = cell.train_size if isinstance(cell.train_size, int) else (sizes[0] if sizes else None)
    if n is None:
        return None
    rate = statistics.mean(r["examples_per_s"] for r in arm)
    evals = [r["wall_s"] - r["train_seconds"] for r in arm if r.get("wall_s") and r.get("train_seconds")]
    return n * cell.epochs / rate + (statistics.mean(evals) if evals else 0.0)


__all__ = ["CostModel", "training_tokens", "rate_records", "examples_estimate", "this_machine", "same_kind"]
