"""Engines: what does the math behind ``stepdistill serve --engine NAME``. The server and ``Student`` keep
task formatting, validation, prompts, label parsing, micro-batching and limits; an engine is a ``Student``
whose ``generate`` (greedy continuations of token-id prompts) runs elsewhere.

    stepdistill serve runs/tiny-causal-svamp-dsbs-s0 --engine torch
    stepdistill export runs/svamp-smollm2 exported/svamp --gguf && stepdistill serve exported/svamp --engine llamacpp
    stepdistill export runs/svamp-smollm2 exported/svamp --onnx && stepdistill serve exported/svamp --engine onnx

- ``torch``: the PyTorch student with a lean greedy loop over the KV cache (causal students; same tokens as
  ``generate``), precision ``auto`` (bf16 where the device has bf16 units, else float32; ``float16-decode``
  reads float16 weights in decoding steps: ``HalfDecodeLinear``), and label scoring where the
  run's validation showed scoring at least as accurate as generation (or the student's own setting); a lone
  prompt decodes several tokens a forward, drafted from the answers given so far (``serve/drafts.py``).
- ``llamacpp``: the exported GGUF in-process through llama.cpp's C API, fed the exact prompt token ids
  (so the piece-by-piece tokenization of training is kept); the prompts of a micro-batch decode together as
  parallel sequences of one context with continuous batching (``serve/llamacpp.py``): requests join the
  decoding loop at its next step; labels are always generated.
- ``onnx``: the ONNX graph of ``export --onnx`` via onnxruntime (with its KV cache; a lone prompt
  checks drafted tokens too).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from stepdistill.errors import StepdistillError
from stepdistill.registry import Registry
from stepdistill.serve.drafts import DraftTable, greedy_with_drafts
from stepdistill.student import Student
from stepdistill.student.predict import decode_until_eos

log = logging.getLogger("stepdistill.serve")


def _meta_and_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    from stepdistill.student.predict import META_FILE

    return json.loads((model_dir / META_FILE).read_text()), AutoTokenizer.from_pretrained(str(model_dir))


class GeneratingOnly(Student):
    """A student whose engine only generates: a student trained to score labels generates them instead."""

    def label_scoring(self, scoring: str | None = None) -> str:
        if scoring == "score":
            raise StepdistillError(f"the {self.engine} engine generates labels; it cannot score them")
        return "generate"


class LlamaCppStudent(GeneratingOnly):
    engine = "llamacpp"
    concurrent_generate = True  # generate calls from several threads join one continuous batch

    def __init__(self, gguf: Path, tokenizer, meta: dict, threads: int | None = None, n_seq: int = 16):
        from stepdistill.serve.llamacpp import LlamaBatchDecoder

        super().__init__(None, tokenizer, meta)
        if meta.get("label_scoring") == "score":
            log.warning("this student picks labels by scoring; the llamacpp engine generates them (labels can differ)")
        self.gguf = gguf
        self.decoder = LlamaBatchDecoder(gguf, threads=threads, n_seq=n_seq)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[str]:
        stop = {self.tokenizer.eos_token_id, self.decoder.eos()}
        return [self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
                for tokens in self.decoder.greedy(prompts, max_new_tokens, stop)]

    def close(self) -> None:
        self.decoder.close()


def find_gguf(path: str | Path) -> Path:
    """The .gguf file given, or the one .gguf file of an export directory."""
    path = Path(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise StepdistillError(f"{path} does not exist")
        return path
    found = sorted(path.glob("*.gguf")) + sorted((path / "model").glob("*.gguf"))
    if len(found) != 1:
        what = "no .gguf file" if not found else f"{len(found)} .gguf files ({', '.join(p.name for p in found)})"
        raise StepdistillError(f"{path} has {what}; export one with `stepdistill export RUN OUT --gguf`, or give "
                               "the .gguf file itself")
    return found[0]


def _llamacpp(path: str | Path, threads: int | None = None) -> Student:
    gguf = find_gguf(path)
    meta, tok = _meta_and_tokenizer(gguf.parent)
    return LlamaCppStudent(gguf, tok, meta, threads=threads)


class OnnxStudent(GeneratingOnly):
    engine = "onnx"

    def __init__(self, export_dir: Path, meta: dict, threads: int | None = None, drafts: bool = True):
        from stepdistill.serve.onnx import OnnxLabeler

        self.labeler = OnnxLabeler(export_dir, threads=threads, drafts=drafts)
        self.drafts = self.labeler.drafts  # serve's /info and /health show them
        super().__init__(None, self.labeler.tokenizer, meta)
        if meta.get("label_scoring") == "score":
            log.warning("this student picks labels by scoring; the onnx engine generates them (labels can differ)")

    def generate(self, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[str]:
        out: list[str] = []
        for start in range(0, len(prompts), batch_size):
            for tokens in self.labeler.generate(prompts[start:start + batch_size], max_new_tokens):
                out.append(self.tokenizer.decode(tokens, skip_special_tokens=True).strip())
        return out


def _onnx(path: str | Path, threads: int | None = None, drafts: bool = True) -> Student:
    from stepdistill.student.predict import find_model_dir

    model_dir = find_model_dir(path)
    meta, _ = _meta_and_tokenizer(model_dir)
    return OnnxStudent(model_dir, meta, threads=threads, drafts=drafts)


def greedy_causal(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
                  learn=None) -> list[str]:
    """Greedy continuations of a causal LM, as ``model.generate`` gives them, without its per-step machinery:
    left-padded prompts, one forward for the prompts (logits of the last position only), then one token per
    step through the KV cache, stopping when every row has written eos. ``learn`` gets each row's tokens."""
    from transformers import DynamicCache

    from stepdistill.student.models import cache_kwargs
    from stepdistill.student.predict import padded_batches

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    out = [""] * len(prompts)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for idx, ids, mask in padded_batches(prompts, batch_size, pad, left=True):
            ids, mask = ids.to(device), mask.to(device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = cache_kwargs(model, DynamicCache())  # filled in place by each forward
            step = model(input_ids=ids, attention_mask=mask, position_ids=pos, **cache, use_cache=True,
                         logits_to_keep=1)
            written, done = [], torch.zeros(len(idx), dtype=torch.bool, device=device)
            for n in range(max_new_tokens):
                nxt = step.logits[:, -1].argmax(-1).masked_fill(done, pad)
                written.append(nxt)
                done |= nxt == eos
                if bool(done.all()) or n == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                pos = pos[:, -1:] + 1
                step = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, **cache, use_cache=True)
            tokens = torch.stack(written, 1).tolist() if written else [[] for _ in idx]
            for row, i in enumerate(idx):
                out[i] = decode_until_eos(tokenizer, tokens[row])
                if learn is not None:
                    learn(tokens[row][:tokens[row].index(eos) + 1] if eos in tokens[row] else tokens[row])
    return out


