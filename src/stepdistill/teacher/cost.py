"""What the teacher costs: tokens in and out per request (the ``usage`` an OpenAI-compatible server returns,
stored with every answer) priced per million tokens, and a budget that stops extraction before it is exceeded.

    stepdistill extract --task t.yaml --model gpt-4o-mini --price-in 0.15 --price-out 0.6 --max-cost 2.50

The budget never lets a request start that could overrun it: before each batch of requests it counts the
worst case of every request (its prompt's tokens, estimated from its length with the largest tokens-per-
character ratio seen so far, plus the whole ``max_tokens`` answer budget) and sends only as many as fit.
Money already spent on the answers in the store counts, so a resumed extraction keeps to the same budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

START_TOKENS_PER_CHAR = 0.5  # before the first answer: English text is about 0.25 tokens a character


@dataclass(frozen=True)
class Prices:
    """US dollars (or any currency) per million tokens."""

    input: float | None = None
    output: float | None = None

    @property
    def known(self) -> bool:
        return self.input is not None or self.output is not None

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float:
        return ((prompt_tokens or 0) * (self.input or 0.0) + (completion_tokens or 0) * (self.output or 0.0)) / 1e6


def money(x: float | None) -> str:
    """An amount with the digits that matter: 12.35, 0.0840, 0.000412."""
    if x is None:
        return "n/a"
    return f"{x:.2f}" if abs(x) >= 10 else f"{x:.4f}" if abs(x) >= 0.01 or x == 0 else f"{x:.6f}"


def prompt_chars(job) -> int:
    """Characters a job sends (chat turns or completion text); 0 for imports, which cost nothing."""
    prompt = getattr(job, "prompt", None)
    if prompt is None:
        return 0
    messages = getattr(prompt, "messages", None)
    if messages:
        return sum(len(str(m.get("content", ""))) + 8 for m in messages)
    return len(getattr(prompt, "text", "") or "")


@dataclass
class Budget:
    """Spending so far (``spent``: every stored answer, ``spent_now``: this run's) and the ``max_cost`` gate."""

    prices: Prices
    max_tokens: int
    max_cost: float | None = None
    spent: float = 0.0
    answers_before: int = 0  # stored answers that ``spent`` already counts
    spent_now: float = 0.0
    answered_now: int = 0
    tokens_per_char: float = START_TOKENS_PER_CHAR
    not_asked: int = 0  # requests the budget did not allow
    _seen_ratio: bool = field(default=False, repr=False)

    def worst_case(self, job) -> float:
        prompt = int(prompt_chars(job) * self.tokens_per_char) + 1
        return self.prices.cost(prompt, self.max_tokens) if prompt_chars(job) else 0.0

    def affordable(self, jobs: Sequence) -> int:
        """How many of ``jobs`` (in order) can be sent now without any chance of passing ``max_cost``."""
        if self.max_cost is None or not self.prices.known:
            return len(jobs)
        left, n = self.max_cost - self.spent, 0
        for job in jobs:
            left -= self.worst_case(job)
            if left < 0:
                break
            n += 1
        return n

    def add(self, job, prompt_tokens: int | None, completion_tokens: int | None) -> float:
        """Count one answer; a server that reports no usage is charged its worst case."""
        chars = prompt_chars(job)
        if prompt_tokens is not None and chars:
            ratio = prompt_tokens / chars
            self.tokens_per_char = max(ratio, self.tokens_per_char) if self._seen_ratio else ratio
            self._seen_ratio = True
        if prompt_tokens is None and completion_tokens is None:
            cost = self.worst_case(job)
        else:
            cost = self.prices.cost(prompt_tokens, completion_tokens)
        self.spent += cost
        self.spent_now += cost
        self.answered_now += 1
        return cost

    def projected(self, remaining: int) -> float | None:
        """What is spent plus ``remaining`` requests at the average cost of the stored answers so far."""
        answers = self.answers_before + self.answered_now
        if not self.prices.known:
            return None
        return self.spent + (remaining * self.spent / answers if answers else 0.0)

    def postfix(self, remaining: int) -> str:
        if not self.prices.known:
            return ""
        text = money(self.spent)
        projected = self.projected(remaining)
        if projected is not None and self.answers_before + self.answered_now:
            text += f" (projected {money(projected)})"
        return text + (f" of max {self.max_cost:g}" if self.max_cost is not None else "")

    def summary(self, total_requests: int, stored: int) -> dict:
        projected = self.projected(total_requests - stored)
        return {
            "prices_per_million": {"input": self.prices.input, "output": self.prices.output},
            "spent": round(self.spent, 6),
            "spent_this_run": round(self.spent_now, 6),
            "projected_total": None if projected is None else round(projected, 6),
            "max_cost": self.max_cost,
            "stopped_by_budget": self.not_asked > 0,
            "not_asked_by_budget": self.not_asked,
        }


def stored_cost(prices: Prices, records) -> float:
    """Money spent on stored answers (from their token counts)."""
    return sum(prices.cost(r.prompt_tokens, r.completion_tokens) for r in records)
