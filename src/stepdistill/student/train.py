"""Training stage: validation-selected, resumable multi-task training of a student.

    stepdistill train configs/svamp-smollm2.yaml --set data.train_size=200 --set train.epochs=1
    torchrun --nproc_per_node 2 -m stepdistill train configs/tiny-causal.yaml   # 2 CPU processes (gloo)

``run`` reads top to bottom: :func:`setup` (data, model, optimiser, resume), ``loop.train_loop`` (steps,
validation, checkpoints) and :func:`finish` (metrics.json). The pieces live beside it: ``step`` (the loss
module, optimiser, schedule), ``loop``, ``validation``, ``rundir`` (directory and checkpoints) and ``machine``
(device, precision). The same code runs on a CPU (gloo between processes) and on CUDA GPUs (nccl).
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import torch

from stepdistill.config import RunConfig
from stepdistill.student.data import TrainingData, attach_rationales, build_training_data, rationale_gaps
from stepdistill.student.loop import Training, TrainState, train_loop
from stepdistill.student.machine import (BF16_ISA, cpu_isa, machine_info, native_bf16,  # noqa: F401 (re-exported)
                                         resolve_precision)
from stepdistill.student.rundir import (CHECKPOINT, check_run_dir, create_run_dir, delete_checkpoint,  # noqa: F401
                                        has_checkpoint, load_checkpoint, save_student, training_finished)
from stepdistill.student.step import StudentWithLoss, lr_schedule, make_optimizer
from stepdistill.student.tracking import Trackers, check_trackers
from stepdistill.student.validation import student_meta, validate  # noqa: F401 (re-exported)
from stepdistill.student.views import steps_per_epoch
from stepdistill.tasks import get_task, load_splits


def run(cfg: RunConfig, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Train a student as ``cfg`` says; returns the run directory (config.yaml, model/, metrics.json)."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    run_dir = cfg.run_dir()
    if resume and training_finished(run_dir) and not has_checkpoint(run_dir):
        return run_dir  # finished before and its checkpoint deleted: nothing left to train
    t = setup(cfg, overwrite=overwrite, resume=resume)
    try:
        train_loop(t)
        finish(t)
    finally:  # Ctrl-C or an error: the trackers still get what was logged
        if t.tracker is not None:
            t.tracker.close()
    return run_dir


def setup(cfg: RunConfig, *, overwrite: bool = False, resume: bool = False) -> Training:
    """Everything before the first step: processes, data, run directory, student, optimiser, resumed state."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    run_dir = cfg.run_dir()
    # mixed precision is applied in loop.batch_loss, not through Accelerator(mixed_precision=...): accelerate
    # keeps that in a process-wide singleton, so a second run in the same process with another setting would fail
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    task = get_task(cfg.data.task)
    splits = load_splits(task, cfg.data.data_dir, train_size=cfg.data.train_size, valid_size=cfg.data.valid_size,
                         seed=cfg.train.seed, valid_fraction=cfg.data.valid_fraction, with_test=False,
                         announce=("train", "valid") if accelerator.is_main_process else ())
    train_examples, missing = splits.train, None
    if cfg.data.rationales:
        train_examples, missing = attach_rationales(task, train_examples, cfg.data.rationales)
    check_run_dir(cfg, run_dir, overwrite, resume)  # read-only: the run directory is written once all is ready
    check_trackers(cfg.train.report_to)  # a missing package fails now, before the run directory is written

    set_seed(cfg.train.seed)
    model, tokenizer = build_student(cfg)
    data: TrainingData = build_training_data(cfg, task, train_examples, tokenizer)
    if missing is not None:
        data.report["rationale_records_missing"] = missing
    gaps = rationale_gaps(cfg, data.report)
    if gaps and accelerator.is_main_process:
        print(gaps, file=sys.stderr)
    valid_features = None
    if cfg.train.select_by == "loss":
        valid_features = build_training_data(cfg, task, splits.valid, tokenizer).features

    total_steps, per_epoch = schedule_length(cfg, len(data.examples), accelerator.num_processes)
    model.to(accelerator.device)  # before the optimiser, so a fused AdamW sees the parameters where they train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg.train.lr, cfg.train.weight_decay)
    factor = lr_schedule(cfg.train.scheduler, total_steps, int(cfg.train.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if data.shared is not None:  # dsbs, suffix layout: one forward per example for both views
        from stepdistill.student.shared import SharedInputLoss

        wrapper = SharedInputLoss(model, cfg.method.alpha)
    else:
        wrapper = StudentWithLoss(model, cfg.student.family, cfg.method.alpha, split_views=cfg.train.split_views)
    wrapped, optimizer = accelerator.prepare(wrapper, optimizer)
    # the compiled module shares its parameters with `wrapped`, which checkpoints and saving keep using
    forward = torch.compile(wrapped, dynamic=True) if cfg.train.compile else wrapped
    t = Training(cfg=cfg, run_dir=run_dir, accelerator=accelerator, task=task, splits=splits, data=data,
                 valid_features=valid_features, model=accelerator.unwrap_model(wrapped).model, tokenizer=tokenizer,
                 wrapped=wrapped, forward=forward, optimizer=optimizer, scheduler=scheduler, params=params,
                 total_steps=total_steps, per_epoch=per_epoch, precision="fp32", lengths=example_lengths(data),
                 meta={**student_meta(cfg, task), "teacher": data.report["teacher"]})
    if resume:
        raw = load_checkpoint(run_dir, t.model, optimizer, scheduler)
        t.state = TrainState(**raw["state"])
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in raw["python_rng"]))
    _settle_machine(t)
    accelerator.wait_for_everyone()  # every process is ready to train before the main one (re)places the run
    if accelerator.is_main_process:
        create_run_dir(cfg, run_dir, resume)
    accelerator.wait_for_everyone()
    if cfg.train.report_to and t.is_main:  # after the run directory exists: trackers write into it
        t.tracker = Trackers(cfg.train.report_to, run_dir, cfg.to_dict())
    return t


