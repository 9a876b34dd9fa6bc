"""A training run's directory: refuse to clobber it, create it, and write checkpoints and model/ atomically.

    runs/<name>/config.yaml  model/  metrics.json  train_log.jsonl  checkpoint/ (while training; --resume reads it)
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch

from stepdistill.config import RunConfig, save_config, settings_differ
from stepdistill.errors import StepdistillError, make_dir
from stepdistill.student.predict import META_FILE

CHECKPOINT = "checkpoint"


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
    """Main process only, once the run is ready to train: a fresh run directory with the resolved config,
    swapped in for an old one (--overwrite) only now, so a run that fails to start leaves the old run (or no
    folder) behind. The new folder is built beside it and renamed into place."""
    if resume:
        return
    make_dir(run_dir.parent, "run directory")
    new, old = (run_dir.with_name(f".{run_dir.name}.{suffix}") for suffix in ("new", "old"))
    for stale in (new, old):
        shutil.rmtree(stale, ignore_errors=True)
    new.mkdir()
    save_config(cfg, new / "config.yaml")
    if run_dir.exists():
        os.replace(run_dir, old)
    os.replace(new, run_dir)
    shutil.rmtree(old, ignore_errors=True)


def save_student(model, tokenizer, out: Path, meta: dict) -> None:
    """Write an HF-loadable directory (safetensors + tokenizer + stepdistill.json) atomically. The weights keep
    the dtype they train in (float32 by default, also under bf16 autocast; student.dtype otherwise)."""
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


def _rng_states() -> dict:
    states = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda_rng"] = torch.cuda.get_rng_state_all()
    return states


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, state: dict) -> None:
    """Weights, optimiser, scheduler and RNG states plus ``state`` (JSON), swapped in so a kill -9 at any
    moment leaves one whole checkpoint (``checkpoint/`` or ``checkpoint.old/``)."""
    final = run_dir / CHECKPOINT
    tmp = run_dir / (CHECKPOINT + ".tmp")
    old = run_dir / (CHECKPOINT + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(model.state_dict(), tmp / "model.pt")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **_rng_states()},
               tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(run_dir: Path, model, optimizer, scheduler) -> dict:
    """Restore what :func:`save_checkpoint` wrote into ``model``, ``optimizer``, ``scheduler`` and the RNGs;
    returns its ``state``. Tensors are read onto the CPU and copied to the model's device, so a checkpoint
    written on a GPU resumes on a CPU and the other way round."""
    path = run_dir / CHECKPOINT
    if not (path / "state.json").is_file():
        path = run_dir / (CHECKPOINT + ".old")  # killed while swapping in a new checkpoint
    model.load_state_dict(torch.load(path / "model.pt", weights_only=True, map_location="cpu"))
    blob = torch.load(path / "optim.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    if "cuda_rng" in blob and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    return json.loads((path / "state.json").read_text())
