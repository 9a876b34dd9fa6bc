"""What the openai backend learns about its endpoint before and while it asks: a checked URL, whether a
server listens there, the model it really serves, how many requests it computes at once, and replies
that are not completions. Each problem becomes one line that names the flag to change.

    stepdistill extract --task svamp --base-url http://127.0.0.1:8080/v1 --model m --limit 10

Before the first request, :func:`probe` asks (a few seconds at most) ``GET <base>/models`` and, for
llama.cpp's server, ``GET <root>/props`` (``total_slots``); llama-cpp-python's server (one model, one
request at a time) is recognised by its OpenAPI title. A refused connection fails at once. While the run
goes on, :class:`AdaptiveLimit` lowers the number of requests in flight when requests time out: on a
server with fewer slots than requests in flight the others queue there, and time out while they wait.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from stepdistill.errors import StepdistillError

URL_EXAMPLE = "http://127.0.0.1:8080/v1"
PROBE_TIMEOUT = 10.0  # seconds, at most, for each GET of the probe


def check_base_url(url: str, source: str = "--base-url") -> str:
    """``url`` without a trailing slash, or a one-line error naming ``source`` (the flag or variable)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise StepdistillError(f"{source} '{url}' is not a server URL: expected http(s)://HOST[:PORT]/..., "
                               f"e.g. {URL_EXAMPLE}")
    return url.rstrip("/")


def connect_failure(where: str, exc: BaseException) -> str:
    reason = str(exc.__cause__ or exc) or type(exc).__name__
    return (f"cannot connect to {where} ({reason}): is the teacher server running there? Start it, or fix "
            "--base-url")


def key_failure(where: str, status: int, key_env: str, key_set: bool) -> str:
    if not key_set:
        return (f"{where} wants an API key ({status}) but the environment variable {key_env} is not set: export "
                f"{key_env}=..., or name the variable that holds the key with --api-key-env")
    return f"{where} rejected the API key ({status}) in ${key_env}: check it, or --api-key-env"


def bad_reply(where: str, what: str) -> str:
    return (f"{where} answered with {what}, not an OpenAI completion: check --base-url (the API root, "
            "usually ending in /v1) and --mode")


def reply_problem(resp: Any) -> str | None:
    """Why a 200 reply of the SDK is not a usable completion (None when it is)."""
    if isinstance(resp, (str, bytes)):
        text = resp.decode(errors="replace") if isinstance(resp, bytes) else resp
        head = " ".join(text.split())[:80]
        return f"a body that is not JSON ({head!r})"
    if not getattr(resp, "choices", None):
        return "a reply with no choices"
    return None


@dataclass(frozen=True)
class ServerInfo:
    models: list[str] | None = None  # ids listed by GET /models; None when it did not say
    slots: int | None = None  # requests the server computes at once, when it says
    kind: str | None = None  # what told us: "llama.cpp server (/props)", "llama-cpp-python server"


def probe(base_url: str, key: str, key_env: str, key_set: bool, timeout: float = PROBE_TIMEOUT) -> ServerInfo:
    """Ask the server what it is before the run. Fails at once when nothing listens or the key is refused;
    anything else it cannot learn is left to the requests."""
    import httpx

    root = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
    with httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {key}"}) as client:
        try:
            resp = client.get(base_url + "/models")
        except httpx.ConnectError as exc:  # refused, unknown host: nothing that waiting would fix
            raise StepdistillError(connect_failure(base_url, exc)) from None
        except httpx.HTTPError:
            return ServerInfo()  # slow or odd: the requests will tell
        if resp.status_code in (401, 403):
            raise StepdistillError(key_failure(base_url, resp.status_code, key_env, key_set))
        models = _model_ids(resp)
        slots, kind = _slots(client, root)
    return ServerInfo(models=models, slots=slots, kind=kind)


def _json(resp) -> Any:
    if resp.status_code != 200:
        return None
    try:
        return resp.json()
    except ValueError:
        return None


def _model_ids(resp) -> list[str] | None:
    body = _json(resp)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    ids = [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
    return ids or None


def _slots(client, root: str) -> tuple[int | None, str | None]:
    import httpx

    try:
        props = _json(client.get(root + "/props"))  # llama.cpp's server
        if isinstance(props, dict) and isinstance(props.get("total_slots"), int) and props["total_slots"] >= 1:
            return props["total_slots"], "llama.cpp server (/props total_slots)"
        spec = _json(client.get(root + "/openapi.json"))  # llama-cpp-python: one Llama behind a lock
        title = str((spec or {}).get("info", {}).get("title", "")) if isinstance(spec, dict) else ""
        if "llama.cpp python api" in title.lower():
            return 1, "llama-cpp-python server (answers one request at a time)"
    except httpx.HTTPError:
        pass
    return None, None


def served_instead(requested: str, models: list[str] | None) -> str | None:
    """The teacher's name when the server serves a single model other than ``requested`` (it answers any
    name with it) or names it by a file path (llama.cpp: then the file name); None to keep ``requested``."""
    if not models or len(models) != 1:
        return None
    name = models[0]
    if name.endswith(".gguf") or name.startswith("/"):
        name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return None if name == requested else name


@dataclass
class Ticket:
    generation: int  # the limit's generation when the request was sent
    started: float


class AdaptiveLimit:
    """At most ``limit`` requests in flight. A request that times out lowers the limit to half (not below
    1), once per generation: requests sent before the last lowering do not lower it again."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self.generation = 0
        self.in_flight: dict[int, Ticket] = {}
        self._cond: asyncio.Condition | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Ticket]:
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            await self._cond.wait_for(lambda: len(self.in_flight) < self.limit)
            ticket = Ticket(self.generation, time.monotonic())
            self.in_flight[id(ticket)] = ticket
        try:
            yield ticket
        finally:
            async with self._cond:
                self.in_flight.pop(id(ticket), None)
                self._cond.notify_all()

    def timed_out(self, ticket: Ticket, timeout: float) -> str | None:
        """Lower the limit after ``ticket`` timed out; returns the line to log when it did."""
        if ticket.generation != self.generation or self.limit == 1:
            return None
        before, self.limit = self.limit, max(1, self.limit // 2)
        self.generation += 1
        return (f"a request timed out after {timeout:g} s with {before} in flight: the teacher computes fewer "
                f"requests at once than that, the others queue there; sending at most {self.limit} at a time "
                f"from now on (start there with --concurrency {self.limit})")

    def oldest_wait(self) -> float:
        """Seconds the oldest request in flight has been waiting (0 when none)."""
        starts = [t.started for t in list(self.in_flight.values())]
        return time.monotonic() - min(starts) if starts else 0.0


class BadReply(StepdistillError):
    """A 200 reply that is not a completion (a web page, no choices)."""


def refused(exc: BaseException) -> bool:
    """True when ``exc`` (an SDK connection error) means nothing accepted the connection at all."""
    import httpx

    seen = exc
    while seen is not None:
        if isinstance(seen, httpx.ConnectError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
