"""Greedy decoding of many prompts at once in llama.cpp, through llama-cpp-python's bindings of the C API,
with continuous batching.

llama-cpp-python's ``Llama`` runs one sequence per context, so N requests cost N prompt passes and N decode
loops one after another. Here one scheduler thread owns a context with ``n_seq`` sequences in a unified KV
cache, as llama.cpp's own server runs its slots: each ``llama_decode`` call feeds the next token of every live
sequence together with the prompt tokens of newly admitted ones (the logits of each prompt's last token
kept), so a request that arrives while others are decoding joins them at the next step instead of waiting
for their batch to end. A sequence stops at an end-of-generation token, a stop token, or after
``max_new_tokens``, and frees its slot. ``greedy`` may be called from several threads at once.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from stepdistill.errors import StepdistillError

LLAMA_PIP = "pip install llama-cpp-python"


@dataclass(eq=False)
class _Seq:
    """One prompt being continued: its tokens so far, the next token to feed and where."""
    prompt: list[int]
    max_new_tokens: int
    stop: set[int]
    future: Future
    out: list[int] = field(default_factory=list)
    pos: int = 0
    next: int = -1

    def take(self, tok: int) -> bool:
        """Append ``tok`` (the next one to feed); True when the sequence has its ``max_new_tokens``."""
        self.out.append(tok)
        self.next = tok
        return len(self.out) >= self.max_new_tokens

    def feed(self, slot: int) -> tuple[int, int, int, bool]:
        """The batch item feeding the last token taken, at the next position."""
        self.pos += 1
        return slot, self.pos - 1, self.next, True


def quiet():
    """llama.cpp's load chatter off, as ``Llama(verbose=False)`` does (it writes to the C stderr)."""
    from llama_cpp._utils import suppress_stdout_stderr

    return suppress_stdout_stderr(disable=False)


class LlamaBatchDecoder:
    """One llama.cpp model and context for greedy continuations of token-id prompts, ``n_seq`` at a time."""

    def __init__(self, gguf: Path, threads: int | None = None, n_seq: int = 16, n_ctx_seq: int = 512,
                 n_batch: int = 512):
        try:
            import llama_cpp
        except ImportError:
            raise StepdistillError(f"the llamacpp engine needs llama-cpp-python: {LLAMA_PIP}") from None
        self.L = llama_cpp
        self.n_seq, self.n_ctx_seq, self.n_batch = n_seq, n_ctx_seq, n_batch
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        with quiet():
            self._load(gguf, threads)

    def _load(self, gguf: Path, threads: int | None) -> None:
        L, n_seq, n_ctx_seq = self.L, self.n_seq, self.n_ctx_seq
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(str(gguf).encode(), L.llama_model_default_params())
        if not self.model:
            raise StepdistillError(f"llama.cpp could not load {gguf}")
        params = L.llama_context_default_params()
        params.n_ctx, params.n_seq_max, params.kv_unified = n_seq * n_ctx_seq, n_seq, True
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_threads = params.n_threads_batch = threads or os.cpu_count() or 1
        params.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, params)
        if not self.ctx:
            L.llama_model_free(self.model)
            raise StepdistillError(f"llama.cpp could not make a context for {gguf} ({n_seq} x {n_ctx_seq} tokens)")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.memory = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(self.n_batch, 0, 1)

    def eos(self) -> int:
        return int(self.L.llama_vocab_eos(self.vocab))

    def greedy(self, prompts: list[list[int]], max_new_tokens: int, stop: set[int] = frozenset()) -> list[list[int]]:
        """The greedy continuation (token ids, without the stop token) of each prompt. Safe to call from several
        threads at once: every call's prompts join the sequences already decoding."""
        if max_new_tokens <= 0:
            return [[] for _ in prompts]
        for prompt in prompts:
            if len(prompt) + max_new_tokens > self.n_ctx_seq or len(prompt) > self.n_batch:
                raise StepdistillError(f"a prompt of {len(prompt)} tokens and {max_new_tokens} new ones do not fit "
                                       f"a llama.cpp sequence ({self.n_ctx_seq} tokens)")
        futures = [self._submit(prompt, max_new_tokens, stop) for prompt in prompts]
        return [f.result() for f in futures]

    def _submit(self, prompt: list[int], max_new_tokens: int, stop: set[int]) -> Future:
        future: Future = Future()
        if not prompt:  # nothing to continue
            future.set_result([])
            return future
        with self._lock:
            if self._closed:
                raise StepdistillError("the llama.cpp decoder is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="llamacpp-decoder", daemon=True)
                self._thread.start()
            self._queue.put(_Seq(prompt, max_new_tokens, stop, future))
        return future

    def _loop(self) -> None:
        """The scheduler: each step admits waiting prompts into free sequences (their prompt tokens in the same
        llama_decode call as the live sequences' next tokens) and settles the sequences that end."""
        live: dict[int, _Seq] = {}
        free = list(range(self.n_seq))
        while True:
            items: list[tuple[int, int, int, bool]] = [q.feed(slot) for slot, q in live.items()]
            while free and (not live or not self._queue.empty()):
                q = self._queue.get_nowait() if live else self._queue.get()  # idle: wait for work
                if q is None:  # close()
                    for waiting in live.values():
                        waiting.future.set_exception(StepdistillError("the llama.cpp decoder was closed"))
                    return
                if len(items) + len(q.prompt) > self.n_batch:
                    self._queue_front(q)
                    break
                slot = free.pop()
                self.L.llama_memory_seq_rm(self.memory, slot, -1, -1)
                items += [(slot, p, tok, p == len(q.prompt) - 1) for p, tok in enumerate(q.prompt)]
                q.pos = len(q.prompt)
                live[slot] = q
            try:
                picked = self._decode(items)
            except Exception as exc:  # noqa: BLE001 - every waiting caller hears of it
                for q in live.values():
                    q.future.set_exception(exc)
                free, live = list(range(self.n_seq)), {}
                continue
            for slot, tok in picked.items():
                q = live[slot]
                if tok in q.stop or self.L.llama_vocab_is_eog(self.vocab, tok) or q.take(tok):
                    q.future.set_result(q.out)
                    del live[slot]
                    free.append(slot)

    def _queue_front(self, q: "_Seq") -> None:
        """Put back a prompt that does not fit this step's batch, ahead of the others."""
        with self._queue.mutex:
            self._queue.queue.appendleft(q)
            self._queue.not_empty.notify()

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> dict[int, int]:
        """Decode (sequence, position, token, keep logits) items in one call; the argmax after each kept one."""
        import numpy as np

        b = self.batch
        for i, (seq, pos, tok, keep) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, keep
            b.seq_id[i][0] = seq
        b.n_tokens = len(items)
        code = self.L.llama_decode(self.ctx, b)
        if code != 0:
            raise StepdistillError(f"llama.cpp could not decode the batch (llama_decode returned {code})")
        picked = {}
        for i, (seq, _, _, keep) in enumerate(items):
            if keep:
                logits = np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
                picked[seq] = int(logits.argmax())
        return picked

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
        if getattr(self, "ctx", None):
            with quiet():
                self.L.llama_batch_free(self.batch)
                self.L.llama_free(self.ctx)
                self.L.llama_model_free(self.model)
            self.ctx = None
