"""Greedy decoding of several prompts at once in llama.cpp, through llama-cpp-python's bindings of the C API.

llama-cpp-python's ``Llama`` runs one sequence per context, so a micro-batch of N requests costs N prompt
passes and N decode loops one after another. Here each prompt of a group is its own sequence in one context
with a unified KV cache: the prompts go through ``llama_decode`` together (in ``n_batch``-token chunks, the
logits of each prompt's last token kept), then every step decodes one token of each live sequence in a single
call, the way llama.cpp's own server batches its slots. A sequence stops at an end-of-generation token or after
``max_new_tokens``; a group is as many prompts as the context holds (``n_seq`` sequences of ``n_ctx_seq``
tokens each).
"""

from __future__ import annotations

import os
from pathlib import Path

from stepdistill.errors import StepdistillError

LLAMA_PIP = "pip install llama-cpp-python"


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
        self.L = L = llama_cpp
        self.n_seq, self.n_ctx_seq, self.n_batch = n_seq, n_ctx_seq, n_batch
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
        """The greedy continuation (token ids, without the stop token) of each prompt."""
        out: list[list[int]] = []
        for group in self._groups(prompts, max_new_tokens):
            out += self._greedy_group(group, max_new_tokens, stop)
        return out

    def _groups(self, prompts: list[list[int]], max_new_tokens: int):
        group: list[list[int]] = []
        used = 0
        for prompt in prompts:
            need = len(prompt) + max_new_tokens
            if need > self.n_seq * self.n_ctx_seq:
                raise StepdistillError(f"a prompt of {len(prompt)} tokens and {max_new_tokens} new ones do not fit "
                                       f"the llama.cpp context ({self.n_seq * self.n_ctx_seq} tokens)")
            if group and (len(group) == self.n_seq or used + need > self.n_seq * self.n_ctx_seq):
                yield group
                group, used = [], 0
            group.append(prompt)
            used += need
        if group:
            yield group

    def _greedy_group(self, prompts: list[list[int]], max_new_tokens: int, stop: set[int]) -> list[list[int]]:
        self.L.llama_memory_clear(self.memory, True)
        out: list[list[int]] = [[] for _ in prompts]
        if max_new_tokens <= 0:
            return out
        nxt: dict[int, int] = {}
        items = [(s, p, tok, p == len(prompt) - 1) for s, prompt in enumerate(prompts) for p, tok in enumerate(prompt)]
        for start in range(0, len(items), self.n_batch):
            nxt.update(self._decode(items[start:start + self.n_batch]))
        pos = [len(prompt) for prompt in prompts]
        live = [s for s in range(len(prompts)) if s in nxt]  # an empty prompt has nothing to continue
        while live:
            step = []
            for s in live:
                tok = nxt[s]
                if tok in stop or self.L.llama_vocab_is_eog(self.vocab, tok):
                    continue
                out[s].append(tok)
                if len(out[s]) < max_new_tokens:
                    step.append((s, pos[s], tok, True))
                    pos[s] += 1
            live = [s for s, *_ in step]
            if step:
                nxt.update(self._decode(step))
        return out

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
        if getattr(self, "ctx", None):
            with quiet():
                self.L.llama_batch_free(self.batch)
                self.L.llama_free(self.ctx)
                self.L.llama_model_free(self.model)
            self.ctx = None