def build_student(cfg: RunConfig):
    """``(model, tokenizer)``: the pretrained student, with LoRA adapters and frozen embeddings as configured."""
    from stepdistill.student.models import load_pretrained

    model, tokenizer = load_pretrained(cfg.student.family, cfg.student.name, cfg.student.dtype)
    if cfg.student.lora_r:
        from peft import LoraConfig, get_peft_model

        task_type = "CAUSAL_LM" if cfg.student.family == "causal" else "SEQ_2_SEQ_LM"
        model = get_peft_model(model, LoraConfig(r=cfg.student.lora_r, lora_alpha=cfg.student.lora_alpha,
                                                 target_modules="all-linear", task_type=task_type))
    if cfg.student.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model, tokenizer


def schedule_length(cfg: RunConfig, n_examples: int, world: int) -> tuple[int, int]:
    """``(total optimiser steps, steps per epoch)`` for ``n_examples`` split over ``world`` processes."""
    per_epoch = steps_per_epoch(n_examples, cfg.train.batch_size * world)
    total_steps = math.ceil(cfg.train.epochs * per_epoch)
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    return total_steps, per_epoch


def example_lengths(data: TrainingData) -> list[int]:
    """Tokens per training example (all its views), which length grouping batches by."""
    if data.shared is not None:
        return [len(f.input_ids) for f in data.shared]
    return [sum(len(data.features[f].input_ids) for f in ids) for ids in data.by_example]


def _settle_machine(t: Training) -> None:
    """Resolve the precision for this device (warning where bf16 is emulated) and record the machine."""
    device = t.accelerator.device
    machine = machine_info(device)
    t.precision, warning = resolve_precision(t.cfg.train.mixed_precision, device)
    if warning and t.is_main:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if t.state.step < t.total_steps and machine not in t.state.machines:
        t.state.machines.append(machine)


def finish(t: Training) -> None:
    """After the last step: make sure model/ exists, write metrics.json, drop the checkpoint, end the processes."""
    from stepdistill.student.loop import evaluate_and_select, stalled_seconds

    cfg, state, run_dir = t.cfg, t.state, t.run_dir
    # resumed after the last step, before any validation had saved a model; every process sees the same
    # folder after the last barrier, so all of them join evaluate_and_select's collective calls
    if not (run_dir / "model").is_dir():
        evaluate_and_select(t)
    if t.is_main:
        # the steps' time less what a stopped or starved process spent waiting (it is not training)
        stalled = stalled_seconds(state.step_seconds)
        seconds = state.train_seconds - stalled
        metrics = {
            "task": t.task.name, "method": cfg.method.name, "labels": cfg.method.labels, "alpha": cfg.method.alpha,
            "student": cfg.student.name, "family": cfg.student.family, "n_train": len(t.data.examples),
            "seed": cfg.train.seed, "valid": state.best_valid, "test": None,
            "train": {"steps": state.step, "total_steps": t.total_steps, "epochs": round(state.step / t.per_epoch, 3),
                      "best_step": state.best_step, "stopped_early": state.stopped_early,
                      "train_seconds": round(seconds, 1), "stalled_seconds": round(stalled, 1),
                      "examples_per_s": round(state.examples_seen / max(1e-9, seconds), 3),
                      "processes": t.world, "precision": t.precision, "machines": state.machines,
                      "data": t.data.report, "splits": t.splits.info},
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        if not cfg.train.keep_checkpoint:
            delete_checkpoint(run_dir)
        if t.tracker is not None:
            t.tracker.close(metrics)
            t.tracker = None
    t.accelerator.wait_for_everyone()
    if t.world > 1 and torch.distributed.is_initialized():
        # an undestroyed gloo group can abort the process at interpreter exit ("terminate called ...")
        torch.distributed.destroy_process_group()
