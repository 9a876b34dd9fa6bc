"""The ``openai`` teacher backend: any OpenAI-compatible endpoint through the official ``openai`` SDK (async,
requests in flight capped by the server's slots and halved on waves of timeouts, retries with exponential
back-off and jitter, honouring Retry-After). Registered in ``backends.TEACHERS``."""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from typing import Any, AsyncIterator, Callable, Sequence

from stepdistill.errors import StepdistillError
from stepdistill.tasks import Task
from stepdistill.teacher.backends import Completion, Job, TeacherError, TeacherSettings, check_mode
from stepdistill.teacher.endpoint import (
    PROBE_TIMEOUT, AdaptiveLimit, BadReply, bad_reply, check_base_url, connect_failure, key_failure, probe, refused,
    reply_problem, served_instead,
)


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


class OpenAITeacher:
    """Any OpenAI-compatible endpoint through the official ``openai`` SDK (async, bounded concurrency,
    retries with exponential back-off and jitter, honouring Retry-After)."""

    name = "openai"

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


