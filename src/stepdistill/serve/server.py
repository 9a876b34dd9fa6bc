"""HTTP server for a trained student: POST /predict, GET /health, GET /info, and OpenAI-compatible
/v1/chat/completions, /v1/completions, /v1/models (``openai_api``). Concurrent requests are gathered
into micro-batches (``batching``) and run through the engine's ``predict`` in one worker thread.

    stepdistill serve runs/tiny-causal-svamp-dsbs-s0 --host 127.0.0.1 --port 8000
    curl -s 127.0.0.1:8000/predict -d '{"inputs": [{"body": "Tom has 3 apples and buys 4.", "question": "How many?"}]}'

Request: ``{"input": X}`` or ``{"inputs": [X, ...]}`` with X an object of task fields or a formatted
string, and optional ``"explain": true``. Answer: ``{"predictions": [{"label", "raw", "rationale"?}, ...]}``
in input order. Errors answer ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape): 400
malformed or too deeply nested JSON or explain on a student without rationales, 401 no/wrong API key,
408 body not sent within --request-timeout-s, 413 body / number of inputs / input length over the
limits, 422 wrong shape or types or missing task fields, 429 over --rate-limit, 503 queue full. User
text is only formatted and tokenized, and never logged.
"""

import asyncio
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stepdistill.errors import StepdistillError
from stepdistill.serve.batching import ApiError, MicroBatcher

API_KEY_ENV = "STEPDISTILL_API_KEY"

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
    request_timeout_s: float = 30.0
    """Longest a client may take to send a request's headers and body (the connection is closed, or 408)."""
    rate_limit: float = 0.0
    """Requests per second allowed per client address (token bucket; 429 with Retry-After beyond); 0 = off."""
    rate_burst: int = 10
    """Requests a client may send at once before ``rate_limit`` applies."""

    def problems(self) -> list[str]:
        return [f"--{name.replace('_', '-')} must be positive, got {value}" for name, value in asdict(self).items()
                if not (value > 0 or (name == "rate_limit" and value == 0))]


# ---- request checking -------------------------------------------------------------------------------

class ClientGone(Exception):
    """The client closed the connection before its request was read; nobody is left to answer."""


async def read_body(request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before or while reading it, and (408)
    a body still incomplete after ``timeout_s``. Raises :class:`ClientGone` if the client leaves."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"request body has {declared} bytes; the limit is {limit}")
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"the request body was not complete after {timeout_s:g} s") from None
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The decoded body, or a 400 (malformed, not UTF-8, or nested too deeply to decode)."""
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body's JSON is nested too deeply") from None


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

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               408: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 503: "server_overloaded"}


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict:
    """The error body of every route, shaped as OpenAI's: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass
class RequestStats:
    rejected: int = 0  # answered 4xx: malformed, over a limit, unauthorised (counted by the app)
    failed: int = 0  # answered 5xx
    client_gone: int = 0  # the client left before its request was read


def describe(student, info: dict | None) -> dict:
    """GET /info's description of ``student``: what it was trained for, ``info`` merged in, its engine."""
    base = {k: student.meta.get(k) for k in ("task", "method", "labels", "alpha", "student", "family",
                                             "prompt_format")}
    base.update(info or {})
    base["engine"] = getattr(student, "engine", "torch")
    if getattr(student, "precision", None):
        base["precision"] = student.precision
    if hasattr(student, "drafts"):
        base["drafts"] = student.drafts is not None
    return base


def add_error_handlers(app, requests: RequestStats) -> None:
    """Every error answers an OpenAI-style body and is counted in ``requests`` (rejected: 4xx, failed: 5xx)."""
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def error(status: int, code: str, message: str, headers=None):
        if status >= 500:
            requests.failed += 1
        else:
            requests.rejected += 1
        return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def on_api_error(request, exc: ApiError):
        return error(exc.status, exc.code, exc.message, {"Retry-After": "1"} if exc.status == 503 else None)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, exc):
        return error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(ClientGone)
    async def on_client_gone(request, exc):
        requests.client_gone += 1
        log.info("client left before its request was read")
        return Response(status_code=400)  # nobody reads it

    @app.exception_handler(Exception)
    async def on_crash(request, exc):
        log.exception("prediction failed")
        return error(500, "internal", f"prediction failed: {type(exc).__name__}; see the server log")


