"""Training stage: validation-selected, resumable multi-task training of a student.

    stepdistill train configs/svamp-smollm2.yaml --set data.train_size=200 --set train.epochs=1
    torchrun --nproc_per_node 2 -m stepdistill train configs/tiny-causal.yaml   # 2 CPU processes (gloo)
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stepdistill.config import RunConfig, save_config, settings_differ
from stepdistill.errors import StepdistillError
from stepdistill.student.data import TrainingData, attach_rationales, build_training_data
from stepdistill.student.losses import IGNORE, multitask_loss, per_token, token_cross_entropy
from stepdistill.student.predict import META_FILE, Student
from stepdistill.student.shared import SharedInputLoss, collate_shared
from stepdistill.student.views import FORMAT_OF_LAYOUT, collate, epoch_batches, steps_per_epoch
from stepdistill.tasks import Example, Task, get_task, load_splits

CHECKPOINT = "checkpoint"


# ---- the model with its loss, one module so DDP sees every forward ---------------------------------

def _backbone(model):
    """The decoder stack under the LM head, when logits can safely be computed at target positions only."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = inner.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None, inner
    return getattr(inner, inner.base_model_prefix, None), inner


class StudentWithLoss(nn.Module):
    """Wraps a causal or seq2seq model; ``forward(batch)`` returns the multi-task loss dict.

    Causal students compute logits only at target positions (the prompt's logits are never needed) and, with
    ``split_views``, run one forward per view so short label rows are not padded to rationale width."""

    def __init__(self, model, family: str, alpha: float, target_logits_only: bool = True, split_views: bool = False):
        super().__init__()
        self.model = model
        self.family = family
        self.alpha = alpha
        self.target_logits_only = target_logits_only
        self.split_views = split_views

    def forward(self, input_ids, attention_mask, labels, task, weight=None):
        if self.family == "seq2seq":
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).logits
            mask = labels != IGNORE
            token_losses = token_cross_entropy(logits[mask], labels[mask])
            token_task = task[:, None].expand_as(labels)[mask]
            return multitask_loss(token_losses, token_task, self.alpha, per_token(weight, mask))
        groups = [task == t for t in task.unique().tolist()] if self.split_views else [None]
        losses, tasks, weights = [], [], []
        for rows in groups:
            ids, am, lab, tk, wt = input_ids, attention_mask, labels, task, weight
            if rows is not None:  # one view, trimmed to its own longest row (collate pads on the right)
                width = int(attention_mask[rows].sum(1).max())
                ids, am, lab, tk = ids[rows, :width], am[rows, :width], lab[rows, :width], tk[rows]
                wt = None if wt is None else wt[rows]
            shift = lab[:, 1:]
            mask = shift != IGNORE
            losses.append(self._token_losses(ids, am, shift, mask))
            tasks.append(tk[:, None].expand_as(shift)[mask])
            weights.append(per_token(wt, mask))
        token_weight = None if weight is None else torch.cat(weights)
        return multitask_loss(torch.cat(losses), torch.cat(tasks), self.alpha, token_weight)

    def _token_losses(self, input_ids, attention_mask, shift, mask):
        """Per-token losses at the target positions ``mask`` [B, T-1] of next-token targets ``shift``."""
        backbone, inner = _backbone(self.model)
        if self.target_logits_only and backbone is not None:
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            logits = inner.get_output_embeddings()(hidden[:, :-1][mask])
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][mask]
        return token_cross_entropy(logits, shift[mask])


def make_optimizer(params, lr: float, weight_decay: float):
    """AdamW, fused into one kernel where torch has one for these parameters (on CPU it is ~8x faster than
    the default per-tensor loop: 0.04 vs 0.35 s per step for 135M parameters), else the default one."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# ---- run directory ------------------------------------------------------------------------------

def check_run_dir(cfg: RunConfig, run_dir: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a run without --overwrite, or to resume without a checkpoint or with other settings.
    Read-only, so every process can run it before any of them writes."""
    if resume:
        if not has_checkpoint(run_dir):
            raise StepdistillError(f"nothing to resume in {run_dir}: no checkpoint there (start without --resume)")
        import yaml

        diffs = settings_differ(yaml.safe_load((run_dir / "config.yaml").read_text()), cfg)
        if diffs:
            raise StepdistillError(f"cannot resume {run_dir}: settings differ from the saved config.yaml: "
                                   f"{', '.join(diffs)}")
    elif run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise StepdistillError(f"run directory {run_dir} already exists; pass --overwrite to replace it or "
                               "--resume to continue it")


