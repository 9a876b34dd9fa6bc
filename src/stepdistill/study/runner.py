"""Run a study: every cell of the grid that has no record yet, one after another (or in N processes), each
recorded durably the moment it finishes; then the report.

    stepdistill study configs/studies/esnli_sizes.yaml --jobs 2

The runner only decides run / skip / record. A cell trained but killed before its record was written is not
trained again: its finished run directory is read back (a killed training resumes from its checkpoint).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from stepdistill.study.cost import ARM_RATE, OTHER_ARMS, TOKENS_ELSEWHERE, CostModel, this_machine
from stepdistill.study.records import RecordLog, record_from_run
from stepdistill.study.spec import Cell, StudySpec, size_tag


def task_name(cfg) -> str:
    """The task's own name (a custom task YAML's ``name``)."""
    from stepdistill.tasks import get_task

    return get_task(cfg.data.task).name


def run_cell(spec: StudySpec, cell: Cell, runs_dir: Path, threads: int | None) -> dict:
    """Train and test one cell with ``stepdistill.pipeline.run`` (resuming a killed run), give the memory back,
    and return its record. The run's own output (progress bars, validation lines) goes to ``<run dir>.log``, so
    the study shows one progress display."""
    import contextlib

    from stepdistill.errors import StepdistillError

    run_dir = runs_dir / cell.dir_name()
    log_path = run_dir.with_name(run_dir.name + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ledger = run_dir.with_name(run_dir.name + ".wall")
    earlier = open_wall(ledger, log_path)
    t0 = time.time()
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            train_and_test(spec, cell, run_dir, threads)
        except StepdistillError as exc:
            raise StepdistillError(f"cell {cell.label()} failed: {exc} (log: {log_path})") from None
        except Exception as exc:
            import traceback

            traceback.print_exc()
            raise StepdistillError(f"cell {cell.label()} failed: {type(exc).__name__}: {exc} (log: {log_path})") \
                from exc
    wall_s = close_wall(ledger, earlier, time.time() - t0)
    return record_from_run(cell, run_dir, wall_s, spec.set, task_name(spec.resolve(cell.overrides)))


def open_wall(ledger: Path, log_path: Path) -> float:
    """The wall seconds earlier processes spent on a cell (a cell killed at a session's end resumes in the next),
    and mark this process's start in its ledger. A process that died without closing its segment is counted up to
    the last write to the cell's log (progress bars write to it every step)."""
    state = json.loads(ledger.read_text()) if ledger.is_file() else {"spent": 0.0, "open": None}
    spent = float(state.get("spent") or 0.0)
    if state.get("open") is not None and log_path.is_file():
        spent += max(0.0, log_path.stat().st_mtime - state["open"])
    write_wall(ledger, {"spent": spent, "open": time.time()})
    return spent


def close_wall(ledger: Path, earlier: float, this_process: float) -> float:
    total = earlier + this_process
    write_wall(ledger, {"spent": total, "open": None})
    return total


def write_wall(ledger: Path, state: dict) -> None:
    tmp = ledger.with_name(ledger.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, ledger)


def train_and_test(spec: StudySpec, cell: Cell, run_dir: Path, threads: int | None) -> None:
    """Bring ``run_dir`` to a finished, tested run of ``cell``: skip, finish the test, resume, or train."""
    from stepdistill import evaluate
    from stepdistill.errors import StepdistillError
    from stepdistill.pipeline import release_memory, run
    from stepdistill.student.train import has_checkpoint, training_finished

    cfg = spec.resolve(list(cell.overrides) + ([f"train.num_threads={threads}"] if threads else []), run_dir)
    if not finished_run(run_dir, cell):
        if training_finished(run_dir) and not has_checkpoint(run_dir) and same_cell(run_dir, cell):
            evaluate.run(run_dir, "test")  # killed during the test evaluation
        elif has_checkpoint(run_dir) and same_cell(run_dir, cell):
            try:
                run(cfg, resume=True)
            except StepdistillError as exc:  # the checkpoint is unusable: start again
                print(f"cannot resume {run_dir} ({exc}); starting again", flush=True)
                run(cfg, overwrite=True)
        else:
            run(cfg, overwrite=True)
    release_memory()


def same_cell(run_dir: Path, cell: Cell) -> bool:
    """The run directory was made for this cell (its saved config has the cell's identity)."""
    from stepdistill.config import load_config
    from stepdistill.errors import StepdistillError
    from stepdistill.study.spec import identity

    try:
        return identity(load_config(run_dir / "config.yaml")) == cell.cid
    except (StepdistillError, OSError):
        return False


def finished_run(run_dir: Path, cell: Cell) -> bool:
    """Trained and tested, with this cell's settings."""
    metrics = run_dir / "metrics.json"
    return (metrics.is_file() and (run_dir / "predictions.jsonl").is_file()
            and (json.loads(metrics.read_text()).get("test") or {}).get("accuracy") is not None
            and same_cell(run_dir, cell))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """One status line for the whole study: cells done/total, the cell(s) running, ETA."""

    def __init__(self, total: int, done: int, jobs: int, estimates: list[float | None], stream=sys.stderr):
        self.total, self.done, self.jobs, self.stream = total, done, jobs, stream
        self.left = [e for e in estimates]
        self.spent: list[float] = []
        self.running: list[str] = []

    def eta(self) -> float | None:
        todo = self.total - self.done
        known = [e for e in self.left if e is not None]
        if known and len(known) == len(self.left):  # priced cell by cell (cells of other arms cost differently)
            return sum(known) / self.jobs
        return statistics.mean(self.spent) * todo / self.jobs if self.spent else None

    def show(self) -> None:
        running = "; running " + ", ".join(self.running) if self.running else ""
        line = f"[study] {self.done}/{self.total} cells done{running}; ETA {duration(self.eta())}"
        if getattr(self.stream, "isatty", lambda: False)():  # a terminal: one line, updated in place
            print("\r\033[K" + line, end="\n" if self.done == self.total else "", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def start(self, label: str) -> None:
        self.running.append(label)
        self.show()

    def finish(self, label: str, seconds: float) -> None:
        self.running.remove(label)
        self.done += 1
        self.spent.append(seconds)
        if self.left:
            self.left.pop(0)
        self.show()


def run_study(spec: StudySpec, out: Path, *, jobs: int = 1, dry_run: bool = False,
              restore: bool = False) -> list[dict]:
    """Run the missing cells of ``spec`` (recording each in ``out/records.jsonl``), or with ``restore`` retrain
    the recorded ones whose per-row results are lost (``study.restore``); the study's records. With
    ``tune_seeds``, the tuning seeds' cells run first, then the other seeds at each arm's pick."""
    from stepdistill.study import restore as restoring
    from stepdistill.study.legacy import import_reused

    log = RecordLog(out / "records.jsonl")
    records = log.load()
    cells = spec.cells()
    import_reused(spec, cells, records, None if dry_run else log)
    in_study = lambda: [r for r in records if r["cell"] in {c.cid for c in cells}]  # noqa: E731
    old: dict[str, dict] = {}
    tuning = spec.tuning_cells(cells)
    picked, waiting = spec.cells_at_picks(records, tuning) if not restore else ([], [])
    if restore:
        todo, old = restoring.plan(cells, records, log.comparisons, dry_run)
    else:
        todo = missing(tuning + picked, records)
    waiting_n = len(waiting) * (len(spec.seeds) - len(spec.tune_seeds))  # cells not known before their picks
    planned = (len({c.cid for c in tuning}) + len(picked) + waiting_n if spec.tune_seeds and not restore
               else len({c.cid for c in cells}))
    cost = CostModel(spec, records, cells, machine=this_machine())
    priced = [cost.estimate(c) for c in todo]
    if not restore:  # the cheapest first (by measured rate), so more comparisons finish early
        order = sorted(range(len(todo)), key=lambda i: (priced[i][0] is None, priced[i][0] or 0.0))
        todo, priced = [todo[i] for i in order], [priced[i] for i in order]
    estimates, bases = [e for e, _ in priced], [b for _, b in priced]
    later = waiting_estimates(spec, tuning, waiting, cost)
    announce(spec, planned, len(todo), waiting, waiting_n, estimates, jobs, bases, later)
    if dry_run:
        for c, e, basis in zip(todo, estimates, bases):
            print(f"  {c.label():60s} {c.cid}  ~{duration(e)}" + (f"  ({MARKS[basis]})" if MARKS.get(basis) else ""))
        return in_study()
    runs_dir = Path(spec.runs_dir) if spec.runs_dir else out / "runs"
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    progress = Progress(planned, planned - len(todo) - waiting_n, jobs, estimates + later)

    def keep(rec: dict) -> None:  # durably recorded before the next cell starts
        if rec["cell"] in old:
            rec = restoring.replacing(rec, old[rec["cell"]])
            records[:] = [r for r in records if r["cell"] != rec["cell"]]
        log.append(rec)
        records.append(rec)

    run_cells(spec, todo, runs_dir, threads, jobs, keep, progress)
    if spec.tune_seeds and not restore and waiting:  # the tuning cells are done: the other seeds at the picks
        picked, _ = spec.cells_at_picks(records, tuning)
        run_cells(spec, missing(picked, records), runs_dir, threads, jobs, keep, progress)
    return in_study()


def missing(cells: list[Cell], records: list[dict]) -> list[Cell]:
    """The cells with no record, each once (two arms that resolve to the same config share their cells)."""
    done, todo = {r["cell"] for r in records}, []
    for c in cells:
        if c.cid not in done:
            done.add(c.cid)
            todo.append(c)
    return todo


def waiting_estimates(spec: StudySpec, tuning: list[Cell], waiting: list[str], cost: CostModel) -> list:
    """The cost of each cell that runs at a pick not made yet: its group's tuning cells cost (their mean),
    once for every seed that is not a tuning seed."""
    out = []
    for group in waiting:
        costs = [cost.estimate(c)[0] for c in tuning if f"{c.arm} n={size_tag(c.train_size)} {c.student}" == group]
        known = [e for e in costs if e is not None]
        each = statistics.mean(known) if known and len(known) == len(costs) else None
        out += [each] * (len(spec.seeds) - len(spec.tune_seeds))
    return out


MARKS = {TOKENS_ELSEWHERE: "tokens/s of another machine", ARM_RATE: "examples/s: tokens not counted",
         OTHER_ARMS: "other arms' examples/s: tokens not counted"}


def announce(spec: StudySpec, total: int, to_run: int, waiting: list[str], waiting_n: int, estimates: list,
             jobs: int, bases: list, later: list) -> None:
    known, known_later = [e for e in estimates if e is not None], [e for e in later if e is not None]
    weak = {basis: bases.count(basis) for basis in MARKS if basis in bases}
    print(f"study {spec.name}: {total} cells, {total - to_run - waiting_n} finished, {to_run + waiting_n} to run"
          + (f"; estimated {duration(sum(known) / max(1, jobs))} with {jobs} job(s) from the tokens each arm "
             "trains" if known else "")
          + "".join(f", {n} priced by {MARKS[basis]}" for basis, n in weak.items())
          + (f" ({len(estimates) - len(known)} cells without a measured rate)" if len(known) < len(estimates) else "")
          + (f"; then {waiting_n} cells at the picks of {len(waiting)} arm groups once their tuning "
             f"seeds {spec.tune_seeds} are done ({', '.join(waiting)})" if waiting else "")
          + (f", estimated {duration(sum(known_later) / max(1, jobs))} more" if waiting and known_later else ""))


def run_cells(spec, todo, runs_dir, threads, jobs, keep, progress) -> None:
    if jobs <= 1:
        for cell in todo:
            progress.start(cell.label())
            t0 = time.time()
            keep(run_cell(spec, cell, runs_dir, threads))
            progress.finish(cell.label(), time.time() - t0)
    else:
        run_parallel(spec, todo, runs_dir, threads, jobs, keep, progress)


def run_parallel(spec, todo, runs_dir, threads, jobs, keep, progress) -> None:
    """Cells in ``jobs`` spawned processes, ``threads`` torch threads each; this process alone records them
    (``keep``)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pending, queue = {}, list(todo)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while queue or pending:
            while queue and len(pending) < jobs:
                cell = queue.pop(0)
                progress.start(cell.label())
                pending[pool.submit(run_cell, spec, cell, runs_dir, threads)] = (cell, time.time())
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                cell, t0 = pending.pop(fut)
                keep(fut.result())
                progress.finish(cell.label(), time.time() - t0)


__all__ = ["run_study", "run_cell", "Progress", "size_tag"]