def create_app(student, settings: ServeSettings | None = None, info: dict | None = None, *,
               api_key: str | None = None, model_name: str | None = None):
    """A FastAPI app serving ``student`` (a :class:`stepdistill.student.Student`, or any engine with its
    ``predict``/``task``/``meta``/``can_explain``/``method``). ``info`` is merged into GET /info (e.g.
    ``run_info(path).summary()``). ``api_key``: every route but /health needs ``Authorization: Bearer KEY``.
    ``model_name``: the id of GET /v1/models (default: the student's task and method)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from stepdistill.serve.openai_api import add_openai_routes
    from stepdistill.serve.security import Guard

    settings = settings or ServeSettings()
    if settings.problems():
        raise StepdistillError("; ".join(settings.problems()))
    batcher = MicroBatcher(
        lambda inputs, explain: student.predict(inputs, explain=explain, batch_size=settings.batch_size), settings,
        concurrent=getattr(student, "concurrent_generate", False))
    started = time.time()
    requests = RequestStats()
    base_info = describe(student, info)
    model_id = model_name or f"{student.meta.get('task')}-{student.meta.get('method')}-student"

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="stepdistill student", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.add_middleware(Guard, api_key=api_key, rate_limit=settings.rate_limit, burst=settings.rate_burst)

    add_error_handlers(app, requests)

    async def answer(payload: Any) -> tuple[list, list[dict], bool]:
        """(inputs, predictions, explain) for a decoded request body; ApiError for a bad one."""
        inputs, explain = check_request(payload, student, settings)
        try:
            return inputs, await batcher.submit(inputs, explain), explain
        except StepdistillError as exc:
            raise ApiError(422, "invalid_input", str(exc)) from None

    async def read_json(request: Request) -> Any:
        return parse_json(await read_body(request, settings.max_body_bytes, settings.request_timeout_s))

    @app.post("/predict")
    async def predict(request: Request):
        _, results, _ = await answer(await read_json(request))
        return {"predictions": results}

    @app.get("/health")
    async def health():
        body = {"status": "ok" if batcher.alive else "error", "uptime_s": round(time.time() - started, 1),
                "batching": batcher.stats.public(), "requests": asdict(requests)}
        if getattr(student, "drafts", None) is not None:
            body["drafts"] = student.drafts.stats()
        return JSONResponse(body, status_code=200 if batcher.alive else 503)

    @app.get("/info")
    async def get_info():
        return {**base_info, "model": model_id, "can_explain": student.can_explain, "limits": asdict(settings),
                "batching": batcher.stats.public()}

    add_openai_routes(app, student, model_id, read_json, answer, started)
    return app


def api_key_from(flag: str | None) -> str | None:
    """The API key to require: ``--api-key``, else $STEPDISTILL_API_KEY, else none (an empty one is none)."""
    return flag or os.environ.get(API_KEY_ENV) or None


def uvicorn_config(app, settings: ServeSettings, **kw):
    """uvicorn settings for ``app``: h11 with a deadline for slow clients (see ``security.guarded_h11``)."""
    import uvicorn

    from stepdistill.serve.security import guarded_h11

    return uvicorn.Config(app, http=guarded_h11(settings.request_timeout_s), timeout_graceful_shutdown=5, **kw)


def serve(path: str, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          log_level: str = "info", *, engine: str = "torch", api_key: str | None = None,
          model_name: str | None = None, threads: int | None = None, precision: str = "auto",
          drafts: bool = True) -> None:
    """Load the student of a run (or exported) directory with ``engine`` and serve it with uvicorn until
    interrupted. ``api_key`` defaults to $STEPDISTILL_API_KEY."""
    try:
        import fastapi  # noqa: F401  (create_app imports it; fail here with the install hint)
        import uvicorn
    except ImportError:
        raise StepdistillError("serving needs fastapi and uvicorn: pip install 'stepdistill[serve]'") from None

    from stepdistill.serve.engines import load_engine
    from stepdistill.serve.info import run_info

    settings = settings or ServeSettings()
    if settings.problems():
        raise StepdistillError("; ".join(settings.problems()))
    api_key = api_key_from(api_key)
    options = {"torch": {"precision": precision, "drafts": drafts}, "onnx": {"drafts": drafts}}.get(engine, {})
    if (precision != "auto" and "precision" not in options) or (not drafts and "drafts" not in options):
        raise StepdistillError(f"--precision applies to the torch engine and --no-drafts to the torch and onnx "
                               f"engines; the {engine} engine runs its file as is")
    student = load_engine(engine, path, threads=threads, **options)
    info_dir = Path(path).parent if str(path).endswith(".gguf") else path
    app = create_app(student, settings, info=run_info(info_dir).summary(), api_key=api_key, model_name=model_name)
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key: anyone who reaches it can call it (--api-key)", host)
    uvicorn.Server(uvicorn_config(app, settings, host=host, port=port, log_level=log_level)).run()