def has_checkpoint(run_dir: Path) -> bool:
    """A resumable checkpoint is there (``.old``: killed while swapping in a new one)."""
    return any((run_dir / name / "state.json").is_file() for name in (CHECKPOINT, CHECKPOINT + ".old"))


def training_finished(run_dir: Path) -> bool:
    """Training wrote its metrics.json and model/ (later stages, such as the test evaluation, may not have run)."""
    return (run_dir / "metrics.json").is_file() and (run_dir / "model").is_dir()


def delete_checkpoint(run_dir: Path) -> None:
    for name in (CHECKPOINT, CHECKPOINT + ".old", CHECKPOINT + ".tmp"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def create_run_dir(cfg: RunConfig, run_dir: Path, resume: bool) -> None:
    """Main process only: start a fresh run directory (replacing an old one) with the resolved config."""
    if resume:
        return
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    save_config(cfg, run_dir / "config.yaml")


def save_student(model, tokenizer, out: Path, meta: dict) -> None:
    """Write an HF-loadable directory (safetensors + tokenizer + stepdistill.json) atomically."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(model, "merge_and_unload"):  # LoRA: ship merged weights, loadable without peft
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def _save_checkpoint(run_dir: Path, model, optimizer, scheduler, state: dict) -> None:
    final = run_dir / CHECKPOINT
    tmp = run_dir / (CHECKPOINT + ".tmp")
    old = run_dir / (CHECKPOINT + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(model.state_dict(), tmp / "model.pt")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state()}, tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(run_dir: Path, model, optimizer, scheduler) -> dict:
    path = run_dir / CHECKPOINT
    if not (path / "state.json").is_file():
        path = run_dir / (CHECKPOINT + ".old")  # killed while swapping in a new checkpoint
    model.load_state_dict(torch.load(path / "model.pt", weights_only=True))
    blob = torch.load(path / "optim.pt", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    return json.loads((path / "state.json").read_text())


# ---- validation ---------------------------------------------------------------------------------

def student_meta(cfg: RunConfig, task: Task) -> dict:
    return {
        "family": cfg.student.family, "student": cfg.student.name, "task": task.name,
        "task_spec": cfg.data.task if cfg.data.task.endswith((".yaml", ".yml")) else None,
        "method": cfg.method.name, "labels": cfg.method.labels, "alpha": cfg.method.alpha,
        "prompt_format": FORMAT_OF_LAYOUT[cfg.student.prompt_layout], "max_input_tokens": cfg.student.max_input_tokens,
        "max_rationale_tokens": cfg.student.max_rationale_tokens,
        "max_new_tokens": cfg.eval.max_new_tokens or task.max_new_tokens(),
        "max_label_tokens": cfg.student.max_label_tokens, "label_scoring": cfg.eval.label_scoring,
    }


def validate(model, tokenizer, cfg: RunConfig, task: Task, valid: list[Example], features=None, alpha=0.5) -> dict:
    """Accuracy of label-only predictions on ``valid`` (and the mean loss when selecting by loss)."""
    from stepdistill.evaluate import score

    result = {}
    if cfg.train.select_by == "accuracy":
        student = Student(model, tokenizer, student_meta(cfg, task), task)
        preds = student.predict([ex.input for ex in valid], batch_size=cfg.eval.batch_size)
        for p, ex in zip(preds, valid):  # rows carry the choices that raw text may not
            p["label"] = task.parse(p["raw"], ex)
        result.update(score(task, valid, [p["label"] for p in preds]))
    else:
        wrapper = StudentWithLoss(model, cfg.student.family, alpha)
        losses = []
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(features), cfg.eval.batch_size):
                batch = collate(features[start:start + cfg.eval.batch_size], tokenizer.pad_token_id,
                                cfg.student.family)
                losses.append(float(wrapper(**batch)["loss"]))
        model.train(was_training)
        result["loss"] = sum(losses) / max(1, len(losses))
        result["n"] = len(valid)
    return result


def _better(cfg: RunConfig, new: dict, best: float | None) -> bool:
    value = new["accuracy"] if cfg.train.select_by == "accuracy" else -new["loss"]
    return best is None or value > best


_KERNEL_ISA = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile", "asimd",
               "sve", "bf16"}


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo; {} where there is none (macOS, Windows). Read once per
    process: machine_info and native_bf16 both need it. Callers must not modify it."""
    try:
        text = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
        return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}
    except (OSError, ValueError):
        return {}