class TorchStudent(Student):
    """The PyTorch student with the lean greedy loop for causal models (``generate`` for seq2seq), and label
    scoring by default where the run's validation showed it at least as accurate as generation. Prompts decoded
    one at a time (a batch of one: a server at concurrency 1) check drafted tokens (``serve/drafts.py``), guessed
    from the answers given so far: the same tokens in fewer forwards."""

    engine = "torch"
    validated_scoring: str | None = None
    precision: str | None = None  # as resolved (serve's /info shows it)
    drafts: DraftTable | None = None  # None: one token per forward

    def generate(self, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[str]:
        if self.family != "causal":
            return super().generate(prompts, max_new_tokens, batch_size)
        was_training = self.model.training
        self.model.eval()
        try:
            if self.drafts is not None and (len(prompts) == 1 or batch_size == 1):
                return [self._drafted(p, max_new_tokens) for p in prompts]
            return greedy_causal(self.model, self.tokenizer, prompts, max_new_tokens, batch_size,
                                 learn=self.drafts.learn if self.drafts is not None else None)
        finally:
            self.model.train(was_training)

    def _drafted(self, prompt: list[int], max_new_tokens: int) -> str:
        tokens = greedy_with_drafts(self.model, prompt, max_new_tokens, self.tokenizer.eos_token_id, self.drafts)
        self.drafts.learn(tokens)
        return decode_until_eos(self.tokenizer, tokens)

    def label_scoring(self, scoring: str | None = None) -> str:
        return super().label_scoring(scoring or self.validated_scoring)


def validated_scoring(student: Student, metrics: dict | None) -> str | None:
    """"score" when the run's metrics.json has validation accuracy for both ways of picking labels and
    scoring is at least as accurate (classification and multiple-choice students), else None."""
    if not metrics or student.method == "single_task" or student.task.answer.kind not in (
            "classification", "multiple_choice"):
        return None
    own = student.meta.get("label_scoring") or "generate"
    acc = {(m.get("label_scoring") or (key.split(":", 1)[1] if ":" in key else own)): m.get("accuracy")
           for key, m in metrics.items() if (key == "valid" or key.startswith("valid:")) and isinstance(m, dict)}
    if acc.get("score") is not None and acc.get("generate") is not None and acc["score"] >= acc["generate"]:
        return "score"
    return None


DECODE16 = "float16-decode"
PRECISIONS = ("auto", "float32", "bfloat16", "float16", DECODE16)


class HalfDecodeLinear(torch.nn.Module):
    """A Linear that reads a float16 copy of its weight for calls of at most ``rows`` rows (decode steps of a
    few requests) and its float32 weight for longer ones (prompts, label scoring); activations stay float32.

    A decode step of a small student on a CPU reads every weight for one row of math: SmolLM2-135M's fp32
    matrix-vector products took 46 ms a step on the 2-core EPYC without 16-bit units, the same products from
    float16 weights 13 ms; from 8 rows on, float16 math without 16-bit units is the slower one. A call whose
    float16 result overflows is redone in float32."""

    def __init__(self, linear, rows: int = 4):
        super().__init__()
        self.linear, self.rows = linear, rows
        self.register_buffer("weight16", linear.weight.detach().to(torch.float16), persistent=False)

    def forward(self, x):
        if x.numel() > self.rows * x.shape[-1]:
            return self.linear(x)
        y = torch.nn.functional.linear(x.to(torch.float16), self.weight16).to(x.dtype)
        if not bool(torch.isfinite(y).all()):
            return self.linear(x)
        return y if self.linear.bias is None else y + self.linear.bias


def half_decode(model, rows: int = 4) -> int:
    """Wrap every Linear of ``model`` (lm_head included) in ``HalfDecodeLinear``; how many were wrapped."""
    n = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, HalfDecodeLinear(child, rows))
                n += 1
    return n


