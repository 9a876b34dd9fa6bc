"""HTTP server for a trained student: POST /predict, GET /health, GET /info. Concurrent requests are
gathered into micro-batches and run through ``Student.predict`` in one worker thread.

    stepdistill serve runs/tiny-causal-svamp-dsbs-s0 --host 127.0.0.1 --port 8000
    curl -s 127.0.0.1:8000/predict -d '{"inputs": [{"body": "Tom has 3 apples and buys 4.", "question": "How many?"}]}'

Request: ``{"input": X}`` or ``{"inputs": [X, ...]}`` with X an object of task fields or a formatted
string, and optional ``"explain": true``. Answer: ``{"predictions": [{"label", "raw", "rationale"?}, ...]}``
in input order. Errors answer ``{"error": {"code", "message"}}``: 400 malformed JSON or explain on a
student without rationales, 413 body / number of inputs / input length over the limits, 422 wrong
shape or types or missing task fields, 503 queue full. User text is only formatted and tokenized.
"""

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from stepdistill.errors import StepdistillError

log = logging.getLogger("stepdistill.serve")


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of the server; every field is a ``stepdistill serve`` flag."""

    max_body_bytes: int = 1 << 20
    """Largest request body accepted (413 beyond), checked on Content-Length and while reading."""
    max_inputs: int = 64
    """Most inputs in one request (413 beyond)."""
    max_input_chars: int = 4000
    """Longest formatted input, in characters (413 beyond). The model also truncates to its token budget."""
    max_batch: int = 32
    """Most inputs in one micro-batch handed to the model."""
    max_wait_ms: float = 5.0
    """How long the batcher waits for more requests after the first one arrives."""
    max_queue: int = 1024
    """Most inputs waiting for the model (503 beyond)."""
    batch_size: int = 16
    """Generation batch size inside ``Student.predict`` (inputs are sorted by length first)."""

    def problems(self) -> list[str]:
        return [f"--{name.replace('_', '-')} must be positive, got {value}" for name, value in asdict(self).items()
                if not value > 0]


class ApiError(Exception):
    """An error answered to the client as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ---- micro-batching ---------------------------------------------------------------------------------

@dataclass
class _Pending:
    inputs: list
    explain: bool
    future: asyncio.Future


@dataclass
class BatchStats:
    requests: int = 0
    inputs: int = 0
    batches: int = 0  # calls of Student.predict
    largest_batch: int = 0
    model_seconds: float = 0.0
    queued: int = 0  # inputs waiting now
    errors: int = 0

    def public(self) -> dict:
        d = asdict(self)
        d["model_seconds"] = round(d["model_seconds"], 3)
        d["inputs_per_batch"] = round(self.inputs / self.batches, 2) if self.batches else None
        return d