def cpu_isa() -> list[str]:
    """The CPU's vector units that torch's kernels use (x86 flags, arm64 Features); [] where unknown."""
    fields = _cpuinfo()
    return sorted(f for f in (fields.get("flags") or fields.get("Features", "")).split() if f in _KERNEL_ISA)


# avx512_bf16 (AMD Zen 4+, Intel Cooper Lake), amx_bf16 (Intel Sapphire Rapids+), bf16 (arm64 Features)
BF16_ISA = {"avx512_bf16", "amx_bf16", "bf16"}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware. Elsewhere bf16 autocast still runs but emulates it,
    converting operands between the formats: slower than plain fp32 (0.35x the examples/s of fp32 measured on
    an Intel Ice Lake CPU without avx512_bf16, where on a CPU with bf16 units it gave 1.6x; see
    benchmarks/results/throughput.json, training_same_examples_icelake and training_same_examples)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and bool(BF16_ISA & set(cpu_isa()))


def resolve_precision(setting: str, device: torch.device) -> tuple[str, str | None]:
    """train.mixed_precision -> (the precision used, a warning or None). ``auto`` is bf16 where the device has
    bf16 units and fp32 elsewhere; an explicit bf16 is kept, with a warning where it will be emulated."""
    if setting == "fp32":
        return "fp32", None
    native = native_bf16(device)
    if setting == "auto":
        return ("bf16" if native else "fp32"), None
    if native:
        return "bf16", None
    what = "this GPU" if device.type == "cuda" else "this CPU (no avx512_bf16 / amx_bf16 / bf16 in its flags)"
    return "bf16", (f"train.mixed_precision=bf16: {what} has no bf16 units, so autocast emulates bf16 and "
                    "trains slower than fp32 (about 3x slower measured on such a CPU); use fp32, or auto to get "
                    "bf16 only where the hardware has it")


