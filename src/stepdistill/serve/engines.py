"""Engines: what does the math behind ``stepdistill serve --engine NAME``. The server and ``Student`` keep
task formatting, validation, prompts, label parsing, micro-batching and limits; an engine is a ``Student``
whose ``generate`` (greedy continuations of token-id prompts) runs elsewhere.

    stepdistill serve runs/tiny-causal-svamp-dsbs-s0 --engine torch
    stepdistill export runs/svamp-smollm2 exported/svamp --gguf && stepdistill serve exported/svamp --engine llamacpp
    stepdistill export runs/svamp-smollm2 exported/svamp --onnx && stepdistill serve exported/svamp --engine onnx

- ``torch``: the PyTorch student (label scoring where the student's ``eval.label_scoring`` says so).
- ``llamacpp``: the exported GGUF in-process through ``llama-cpp-python``, fed the exact prompt token ids
  (so the piece-by-piece tokenization of training is kept); prefixes shared with the previous prompt are
  reused. Sequences run one after another within a micro-batch; labels are always generated.
- ``onnx``: the label-only ONNX graph of ``export --onnx`` via onnxruntime (no KV cache: short labels).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from stepdistill.errors import StepdistillError
from stepdistill.registry import Registry
from stepdistill.student import Student

log = logging.getLogger("stepdistill.serve")
LLAMA_PIP = "pip install llama-cpp-python"


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

    def __init__(self, gguf: Path, tokenizer, meta: dict, threads: int | None = None, n_ctx: int = 2048):
        try:
            import llama_cpp
        except ImportError:
            raise StepdistillError(f"the llamacpp engine needs llama-cpp-python: {LLAMA_PIP}") from None
        super().__init__(None, tokenizer, meta)
        if meta.get("label_scoring") == "score":
            log.warning("this student picks labels by scoring; the llamacpp engine generates them (labels can differ)")
        self.gguf = gguf
        self.llm = llama_cpp.Llama(str(gguf), n_ctx=n_ctx, n_batch=512, n_threads=threads, verbose=False)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[str]:
        eos = {self.tokenizer.eos_token_id, self.llm.token_eos()}
        out = []
        for prompt in prompts:
            tokens: list[int] = []
            if max_new_tokens > 0:
                for tok in self.llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                             reset=True):
                    if tok in eos:
                        break
                    tokens.append(tok)
                    if len(tokens) >= max_new_tokens:
                        break
            out.append(self.tokenizer.decode(tokens, skip_special_tokens=True).strip())
        return out

    def close(self) -> None:
        self.llm.close()


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

    def __init__(self, export_dir: Path, meta: dict, threads: int | None = None):
        from stepdistill.serve.onnx import OnnxLabeler

        self.labeler = OnnxLabeler(export_dir, threads=threads)
        super().__init__(None, self.labeler.tokenizer, meta)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[str]:
        out: list[str] = []
        for start in range(0, len(prompts), batch_size):
            for tokens in self.labeler.generate(prompts[start:start + batch_size], max_new_tokens):
                out.append(self.tokenizer.decode(tokens, skip_special_tokens=True).strip())
        return out


def _onnx(path: str | Path, threads: int | None = None) -> Student:
    from stepdistill.student.predict import find_model_dir

    model_dir = find_model_dir(path)
    meta, _ = _meta_and_tokenizer(model_dir)
    return OnnxStudent(model_dir, meta, threads=threads)


def _torch(path: str | Path, threads: int | None = None) -> Student:
    return Student.load(path)


ENGINES = Registry("engine")
ENGINES.register("torch", _torch)
ENGINES.register("llamacpp", _llamacpp)
ENGINES.register("onnx", _onnx)


def load_engine(name: str, path: str | Path, threads: int | None = None) -> Student:
    """The student of run (or exported) directory ``path``, with engine ``name`` doing the math."""
    student = ENGINES.get(name)(path, threads=threads)
    student.engine = name
    return student
