"""Greedy decoding of one prompt with drafted tokens checked in one forward: the fast path of the served torch and
ONNX students at concurrency 1, with the same tokens as one-token-at-a-time greedy decoding.

A student's answers are formulaic: ``( 45.0 * 10.0 )`` on SVAMP, a label name on a classification task. So a
table of which token followed which two tokens in the answers the engine has given guesses the next few tokens
well; where it is unsure (no follower with half the counts), the prompt is looked up instead: what followed the
last tokens where they occur in the input (numbers and phrases an answer or a rationale copies). Replaying the
SVAMP student's 200 test answers (14 tokens each) took 6.3 forwards an answer this way (6.9 with the table
alone), PaLM's rationales (47 tokens) 25 (36 with the table alone).

Each step feeds the last token and up to ``k`` drafted ones; the model's own greedy choice at every position
decides: drafts are kept while they agree with it, the first disagreement is replaced by the model's token, and
the key/value cache forgets what it held for the rejected drafts. A wrong guess costs only the extra rows of
that forward, which cost little where a decode step is bound by reading the weights (bfloat16 or float32 on a
CPU: five rows cost about what one does), but not with float16 weights on a CPU without 16-bit units.

    table = DraftTable()
    tokens = greedy_with_drafts(model, prompt_ids, max_new_tokens=32, eos=tokenizer.eos_token_id, table=table)
    table.learn(tokens)

``decode_with_drafts`` is the loop itself, for any engine that can read tokens into a KV cache, give the greedy
token after each, and forget the last positions (``greedy_with_drafts``: transformers; ``serve/onnx.py``).
"""

from __future__ import annotations

import threading
from collections import Counter

N = 2  # tokens of context a draft is looked up by
K = 4  # drafted tokens per forward: five rows, still a matrix-vector product's cost on a CPU
LOOKUP = 3  # the longest run of last tokens looked up in the prompt


class DraftTable:
    """Counts of the token that followed each ``N`` tokens in the answers given so far (the start of an answer
    is padded with -1), learnt as the engine answers; at most ``max_contexts`` contexts, then it stops growing."""

    def __init__(self, max_contexts: int = 200_000):
        self.next: dict[tuple, Counter] = {}
        self.max_contexts = max_contexts
        self.lock = threading.Lock()
        self.answers = self.tokens = self.forwards = 0  # decoded with drafts: what they saved (GET /health)

    def stats(self) -> dict:
        with self.lock:
            return {"answers": self.answers, "tokens": self.tokens, "forwards": self.forwards,
                    "tokens_per_forward": round(self.tokens / self.forwards, 2) if self.forwards else None,
                    "contexts": len(self.next)}

    def count(self, tokens: int, forwards: int) -> None:
        with self.lock:
            self.answers, self.tokens, self.forwards = self.answers + 1, self.tokens + tokens, self.forwards + forwards

    def learn(self, tokens: list[int]) -> None:
        seq = [-1] * N + list(tokens)
        with self.lock:
            for i in range(N, len(seq)):
                ctx = tuple(seq[i - N:i])
                counts = self.next.get(ctx)
                if counts is None:
                    if len(self.next) >= self.max_contexts:
                        continue
                    counts = self.next[ctx] = Counter()
                counts[seq[i]] += 1

    def draft(self, tokens: list[int], k: int = K, prompt: dict | None = None) -> list[int]:
        """Up to ``k`` likely next tokens after ``tokens`` (the answer so far): each the most frequent follower of
        the two before it where one holds half the counts, else what followed the last tokens in the prompt
        (``prompt_index``), else the most frequent follower; fewer where neither knows the context."""
        seq, out = [-1] * N + list(tokens), []
        with self.lock:
            for _ in range(k):
                counts = self.next.get(tuple(seq[-N:]))
                top = counts.most_common(1)[0] if counts else None
                if top and 2 * top[1] >= sum(counts.values()):
                    nxt = top[0]
                else:
                    nxt = looked_up(prompt, seq) if prompt else None
                    nxt = top[0] if nxt is None and top else nxt
                if nxt is None:
                    break
                seq.append(nxt)
                out.append(nxt)
        return out


def prompt_index(prompt: list[int]) -> dict:
    """For each run of 1 to ``LOOKUP`` tokens of the prompt, the token that followed its last occurrence."""
    index = {}
    for n in range(1, LOOKUP + 1):
        for i in range(len(prompt) - n):
            index[tuple(prompt[i:i + n])] = prompt[i + n]
    return index


def looked_up(index: dict, seq: list[int]) -> int | None:
    """The token that followed the longest run of ``seq``'s last tokens in the prompt, if any."""
    for n in range(LOOKUP, 0, -1):
        if len(seq) >= n and -1 not in seq[-n:]:
            hit = index.get(tuple(seq[-n:]))
            if hit is not None:
                return hit
    return None


def decode_with_drafts(forward, forget, prompt: list[int], max_new_tokens: int, eos: int, table: DraftTable,
                       k: int = K) -> list[int]:
    """The greedy continuation of one prompt (up to and including eos, at most ``max_new_tokens`` tokens), each
    forward checking up to ``k`` drafted tokens from ``table``; the first forward reads the prompt and checks the
    drafts of an answer's start at once. The engine's side: ``forward(fed, drafts, start)`` reads the tokens fed
    and the drafts from position ``start`` into its cache and returns the model's greedy token after the last fed
    token and after each draft; ``forget(n)`` drops the last ``n`` positions from its cache."""
    index = prompt_index(prompt)
    out, fed, forwards = [], list(prompt), 0  # fed: tokens not yet in the cache
    while len(out) < max_new_tokens and (not out or out[-1] != eos):
        drafts = table.draft(out, min(k, max_new_tokens - len(out) - 1), index)
        chosen = forward(fed, drafts, len(prompt) + len(out) - len(fed))
        forwards += 1
        kept = 0
        while kept < len(drafts) and drafts[kept] == chosen[kept] and drafts[kept] != eos:
            kept += 1
        out += drafts[:kept] + [chosen[kept]]
        if kept < len(drafts):  # the cache holds the rejected drafts: forget them
            forget(len(drafts) - kept)
        fed = [out[-1]]
    table.count(len(out), forwards)
    return out


def greedy_with_drafts(model, prompt: list[int], max_new_tokens: int, eos: int, table: DraftTable,
                       k: int = K) -> list[int]:
    """``decode_with_drafts`` with a transformers causal LM and its DynamicCache."""
    import torch
    from transformers import DynamicCache

    from stepdistill.student.models import cache_kwargs

    device = next(model.parameters()).device
    cache = DynamicCache()
    arg = cache_kwargs(model, cache)

    def forward(fed: list[int], drafts: list[int], start: int) -> list[int]:
        ids = torch.tensor([fed + drafts], device=device)
        pos = torch.arange(start, start + ids.shape[1], device=device)[None]
        logits = model(input_ids=ids, position_ids=pos, **arg, use_cache=True, logits_to_keep=len(drafts) + 1).logits
        return logits[0].argmax(-1).tolist()

    with torch.inference_mode():
        return decode_with_drafts(forward, lambda n: cache.crop(-n), prompt, max_new_tokens, eos, table, k)