def machine_info(device: torch.device) -> dict:
    """What trained a run, for its metrics: the same seed and code give other numbers on another CPU model, thread
    count or library version (bf16 and the kernels' reduction order differ), so a result names its machine."""
    import platform

    import transformers

    cpu, fields = platform.processor() or platform.machine(), _cpuinfo()
    cpu = fields.get("model name", cpu)  # Linux: the model name (often vague on cloud machines) and family/model
    if "cpu family" in fields:
        cpu += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    info = {"cpu": cpu, "isa": cpu_isa(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "device": device.type}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---- the loop -----------------------------------------------------------------------------------

@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    best_step: int | None = None
    best_valid: dict | None = None
    bad_evals: int = 0
    examples_seen: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False
    history: list = field(default_factory=list)
    machines: list = field(default_factory=list)  # machine_info of each process that trained it (resumes add one)


def run(cfg: RunConfig, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Train a student as ``cfg`` says; returns the run directory (config.yaml, model/, metrics.json)."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list, set_seed
    from tqdm.auto import tqdm

    from stepdistill.student.models import load_pretrained

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    run_dir = cfg.run_dir()
    if resume and training_finished(run_dir) and not has_checkpoint(run_dir):
        return run_dir  # finished before and its checkpoint deleted: nothing left to train
    # mixed precision is applied here, not through Accelerator(mixed_precision=...): accelerate keeps that in a
    # process-wide singleton, so a second run in the same process with another setting would fail
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    is_main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    task = get_task(cfg.data.task)
    splits = load_splits(task, cfg.data.data_dir, train_size=cfg.data.train_size, valid_size=cfg.data.valid_size,
                         seed=cfg.train.seed, valid_fraction=cfg.data.valid_fraction, with_test=False)
    train_examples = splits.train
    missing = None
    if cfg.data.rationales:
        train_examples, missing = attach_rationales(task, train_examples, cfg.data.rationales)
    check_run_dir(cfg, run_dir, overwrite, resume)
    accelerator.wait_for_everyone()  # every process has checked before the main one writes
    if is_main:
        create_run_dir(cfg, run_dir, resume)
    accelerator.wait_for_everyone()

    set_seed(cfg.train.seed)
    model, tokenizer = load_pretrained(cfg.student.family, cfg.student.name, cfg.student.dtype)
    if cfg.student.lora_r:
        from peft import LoraConfig, get_peft_model

        task_type = "CAUSAL_LM" if cfg.student.family == "causal" else "SEQ_2_SEQ_LM"
        model = get_peft_model(model, LoraConfig(r=cfg.student.lora_r, lora_alpha=cfg.student.lora_alpha,
                                                 target_modules="all-linear", task_type=task_type))
    if cfg.student.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    data: TrainingData = build_training_data(cfg, task, train_examples, tokenizer)
    if missing is not None:
        data.report["rationale_records_missing"] = missing
    valid_features = None
    if cfg.train.select_by == "loss":
        valid_features = build_training_data(cfg, task, splits.valid, tokenizer).features

    n = len(data.examples)
    global_batch = cfg.train.batch_size * world
    per_epoch = steps_per_epoch(n, global_batch)
    total_steps = math.ceil(cfg.train.epochs * per_epoch)
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    warmup = int(cfg.train.warmup_ratio * total_steps)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg.train.lr, cfg.train.weight_decay)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if cfg.train.scheduler == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    if data.shared is not None:  # dsbs, suffix layout: one forward per example for both views
        wrapper = SharedInputLoss(model, cfg.method.alpha)
    else:
        wrapper = StudentWithLoss(model, cfg.student.family, cfg.method.alpha, split_views=cfg.train.split_views)
    wrapped, optimizer = accelerator.prepare(wrapper, optimizer)
    # the compiled module shares its parameters with `wrapped`, which checkpoints and saving keep using
    forward = torch.compile(wrapped, dynamic=True) if cfg.train.compile else wrapped
    state = TrainState()
    if resume:
        raw = _load_checkpoint(run_dir, accelerator.unwrap_model(wrapped).model, optimizer, scheduler)
        state = TrainState(**raw["state"])
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in raw["python_rng"]))
    machine = machine_info(accelerator.device)
    precision, warning = resolve_precision(cfg.train.mixed_precision, accelerator.device)
    if warning and is_main:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if state.step < total_steps and machine not in state.machines:
        state.machines.append(machine)

    if data.shared is not None:
        lengths = [len(f.input_ids) for f in data.shared]
    else:
        lengths = [sum(len(data.features[f].input_ids) for f in ids) for ids in data.by_example]
    eval_every = cfg.train.eval_every
    log_path = run_dir / "train_log.jsonl"
    bar = tqdm(total=total_steps, initial=state.step, disable=not is_main, desc=f"train {task.name}/{cfg.method.name}",
               unit="step", dynamic_ncols=True)
    inner_model = accelerator.unwrap_model(wrapped).model
    meta = student_meta(cfg, task)

    def log(record: dict) -> None:
        if is_main:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def checkpoint() -> None:
        if is_main:
            raw = {"state": state.__dict__, "python_rng": random.getstate()}
            _save_checkpoint(run_dir, inner_model, optimizer, scheduler, raw)

    def evaluate_now() -> bool:
        """Validate on the main process, keep the best model, decide on early stopping; True = stop."""
        stop = [False]
        if is_main:
            t0 = time.time()
            result = validate(inner_model, tokenizer, cfg, task, splits.valid, valid_features, cfg.method.alpha)
            result.update(step=state.step, epoch=round(state.step / per_epoch, 3), seconds=round(time.time() - t0, 1))
            improved = _better(cfg, result, state.best)
            if improved:
                state.best = result["accuracy"] if cfg.train.select_by == "accuracy" else -result["loss"]
                state.best_step, state.best_valid, state.bad_evals = state.step, result, 0
                save_student(inner_model, tokenizer, run_dir / "model", {**meta, "step": state.step, "valid": result})
            else:
                state.bad_evals += 1
            state.history.append(result)
            log({"eval": result, "improved": improved})
            shown = f"{result['accuracy']:.3f}" if "accuracy" in result else f"{result['loss']:.4f}"
            bar.write(f"step {state.step}: valid {cfg.train.select_by} {shown}" + (" (best)" if improved else ""))
            if cfg.train.patience and state.bad_evals >= cfg.train.patience:
                state.stopped_early = True
                stop[0] = True
            checkpoint()
        if world > 1:
            broadcast_object_list(stop)
        accelerator.wait_for_everyone()
        return stop[0]

    def autocast():
        if precision == "bf16":
            return torch.autocast(accelerator.device.type, dtype=torch.bfloat16)
        return nullcontext()

    wrapped.train()
    micro = cfg.train.batch_size // cfg.train.grad_accum
    stop = False
    window_examples, window_start = 0, time.time()
    try:
        while state.step < total_steps and not stop:
            batches = epoch_batches(n, lengths, global_batch, cfg.train.seed, state.epoch, cfg.train.group_by_length)
            while state.batch_in_epoch < len(batches) and state.step < total_steps:
                examples = batches[state.batch_in_epoch]
                while len(examples) < world:  # every process needs at least one example
                    examples = examples + examples[: world - len(examples)]
                mine = examples[rank::world]
                t0 = time.time()
                chunks = [mine[i:i + micro] for i in range(0, len(mine), micro)]
                totals = {"loss": 0.0, "label_loss": 0.0, "rationale_loss": 0.0}
                for j, chunk in enumerate(chunks):
                    if data.shared is not None:
                        batch = collate_shared([data.shared[e] for e in chunk], tokenizer.pad_token_id)
                    else:
                        feats = [data.features[f] for e in chunk for f in data.by_example[e]]
                        batch = collate(feats, tokenizer.pad_token_id, cfg.student.family)
                    sync = j == len(chunks) - 1
                    with nullcontext() if sync or world == 1 else accelerator.no_sync(wrapped):
                        with autocast():
                            out = forward(**batch)
                        accelerator.backward(out["loss"] / len(chunks))
                    for k in totals:
                        totals[k] += float(out[k].detach()) / len(chunks)
                if cfg.train.max_grad_norm:
                    accelerator.clip_grad_norm_(params, cfg.train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.batch_in_epoch += 1
                state.examples_seen += len(examples)
                state.train_seconds += time.time() - t0
                window_examples += len(examples)
                rate = window_examples / max(1e-9, time.time() - window_start)
                bar.update(1)
                bar.set_postfix(loss=f"{totals['loss']:.4f}", ex_s=f"{rate:.2f}")
                if state.step % 10 == 0 or state.step == 1:
                    log({"step": state.step, **{k: round(v, 5) for k, v in totals.items()},
                         "lr": scheduler.get_last_lr()[0], "examples_per_s": round(rate, 3)})
                    window_examples, window_start = 0, time.time()
                end_of_epoch = state.batch_in_epoch >= len(batches)
                if (eval_every and state.step % eval_every == 0) or (not eval_every and end_of_epoch) \
                        or state.step >= total_steps:
                    stop = evaluate_now()
                    if stop:
                        break
                elif cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0:
                    checkpoint()
                    accelerator.wait_for_everyone()
            if state.batch_in_epoch >= len(batches):
                state.epoch += 1
                state.batch_in_epoch = 0
    except KeyboardInterrupt:
        if world == 1:  # keep the work done so far; in several processes the ranks cannot agree in time
            checkpoint()
            bar.write(f"interrupted at step {state.step}; continue with --resume")
        raise
    bar.close()
    # resumed after the last step, before any validation had saved a model; every process sees the same
    # folder after the last barrier, so all of them join evaluate_now's collective calls
    if not (run_dir / "model").is_dir():
        evaluate_now()
    if is_main:
        metrics = {
            "task": task.name, "method": cfg.method.name, "labels": cfg.method.labels, "alpha": cfg.method.alpha,
            "student": cfg.student.name, "family": cfg.student.family, "n_train": len(data.examples),
            "seed": cfg.train.seed, "valid": state.best_valid, "test": None,
            "train": {"steps": state.step, "total_steps": total_steps, "epochs": round(state.step / per_epoch, 3),
                      "best_step": state.best_step, "stopped_early": state.stopped_early,
                      "train_seconds": round(state.train_seconds, 1),
                      "examples_per_s": round(state.examples_seen / max(1e-9, state.train_seconds), 3),
                      "processes": world, "precision": precision, "machines": state.machines, "data": data.report,
                      "splits": splits.info},
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        if not cfg.train.keep_checkpoint:
            delete_checkpoint(run_dir)
    accelerator.wait_for_everyone()
    if world > 1 and torch.distributed.is_initialized():
        # an undestroyed gloo group can abort the process at interpreter exit ("terminate called ...")
        torch.distributed.destroy_process_group()
    return run_dir