def resolve_dtype(precision: str) -> str:
    """``auto``: bfloat16 where the CPU (or GPU) has bf16 units, else float32. (On a CPU without bf16 units
    float32 with drafted tokens served the SVAMP student at 1.74 and 1.67 req/s alone against float16-decode's
    1.11 and 1.36, every label the same: benchmarks/results/serve_load_torch_nobf16_paths.json.) Or the
    precision named."""
    if precision == "auto":
        from stepdistill.student.machine import native_bf16

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return "bfloat16" if native_bf16(device) else "float32"
    if precision not in PRECISIONS:
        raise StepdistillError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    return precision


def _torch(path: str | Path, threads: int | None = None, precision: str = "auto", drafts: bool = True) -> Student:
    from stepdistill.serve.info import run_info

    precision = resolve_dtype(precision)
    student = TorchStudent.load(path, dtype="float32" if precision == DECODE16 else precision)
    if drafts and student.family == "causal" and precision != DECODE16:
        # not with float16 decode weights: the CPU multiplies them one row at a time, so checking K drafts (K + 1
        # rows) costs K + 1 steps (SVAMP student, 2-core EPYC, in-process: 462-502 ms a request with drafts,
        # 426-455 without)
        student.drafts = DraftTable()
    if precision == DECODE16 and student.family == "causal":
        half_decode(student.model)
    student.precision = precision
    log.info("torch engine, precision %s", precision)
    student.validated_scoring = validated_scoring(student, run_info(path).metrics)
    if student.validated_scoring:
        log.info("labels are scored (validation: scoring at least as accurate as generation)")
    return student


ENGINES = Registry("engine")
ENGINES.register("torch", _torch)
ENGINES.register("llamacpp", _llamacpp)
ENGINES.register("onnx", _onnx)


def load_engine(name: str, path: str | Path, threads: int | None = None, **options) -> Student:
    """The student of run (or exported) directory ``path``, with engine ``name`` doing the math; ``options``
    go to the engine (torch: ``precision``)."""
    student = ENGINES.get(name)(path, threads=threads, **options)
    student.engine = name
    return student
