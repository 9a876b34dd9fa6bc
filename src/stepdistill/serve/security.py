"""What stands in front of the server's routes: an API key, a per-client rate limit, and a deadline for
slow clients.

    STEPDISTILL_API_KEY=s3cret stepdistill serve RUN --rate-limit 5 --rate-burst 10
    curl -H "Authorization: Bearer s3cret" 127.0.0.1:8000/info

``Guard`` (an ASGI middleware) answers 401 to any request but GET /health that lacks
``Authorization: Bearer KEY`` (compared in constant time), and 429 with ``Retry-After`` to a client
address over its token bucket. ``guarded_h11`` is uvicorn's h11 protocol with a deadline on the request
headers: a client that trickles them (or holds an idle connection open with a partial request) is
disconnected after ``request_timeout_s``; the body has the same deadline in ``server.read_body`` (408).
Nothing here reads or logs request bodies.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time

log = logging.getLogger("stepdistill.serve")
OPEN_PATHS = ("/health",)


class TokenBuckets:
    """``rate`` requests per second per key, with bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000):
        self.rate, self.burst, self.max_keys = rate, float(burst), max_keys
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, time of the last update)

    def take(self, key: str, now: float | None = None) -> float:
        """0 when the request may go ahead (a token is spent), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            if len(self.buckets) > self.max_keys:  # forget the clients whose bucket is full again
                self.buckets = {k: v for k, v in self.buckets.items()
                                if v[0] + (now - v[1]) * self.rate < self.burst}
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


class Guard:
    """ASGI middleware: API key (401) and per-client rate limit (429) on every route but /health."""

    def __init__(self, app, api_key: str | None = None, rate_limit: float = 0.0, burst: int = 10):
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.buckets = TokenBuckets(rate_limit, burst) if rate_limit > 0 else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self.buckets is not None:
            client = (scope.get("client") or ("unknown", 0))[0]
            wait = self.buckets.take(client)
            if wait > 0:
                return await _refuse(send, 429, "rate_limited", f"over the limit of {self.buckets.rate:g} "
                                     f"requests/s for {client}; retry in {wait:.1f} s",
                                     [(b"retry-after", str(math.ceil(wait)).encode())])
        if self.expected is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                return await _refuse(send, 401, "invalid_api_key", "missing or wrong API key: send the header "
                                     "'Authorization: Bearer <key>'", [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


async def _refuse(send, status: int, code: str, message: str, headers: list) -> None:
    from stepdistill.serve.server import error_body

    body = json.dumps(error_body(status, code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def guarded_h11(timeout_s: float):
    """uvicorn's h11 protocol class, closing connections whose request headers take over ``timeout_s``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        _deadline = None

        def _arm(self, waiting_after) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(timeout_s, self._expire, waiting_after)

        def _expire(self, waiting_after) -> None:
            # still no new request since the deadline was set: the client is too slow (or idle with a partial one)
            if self.cycle is waiting_after and not self.transport.is_closing():
                log.info("closed a connection whose request headers took over %g s", timeout_s)
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm(None)

        def on_response_complete(self) -> None:
            finished = self.cycle
            super().on_response_complete()
            self._arm(finished)

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

    return GuardedH11
