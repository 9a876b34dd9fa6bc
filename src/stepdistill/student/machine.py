"""What a run trains on: the device, its precision (does it have bf16 units?) and a description for metrics.json.

The same code runs on a CPU and on a CUDA GPU: ``training_device`` picks the device, ``to_device`` moves a
collated batch there, ``autocast`` casts matmuls to bfloat16 on whichever device it is, and ``machine_info``
names the CPU (and the GPU) so a result says where it was measured.
"""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from pathlib import Path

import torch

_KERNEL_ISA = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile", "asimd",
               "sve", "bf16"}

# avx512_bf16 (AMD Zen 4+, Intel Cooper Lake), amx_bf16 (Intel Sapphire Rapids+), bf16 (arm64 Features)
BF16_ISA = {"avx512_bf16", "amx_bf16", "bf16"}


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


def has_bf16_units(isa: list[str]) -> bool:
    """Whether a CPU with these flags (``cpu_isa()``, or a recorded machine's ``isa``) multiplies bf16 in
    hardware."""
    return bool(BF16_ISA & set(isa))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware. Elsewhere bf16 autocast still runs but emulates it,
    converting operands between the formats: slower than plain fp32 (0.35x the examples/s of fp32 measured on
    an Intel Ice Lake CPU without avx512_bf16, where on a CPU with bf16 units it gave 1.6x; see
    benchmarks/results/throughput.json, training_same_examples_icelake and training_same_examples).
    On CUDA: compute capability 8.0 (Ampere) and later."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and has_bf16_units(cpu_isa())


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


def autocast(precision: str, device: torch.device):
    """The forward's context: bf16 autocast on ``device``'s type (cpu or cuda) for ``bf16``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch: dict, device: torch.device) -> dict:
    """A collated batch (tensors built on the CPU) on ``device``; the same tensors where it is the CPU."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


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
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        info["backend"] = torch.distributed.get_backend()  # gloo (CPU) or nccl (CUDA), under torchrun
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return info
