"""Micro-batching for the server: concurrent requests are gathered for up to ``max_wait_ms`` and run
through one engine call per batch in a worker thread, one batch at a time.

    batcher = MicroBatcher(lambda inputs, explain: student.predict(inputs, explain=explain), settings)
    await batcher.start(); results = await batcher.submit(["Tom has 3 apples ..."], explain=False)
"""

import asyncio
import logging
import time
from dataclasses import asdict, dataclass

log = logging.getLogger("stepdistill.serve")


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
    While the model runs, new requests queue up and form the next batch. With ``concurrent`` (an engine whose
    predict calls may overlap and join one decoding loop, such as llamacpp's continuous batching), each batch is
    handed over as soon as it is gathered."""

    def __init__(self, predict, settings, concurrent: bool = False):
        self.predict = predict
        self.settings = settings
        self.concurrent = concurrent
        self._running: set[asyncio.Task] = set()
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop(), name="stepdistill-batcher")

    async def stop(self) -> None:
        for task in [self._task, *self._running]:  # concurrent batches in flight stop as the loop's own would
            if task is not None:
                task.cancel()
                try:
                    await task
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
            if self.concurrent:
                task = asyncio.create_task(self._run_batch(batch))
                self._running.add(task)  # held until done (the loop keeps only weak references)
                task.add_done_callback(self._running.discard)
            else:
                await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Pending]) -> None:
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
