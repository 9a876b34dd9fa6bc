"""The same training code on CPU and CUDA: device-dependent choices checked with torch.cuda faked (no GPU here),
and benchmarks/device_check.py run at its tiny size on the CPU (the CI smoke of the GPU check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stepdistill.student import machine

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")


@pytest.mark.parametrize("bf16_units, auto", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_a_gpu_follows_its_bf16_units(monkeypatch, bf16_units, auto):
    """auto is bf16 on a GPU with bf16 units (Ampere and later), fp32 on an older one; an explicit bf16 on an
    older GPU is kept with a warning; the CPU's flags play no part for a GPU."""
    calls = []

    def fake_supported(including_emulation=True):
        calls.append(including_emulation)
        return bf16_units

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", fake_supported)
    monkeypatch.setattr(machine, "cpu_isa", lambda: [])  # a CPU without bf16 units must not matter
    assert machine.resolve_precision("auto", CUDA) == (auto, None)
    assert calls == [False]  # emulated bf16 (pre-Ampere) does not count as bf16 units
    precision, warning = machine.resolve_precision("bf16", CUDA)
    assert precision == "bf16" and (warning is None) == bf16_units
    assert warning is None or "this GPU has no bf16 units" in warning
    assert machine.resolve_precision("fp32", CUDA) == ("fp32", None)


def test_cpu_auto_precision_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(machine, "cpu_isa", lambda: ["avx2", "avx512f"])
    assert machine.resolve_precision("auto", torch.device("cpu"))[0] == "fp32"
    monkeypatch.setattr(machine, "cpu_isa", lambda: ["amx_bf16"])
    assert machine.resolve_precision("auto", torch.device("cpu"))[0] == "bf16"


def test_autocast_uses_the_device_type():
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else _nothing():
        cuda_cast = machine.autocast("bf16", CUDA)  # on a CPU-only torch it warns and disables itself
    assert cuda_cast.device == "cuda" and cuda_cast.fast_dtype == torch.bfloat16
    cpu_cast = machine.autocast("bf16", torch.device("cpu"))
    assert cpu_cast.device == "cpu" and cpu_cast.fast_dtype == torch.bfloat16
    with machine.autocast("fp32", CUDA):
        assert not torch.is_autocast_enabled("cpu")


def test_to_device_keeps_cpu_tensors_and_other_values():
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "note": "x"}
    moved = machine.to_device(batch, torch.device("cpu"))
    assert moved["input_ids"] is batch["input_ids"] and moved["note"] == "x"


def test_machine_info_names_the_gpu(monkeypatch):
    class Props:
        total_memory, major, minor = 141 * 2**30, 9, 0

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H200")
    info = machine.machine_info(CUDA)
    assert info["device"] == "cuda" and info["gpu"] == "NVIDIA H200"
    assert info["compute_capability"] == "9.0" and info["gpu_memory_gib"] == 141.0
    assert "backend" not in info  # only under torchrun


def test_checkpoint_written_anywhere_loads_on_the_cpu(tmp_path):
    """Checkpoints are read with map_location=cpu, so one written on a GPU resumes on a CPU machine."""
    from stepdistill.student.rundir import load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, model, opt, sched, {"step": 1})
    blob = torch.load(tmp_path / "checkpoint" / "optim.pt", weights_only=True)
    assert "torch_rng" in blob and "cuda_rng" not in blob  # CUDA RNG states only where CUDA was used
    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.AdamW(other.parameters())
    state = load_checkpoint(tmp_path, other, other_opt, torch.optim.lr_scheduler.LambdaLR(other_opt, lambda s: 1.0))
    assert state == {"step": 1} and torch.equal(other.weight, model.weight)


@pytest.mark.parametrize("cuda, expected", [(True, "cuda"), (False, "cpu")])
def test_a_loaded_student_runs_on_the_gpu_when_torch_sees_one(monkeypatch, tmp_path, cuda, expected):
    """Evaluation after GPU training ran on the CPU: Student.load kept the model there."""
    import json

    from stepdistill.student import models, predict

    class Model(torch.nn.Linear):
        def to(self, *args, **kwargs):
            self.moved_to = args[0]
            return self

    (tmp_path / "stepdistill.json").write_text(json.dumps({"family": "causal", "method": "dsbs", "task": "svamp", "prompt_format": 1}))
    monkeypatch.setattr(models, "load_pretrained", lambda family, path, dtype: (Model(2, 2), None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert predict.Student.load(tmp_path).model.moved_to == expected
    assert predict.Student.load(tmp_path, device="cpu").model.moved_to == "cpu"

class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.slow
def test_device_check_smoke_on_cpu(tmp_path, data_dir):
    """benchmarks/device_check.py --device cpu --size tiny: every section runs through the package's code and
    writes its JSON (the same command runs on a GPU with --device cuda)."""
    out = tmp_path / "device_check.json"
    proc = subprocess.run([sys.executable, "benchmarks/device_check.py", "--device", "cpu", "--size", "tiny",
                           "--no-compile", "--threads", "1", "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads(out.read_text())
    sections = result["sections"]
    assert proc.returncode == 0, {k: v.get("traceback", v["status"]) for k, v in sections.items()}
    assert result["machine"]["device"] == "cpu"
    for family in ("causal", "seq2seq"):
        s = sections["students"][family]
        assert s["train_fp32"]["precision"] == "fp32" and s["auto_picked_expected"]
        assert s["resume"]["paused_at_step"] == 3 and s["resume"]["steps"] == 6 and s["resume"]["same_weights"]
        assert s["predict"]["rows"] > 0 and s["serve"]["status_code"] == 200
    assert sections["students"]["seq2seq"]["label_scoring"]["valid_labels"] > 0
    run = sections["torchrun"]
    assert run["returncode"] == 0 and run["processes"] == 1 and run["backend"] == "gloo"
    tp = sections["throughput"]
    variants = tp["batch_4"]["variants"]
    assert set(variants) == {"reference", "ours_prefix", "ours_suffix", "ours_suffix+bf16"}
    assert all(v["examples_per_s"] > 0 for v in variants.values())
    equal = tp["batch_4"]["equality_on_one_batch"]["loss_abs_diff"]["ours_prefix_vs_reference"]
    assert equal["loss"] < 1e-4
    assert tp["prediction"]["esnli_score"]["examples_per_s"] > 0


def test_a_failing_compile_variant_leaves_the_other_variants_timed(monkeypatch):
    """On a GPU image without triton, torch.compile fails: the batch size is timed again without it."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import device_check

    def fake_time(bench, names, measure_peak=True):
        if "ours_suffix+compile" in names:
            raise RuntimeError("Cannot find a working triton installation")
        return {"variants": {n: {} for n in names}}

    monkeypatch.setattr(device_check.throughput, "time_same_examples", fake_time)
    names = list(device_check.VARIANTS)
    out = device_check._time_batch(None, names, "smollm2-shape")
    assert set(out["variants"]) == set(device_check.VARIANTS) - {"ours_suffix+compile"}
    assert "triton" in out["compile_error"]["status"] and "ours_suffix+compile" not in names