class MicroBatcher:
    """Gathers concurrent ``submit`` calls for up to ``max_wait_ms`` (or ``max_batch`` inputs) and runs
    them with one ``predict(inputs, explain)`` call per explain flag, in a worker thread, one at a time.
    While the model runs, new requests queue up and form the next batch."""

    def __init__(self, predict, settings: ServeSettings):
        self.predict = predict
        self.settings = settings
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop(), name="stepdistill-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, inputs: list, explain: bool) -> list[dict]:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self.stats.queued + len(inputs) > self.settings.max_queue:
            raise ApiError(503, "overloaded", f"{self.stats.queued} inputs are waiting for the model (limit "
                           f"{self.settings.max_queue}); retry later")
        self.stats.requests += 1
        self.stats.queued += len(inputs)
        item = _Pending(inputs, explain, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(item)
        return await item.future

    async def _gather(self) -> list[_Pending]:
        first = await self._queue.get()
        batch, n = [first], len(first.inputs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.max_wait_ms / 1000
        while n < self.settings.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            batch.append(item)
            n += len(item.inputs)
        return batch

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _loop(self) -> None:
        while True:
            batch = await self._gather()
            try:
                for explain in (False, True):
                    group = [p for p in batch if p.explain == explain and not p.future.cancelled()]
                    if group:
                        await self._run(group, explain)
            except Exception as exc:  # noqa: BLE001 - a bug here must not leave clients waiting forever
                log.exception("micro-batch failed")
                for p in batch:
                    _settle(p.future, exc=exc)
            finally:
                for p in batch:
                    self.stats.queued -= len(p.inputs)

    async def _run(self, group: list[_Pending], explain: bool) -> None:
        inputs = [x for p in group for x in p.inputs]
        t0 = time.perf_counter()
        try:
            results = await asyncio.to_thread(self.predict, inputs, explain)
        except Exception as exc:  # noqa: BLE001 - answered to the clients, never kills the loop
            if len(group) > 1:  # find whose input failed: run the requests one by one
                for p in group:
                    await self._run([p], explain)
                return
            self.stats.errors += 1
            _settle(group[0].future, exc=exc)
            return
        finally:
            self.stats.model_seconds += time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.inputs += len(inputs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(inputs))
        start = 0
        for p in group:
            _settle(p.future, result=results[start:start + len(p.inputs)])
            start += len(p.inputs)


def _settle(future: asyncio.Future, result=None, exc: BaseException | None = None) -> None:
    if future.done():  # the client went away
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


# ---- request checking -------------------------------------------------------------------------------

async def read_body(request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before or while reading it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"request body has {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


REQUEST_KEYS = ("input", "inputs", "explain")


def _check_shape(item: Any, where: str) -> None:
    if isinstance(item, str):
        return
    if not isinstance(item, dict):
        raise ApiError(422, "invalid_request", f"{where} must be a string (a formatted input) or an object of "
                       f"task fields, got {_json_type(item)}")
    for key, value in item.items():
        ok = value is None or isinstance(value, (str, int, float, bool)) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not ok:
            raise ApiError(422, "invalid_request", f"{where}.{key} must be a string, a number or a list of "
                           f"strings, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def check_request(payload: Any, student, settings: ServeSettings) -> tuple[list, bool]:
    """Validate a decoded JSON body; returns (inputs, explain) or raises :class:`ApiError`."""
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_request", f"the body must be a JSON object with 'input' or 'inputs', got "
                       f"{_json_type(payload)}")
    unknown = sorted(set(payload) - set(REQUEST_KEYS))
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown key(s) {', '.join(map(repr, unknown))}; a request has "
                       "'input' or 'inputs', and optionally 'explain'")
    if ("input" in payload) == ("inputs" in payload):
        raise ApiError(422, "invalid_request", "give exactly one of 'input' (one input) or 'inputs' (a list)")
    explain = payload.get("explain", False)
    if not isinstance(explain, bool):
        raise ApiError(422, "invalid_request", f"'explain' must be true or false, got {_json_type(explain)}")
    if "input" in payload:
        inputs, names = [payload["input"]], ["input"]
    else:
        inputs = payload["inputs"]
        if not isinstance(inputs, list):
            raise ApiError(422, "invalid_request", f"'inputs' must be an array, got {_json_type(inputs)}")
        if not inputs:
            raise ApiError(422, "invalid_request", "'inputs' is empty")
        if len(inputs) > settings.max_inputs:
            raise ApiError(413, "too_many_inputs", f"{len(inputs)} inputs in one request; the limit is "
                           f"{settings.max_inputs}; split the request")
        names = [f"inputs[{i}]" for i in range(len(inputs))]
    for item, where in zip(inputs, names):
        _check_shape(item, where)
    if explain and not student.can_explain:
        raise ApiError(400, "explain_unsupported", f"this student was trained with method '{student.method}', "
                       "without rationales; send explain=false")
    from stepdistill.tasks import InputError

    for item, where in zip(inputs, names):
        try:  # the task's one input rule, as in predict and Student.predict
            text, _ = student.task.read_input(item)
        except InputError as exc:
            raise ApiError(422, exc.code, f"{where}: {exc}") from None
        if len(text) > settings.max_input_chars:
            raise ApiError(413, "input_too_long", f"{where} has {len(text)} characters; the limit is "
                           f"{settings.max_input_chars}")
    return inputs, explain


# ---- the app ----------------------------------------------------------------------------------------

def create_app(student, settings: ServeSettings | None = None, info: dict | None = None):
    """A FastAPI app serving ``student`` (a :class:`stepdistill.student.Student`). ``info`` is merged into
    GET /info (e.g. ``run_info(path).summary()``)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or ServeSettings()
    if settings.problems():
        raise StepdistillError("; ".join(settings.problems()))
    batcher = MicroBatcher(
        lambda inputs, explain: student.predict(inputs, explain=explain, batch_size=settings.batch_size), settings)
    started = time.time()
    base_info = {k: student.meta.get(k) for k in ("task", "method", "labels", "alpha", "student", "family",
                                                   "prompt_format")}
    base_info.update(info or {})

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="stepdistill student", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher

    def error(status: int, code: str, message: str, headers=None):
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def on_api_error(request, exc: ApiError):
        return error(exc.status, exc.code, exc.message, {"Retry-After": "1"} if exc.status == 503 else None)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, exc):
        return error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def on_crash(request, exc):
        log.exception("prediction failed")
        return error(500, "internal", f"prediction failed: {type(exc).__name__}; see the server log")

    @app.post("/predict")
    async def predict(request: Request):
        body = await read_body(request, settings.max_body_bytes)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        inputs, explain = check_request(payload, student, settings)
        try:
            results = await batcher.submit(inputs, explain)
        except StepdistillError as exc:
            raise ApiError(422, "invalid_input", str(exc)) from None
        return {"predictions": results}

    @app.get("/health")
    async def health():
        body = {"status": "ok" if batcher.alive else "error", "uptime_s": round(time.time() - started, 1),
                "batching": batcher.stats.public()}
        return JSONResponse(body, status_code=200 if batcher.alive else 503)

    @app.get("/info")
    async def get_info():
        return {**base_info, "can_explain": student.can_explain, "limits": asdict(settings),
                "batching": batcher.stats.public()}

    return app


def serve(path: str, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          log_level: str = "info") -> None:
    """Load the student of a run directory and serve it with uvicorn until interrupted."""
    try:
        import fastapi  # noqa: F401  (build_app imports it; fail here with the install hint)
        import uvicorn
    except ImportError:
        raise StepdistillError("serving needs fastapi and uvicorn: pip install 'stepdistill[serve]'") from None

    from stepdistill.serve.info import run_info
    from stepdistill.student import Student

    settings = settings or ServeSettings()
    if settings.problems():
        raise StepdistillError("; ".join(settings.problems()))
    student = Student.load(path)
    app = create_app(student, settings, info=run_info(path).summary())
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
