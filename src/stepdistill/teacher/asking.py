"""Asking the teacher: the jobs go to the backend in batches the budget can pay for, every answer is parsed
and stored as it arrives (a killed run loses nothing stored), and one progress bar shows done/total, failures,
retries, the requests in flight and the money spent."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

from stepdistill.tasks import Task
from stepdistill.teacher.backends import Completion, Job, TeacherError
from stepdistill.teacher.cost import Budget
from stepdistill.teacher.parsing import parse_output
from stepdistill.teacher.store import RationaleStore, TeacherRecord


class Progress:
    """done/total, rate and failures on stderr (tqdm when available)."""

    def __init__(self, total: int, done: int, enabled: bool = True):
        self.total, self.done, self.failures, self.t0 = total, done, 0, time.monotonic()
        self.bar, self.cost = None, ""  # cost: money spent and projected (teacher/cost.py), when priced
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=done, desc="teacher", unit="ans", file=sys.stderr,
                                dynamic_ncols=True, mininterval=0.5)
            except ImportError:
                pass

    def update(self, ok: bool, retries: int) -> None:
        if ok:
            self.done += 1
        else:
            self.failures += 1
        if self.bar is not None:
            self.bar.update(1 if ok else 0)
            self.bar.set_postfix_str(f"failed {self.failures}, retries {retries}{self._cost()}", refresh=False)

    def _cost(self) -> str:
        return f", cost {self.cost}" if self.cost else ""

    def write(self, msg: str, fallback: Callable[[str], None]) -> None:
        """A message above the bar (or through ``fallback`` when there is no bar)."""
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            fallback(msg)

    def waiting(self, in_flight: int, limit: int, oldest_s: float, retries: int) -> None:
        """Redraw with the requests in flight and how long the oldest has waited (a slow teacher shows
        signs of life before its first answer)."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"failed {self.failures}, retries {retries}, in flight {in_flight}/{limit}, "
                                     f"waiting {oldest_s:.0f} s{self._cost()}", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def ask_all(backend, jobs: list[Job], store: RationaleStore, task: Task, key: dict,
                 progress: Progress, budget: Budget) -> tuple[int, list[str]]:
    """Run the jobs, storing each answer as it arrives; returns (stored, failure messages). The jobs go in
    batches that ``budget`` can pay for in the worst case; the rest are left unasked (``budget.not_asked``)."""
    stored, failures, pending = 0, [], list(jobs)
    ticker = asyncio.create_task(show_in_flight(backend, progress))
    try:
        while pending:
            n = budget.affordable(pending)
            if n == 0:
                budget.not_asked = len(pending)
                break
            batch, pending = pending[:n], pending[n:]
            async for job, result in backend.generate(batch):
                if isinstance(result, TeacherError):
                    raise result
                if isinstance(result, BaseException):
                    failures.append(f"{job.example.id}#{job.sample_index}: {result}")
                    progress.update(False, getattr(backend, "retries", 0))
                    continue
                stored += store_answer(store, task, key, job, result)
                budget.add(job, result.prompt_tokens, result.completion_tokens)
                progress.cost = budget.postfix(progress.total - progress.done - 1)
                progress.update(True, getattr(backend, "retries", 0))
    finally:
        ticker.cancel()
        await backend.aclose()
    return stored, failures


def store_answer(store: RationaleStore, task: Task, key: dict, job: Job, result: Completion) -> bool:
    assert isinstance(result, Completion)
    parsed = parse_output(task, result.text, job.example.row, result.finish_reason)
    record = TeacherRecord(
        **key, example_id=job.example.id, sample_index=job.sample_index, raw_output=result.text,
        rationale=parsed.rationale, label=parsed.label, status=parsed.status, reason=parsed.reason or None,
        finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens, latency_s=result.latency_s, attempts=result.attempts)
    return store.put(record)


async def show_in_flight(backend, progress: Progress, every_s: float = 0.5) -> None:
    limit = getattr(backend, "limit", None)  # an endpoint.AdaptiveLimit (openai); other backends have none
    while limit is not None:
        await asyncio.sleep(every_s)
        progress.waiting(len(limit.in_flight), limit.limit, limit.oldest_wait(), getattr(backend, "retries", 0))
