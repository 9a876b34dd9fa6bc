"""The training loop: optimiser steps over length-grouped batches, validation with model selection, checkpoints.

``student.train.setup`` builds a :class:`Training`; :func:`train_loop` runs it to the last step (or early stop)
and ``student.train.finish`` writes metrics.json. One step is :func:`train_step`; the loss of one micro-batch is
:func:`batch_loss`.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stepdistill.config import RunConfig
from stepdistill.student.data import TrainingData
from stepdistill.student.machine import autocast, to_device
from stepdistill.student.rundir import save_checkpoint, save_student
from stepdistill.student.shared import collate_shared
from stepdistill.student.validation import selection_score, validate
from stepdistill.student.views import collate, epoch_batches
from stepdistill.tasks import Task

LOSS_KEYS = ("loss", "label_loss", "rationale_loss")


@dataclass
class TrainState:
    """Progress, saved in every checkpoint (``--resume`` continues from it)."""
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    best_step: int | None = None
    best_valid: dict | None = None
    bad_evals: int = 0
    examples_seen: int = 0
    train_seconds: float = 0.0
    step_seconds: list = field(default_factory=list)  # each step's wall time: what stalled_seconds reads
    stopped_early: bool = False
    history: list = field(default_factory=list)
    machines: list = field(default_factory=list)  # machine_info of each process that trained it (resumes add one)


@dataclass
class Training:
    """One run's parts, built by ``student.train.setup``: what the loop reads and the state it advances."""
    cfg: RunConfig
    run_dir: Path
    accelerator: Any
    task: Task
    splits: Any  # tasks.Splits: .valid is validated on, .info goes to metrics.json
    data: TrainingData
    valid_features: list | None  # tokenised validation rows when selecting by loss
    model: Any  # the HF model (unwrapped): what checkpoints and model/ hold
    tokenizer: Any
    wrapped: Any  # the loss module as the accelerator prepared it (DDP in several processes)
    forward: Callable  # ``wrapped``, or its torch.compile
    optimizer: Any
    scheduler: Any
    params: list
    total_steps: int
    per_epoch: int
    precision: str  # fp32 or bf16, as resolved for this device
    lengths: list[int]  # tokens per example, for length grouping
    meta: dict  # student_meta, saved with model/
    state: TrainState = field(default_factory=TrainState)
    tracker: Any = None  # student.tracking.Trackers, or None
    bar: Any = None

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


def train_loop(t: Training, until: int | None = None) -> None:
    """Optimiser steps until ``total_steps`` or early stopping; Ctrl-C in one process checkpoints first.
    ``until``: pause after that step instead, with a checkpoint that ``train.run(cfg, resume=True)`` continues
    (the same weights as an uninterrupted run: benchmarks/device_check.py checks it)."""
    from tqdm.auto import tqdm

    cfg, state = t.cfg, t.state
    last = t.total_steps if until is None else min(until, t.total_steps)
    t.bar = tqdm(total=t.total_steps, initial=state.step, disable=not t.is_main, unit="step", dynamic_ncols=True,
                 desc=f"train {t.task.name}/{cfg.method.name}")
    t.wrapped.train()
    global_batch = cfg.train.batch_size * t.world
    n = len(t.data.examples)
    window = [0, time.time()]  # examples since the last logged step, and when that window began
    stop = False
    try:
        while state.step < last and not stop:
            batches = epoch_batches(n, t.lengths, global_batch, cfg.train.seed, state.epoch, cfg.train.group_by_length)
            while state.batch_in_epoch < len(batches) and state.step < last:
                train_step(t, batches[state.batch_in_epoch], window)
                end_of_epoch = state.batch_in_epoch >= len(batches)
                if _validation_due(cfg, state.step, end_of_epoch, t.total_steps):
                    stop = evaluate_and_select(t)
                    if stop:
                        break
                elif cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0:
                    save_progress(t)
                    t.accelerator.wait_for_everyone()
            if state.batch_in_epoch >= len(batches):
                state.epoch += 1
                state.batch_in_epoch = 0
    except KeyboardInterrupt:
        if t.world == 1:  # keep the work done so far; in several processes the ranks cannot agree in time
            save_progress(t)
            t.bar.write(f"interrupted at step {state.step}; continue with --resume")
        raise
    t.bar.close()
    if state.step < t.total_steps and not stop:  # paused at `until`
        save_progress(t)
        t.accelerator.wait_for_everyone()


def _validation_due(cfg: RunConfig, step: int, end_of_epoch: bool, total_steps: int) -> bool:
    every = cfg.train.eval_every
    return (every and step % every == 0) or (not every and end_of_epoch) or step >= total_steps


def train_step(t: Training, examples: list[int], window: list) -> dict:
    """One optimiser step on this process's share of ``examples`` (indices into ``t.data.examples``), in
    ``grad_accum`` micro-batches; advances the state, the bar and the log. Returns the mean losses."""
    cfg, state, acc = t.cfg, t.state, t.accelerator
    while len(examples) < t.world:  # every process needs at least one example
        examples = examples + examples[: t.world - len(examples)]
    mine = examples[acc.process_index::t.world]
    t0 = time.time()
    micro = cfg.train.batch_size // cfg.train.grad_accum
    chunks = [mine[i:i + micro] for i in range(0, len(mine), micro)]
    totals = dict.fromkeys(LOSS_KEYS, 0.0)
    for j, chunk in enumerate(chunks):
        sync = j == len(chunks) - 1
        with nullcontext() if sync or t.world == 1 else acc.no_sync(t.wrapped):
            out = batch_loss(t, chunk)
            acc.backward(out["loss"] / len(chunks))
        for k in totals:
            totals[k] += float(out[k].detach()) / len(chunks)
    _stop_if_not_finite(t, totals["loss"])  # before the step: the weights stay as they were
    if cfg.train.max_grad_norm:
        acc.clip_grad_norm_(t.params, cfg.train.max_grad_norm)
    t.optimizer.step()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.batch_in_epoch += 1
    state.examples_seen += len(examples)
    state.step_seconds.append(round(time.time() - t0, 3))
    state.train_seconds += state.step_seconds[-1]
    window[0] += len(examples)
    rate = window[0] / max(1e-9, time.time() - window[1])
    t.bar.update(1)
    t.bar.set_postfix(loss=f"{totals['loss']:.4f}", ex_s=f"{rate:.2f}")
    if state.step % 10 == 0 or state.step == 1:
        log(t, {"step": state.step, **{k: round(v, 5) for k, v in totals.items()},
                "lr": t.scheduler.get_last_lr()[0], "examples_per_s": round(rate, 3)})
        window[:] = [0, time.time()]
    return totals


def stalled_seconds(step_seconds: list[float], factor: float = 5.0) -> float:
    """Time a run spent stopped rather than training: for each step but the first (which warms up, and
    compiles with train.compile) that took over ``factor`` times the median step, its excess over the median.
    A process stopped (SIGSTOP, a suspended laptop), swapped out or starved by another job shows here; batches
    of different lengths do not (a step's time varies ~2x with them)."""
    import statistics

    steady = step_seconds[1:]
    if len(steady) < 3:
        return 0.0
    median = statistics.median(steady)
    return sum(s - median for s in steady if s > factor * median)


def _stop_if_not_finite(t: Training, loss: float) -> None:
    """A loss that is inf or NaN poisons the weights for good (training went on and exited 0 with NaN weights):
    stop with one line. Every process learns it (a process that raised alone would leave the others waiting)."""
    import math

    import torch

    from stepdistill.errors import StepdistillError

    bad = not math.isfinite(loss)
    if t.world > 1:
        bad = bool(t.accelerator.reduce(torch.tensor([float(bad)], device=t.accelerator.device), "sum").item())
    if bad:
        if t.bar is not None:
            t.bar.close()
        raise StepdistillError(f"the training loss is {loss} at step {t.state.step + 1}: training diverged, so "
                               f"it stopped (train.lr={t.cfg.train.lr} is likely too high for this student: lower it, "
                               f"or clip gradients with train.max_grad_norm); {t.run_dir} holds the run so far")


def batch_loss(t: Training, chunk: list[int]) -> dict:
    """The loss dict (``loss``, ``label_loss``, ``rationale_loss``) of the examples ``chunk``: collate their
    features, move them to the device and run the loss module's forward under the run's precision."""
    data = t.data
    if data.shared is not None:
        batch = collate_shared([data.shared[e] for e in chunk], t.tokenizer.pad_token_id)
    else:
        feats = [data.features[f] for e in chunk for f in data.by_example[e]]
        batch = collate(feats, t.tokenizer.pad_token_id, t.cfg.student.family)
    device = t.accelerator.device
    with autocast(t.precision, device):
        return t.forward(**to_device(batch, device))


def log(t: Training, record: dict) -> None:
    """Append ``record`` to train_log.jsonl (main process) and send it to the experiment trackers, if any."""
    if not t.is_main:
        return
    with open(t.run_dir / "train_log.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    if t.tracker is not None:
        t.tracker.log_record(record, t.state.step)


def save_progress(t: Training) -> None:
    """Main process: write a resumable checkpoint of the model, optimiser, schedule, RNGs and state."""
    if t.is_main:
        raw = {"state": t.state.__dict__, "python_rng": random.getstate()}
        save_checkpoint(t.run_dir, t.model, t.optimizer, t.scheduler, raw)


def evaluate_and_select(t: Training) -> bool:
    """Validate on the main process, keep the best model, decide on early stopping; True = stop."""
    from accelerate.utils import broadcast_object_list

    cfg, state = t.cfg, t.state
    stop = [False]
    if t.is_main:
        t0 = time.time()
        result = validate(t.model, t.tokenizer, cfg, t.task, t.splits.valid, t.valid_features, cfg.method.alpha)
        result.update(step=state.step, epoch=round(state.step / t.per_epoch, 3), seconds=round(time.time() - t0, 1))
        improved = state.best is None or selection_score(cfg, result) > state.best
        if improved:
            state.best = selection_score(cfg, result)
            state.best_step, state.best_valid, state.bad_evals = state.step, result, 0
            save_student(t.model, t.tokenizer, t.run_dir / "model", {**t.meta, "step": state.step, "valid": result})
        else:
            state.bad_evals += 1
        state.history.append(result)
        log(t, {"eval": result, "improved": improved})
        shown = f"{result['accuracy']:.3f}" if "accuracy" in result else f"{result['loss']:.4f}"
        t.bar.write(f"step {state.step}: valid {cfg.train.select_by} {shown}" + (" (best)" if improved else ""))
        if cfg.train.patience and state.bad_evals >= cfg.train.patience:
            state.stopped_early = True
            stop[0] = True
        save_progress(t)
    if t.world > 1:
        broadcast_object_list(stop)
    t.accelerator.wait_for_everyone()
    return stop[0]
