"""ONNX export of a causal student's greedy decoding (labels; rationales on request), and decoding with onnxruntime.

    stepdistill export runs/tiny-causal-svamp-dsbs-s0 exported/tiny --onnx
    python -c "from stepdistill.serve.onnx import OnnxLabeler; print(OnnxLabeler('exported/tiny').predict(['...']))"

The graph maps (input_ids [B, T], attention_mask [B, P+T], position_ids [B, T], past.<i>.key/value [B, H, P, D]
for every layer) to the next-token logits [B, V] and present.<i>.key/value [B, H, P+T, D]: one graph reads a
prompt with an empty past (P = 0) and then each new token against the KV cache it returned, so a token costs one
position, not the whole prompt again. The export checks that a prompt read in two parts through the cache gives
PyTorch's logits for the whole. Graphs exported before the cache (inputs without ``past.*``) still decode, re-
reading the prompt for each token. ``OnnxLabeler`` builds the same prompts as the student
(``stepdistill_prompt.json``), left-pads, decodes greedily and cuts at eos and at the first newline; it needs
numpy, onnxruntime and the tokenizer, not torch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from stepdistill.errors import StepdistillError
from stepdistill.serve.drafts import K, DraftTable, decode_with_drafts

ONNX_PIP = "pip install onnx onnxruntime"
ONNX_FILE = "model.onnx"
INPUTS = ["input_ids", "attention_mask", "position_ids"]
CHECKED = K + 1  # positions of `next_tokens`: the last fed token's and up to K drafts' greedy next tokens


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise StepdistillError(f"ONNX export needs {', '.join(missing)}: {ONNX_PIP}")


def _with_past(model, layers: int):
    """``model`` as a module of flat tensors: (ids, mask, positions, past k/v per layer) -> (logits, presents)."""
    import torch
    from transformers import DynamicCache

    from stepdistill.student.models import cache_kwargs, cache_tensors

    class WithPast(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          **cache_kwargs(self.lm, cache), use_cache=True, logits_to_keep=CHECKED)
            return (out.logits[:, -1, :], out.logits.argmax(-1), *cache_tensors(out))

    return WithPast(model)


def export_onnx(model, family: str, out_dir: Path, opset: int = 17) -> Path:
    """Write ``out_dir/model.onnx`` for a causal LM ``model`` (in float32 whatever its dtype); returns its path."""
    if family != "causal":
        raise StepdistillError(f"ONNX export covers causal students only; this one is '{family}' "
                               "(export without --onnx, or use optimum for encoder-decoder models)")
    _require("onnx", "onnxruntime")
    import torch

    from stepdistill.student.models import cache_tensors

    if model.dtype != torch.float32:  # a student saved in bf16/fp16: onnxruntime's CPU kernels want float32
        import copy

        model = copy.deepcopy(model).float()
    model = model.eval()
    previous = getattr(model.config, "_attn_implementation", None)
    model.config._attn_implementation = "eager"  # plain matmul attention: traces and exports reliably
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ONNX_FILE
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.long)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    try:
        with torch.no_grad():
            probe = model(input_ids=ids[:, :2], attention_mask=mask[:, :2], position_ids=pos[:, :2], use_cache=True)
        past = cache_tensors(probe)
        layers = len(past) // 2
        past_names = [f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
        out_names = ["logits", "next_tokens"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
        dynamic = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "past+length"},
                   "position_ids": {0: "batch", 1: "length"}, "logits": {0: "batch"},
                   "next_tokens": {0: "batch", 1: "checked"}, **{n: {0: "batch", 2: "past"} for n in past_names},
                   **{n: {0: "batch", 2: "past+length"} for n in out_names[2:]}}
        module = _with_past(model, layers)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about constants that are constant here
            try:
                torch.onnx.export(module, (ids[:, 2:], mask, pos[:, 2:], *past), str(path), dynamo=False,
                                  opset_version=opset, input_names=INPUTS + past_names, output_names=out_names,
                                  dynamic_axes=dynamic)
            except Exception as exc:  # noqa: BLE001 - the tracer's errors name none of this
                import transformers

                raise StepdistillError(
                    f"the ONNX export of this {type(model).__name__} failed ({type(exc).__name__}: {exc}) with "
                    f"torch {torch.__version__} and transformers {transformers.__version__} (tested with "
                    "transformers 5.24-5.25); export without --onnx, or upgrade transformers") from exc
        check_parity(model, path, (ids, mask, pos))
    finally:
        if previous is not None:
            model.config._attn_implementation = previous
    return path


def check_parity(model, path: Path, inputs, atol: float = 1e-3) -> float:
    """Read the (left-padded) ``inputs`` through the exported graph in two parts, the second against the first's
    KV cache, and raise unless the last logits match ``model`` reading them whole, without a cache."""
    import numpy as np
    import onnxruntime as ort
    import torch

    ids, mask, pos = inputs
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1].numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cut = ids.shape[1] // 2
    first = session.run(None, {**dict(zip(INPUTS, [ids[:, :cut].numpy(), mask[:, :cut].numpy(),
                                                   pos[:, :cut].numpy()])), **empty_past(session, len(ids))})
    names = [i.name for i in session.get_inputs()][3:]
    got = session.run(["logits"], {**dict(zip(INPUTS, [ids[:, cut:].numpy(), mask.numpy(), pos[:, cut:].numpy()])),
                                   **dict(zip(names, first[2:]))})[0]
    diff = float(np.abs(got - ref).max())
    if not diff <= atol:
        raise StepdistillError(f"the ONNX graph {path} disagrees with PyTorch (max |logit diff| {diff:.2e} > "
                               f"{atol}); export without --onnx")
    return diff


def empty_past(session, batch: int) -> dict:
    """Zero-length past keys and values for every ``past.*`` input of ``session`` (none for an old graph)."""
    import numpy as np

    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
    return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype=types[i.type])
            for i in session.get_inputs() if i.name.startswith("past.")}


class OnnxLabeler:
    """Greedy decoding with onnxruntime on an exported directory (see module docstring): ``generate`` for any
    prompts (the engine's labels and rationales), ``predict`` for the label path."""

    def __init__(self, export_dir: str | Path, threads: int | None = None, drafts: bool = True):
        _require("onnxruntime")
        import onnxruntime as ort
        from transformers import AutoTokenizer

        export_dir = Path(export_dir)
        path = export_dir / "onnx" / ONNX_FILE
        if not path.is_file():
            raise StepdistillError(f"{path} is missing; export with `stepdistill export RUN OUT --onnx`")
        self.spec = json.loads((export_dir / "stepdistill_prompt.json").read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(str(export_dir))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.past_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past.")]
        self.outputs = [o.name for o in self.session.get_outputs()]
        # a lone prompt checks drafted tokens a forward (serve/drafts.py), where the graph gives their greedy tokens
        self.drafts = DraftTable() if drafts and self.past_names and "next_tokens" in self.outputs else None

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def prompt(self, text: str) -> list[int]:
        s = self.spec
        return self._ids(s["label_prefix"]) + self._ids(text)[: s["max_input_tokens"]] + self._ids(s["answer_marker"])

    def _padded(self, prompts: list[list[int]]):
        """Left-padded ids, attention mask and positions [B, T] of ``prompts``."""
        import numpy as np

        width = max(len(p) for p in prompts)
        ids = np.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(prompts), width), dtype=np.int64)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = p
            mask[row, width - len(p):] = 1
        return ids, mask, np.clip(mask.cumsum(-1) - 1, 0, None)

    def logits(self, prompts: list[list[int]]):
        """Next-token logits [B, V] for left-padded ``prompts``, each read whole."""
        feed = dict(zip(INPUTS, self._padded(prompts)))
        return self.session.run(["logits"], {**feed, **empty_past(self.session, len(prompts))})[0]

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy new tokens per prompt (up to eos or ``max_new_tokens``): the prompts once, then one position a
        token against the KV cache; rows that reached eos leave the batch."""
        import numpy as np

        if not self.past_names:
            return self._generate_rereading(prompts, max_new_tokens)
        if self.drafts is not None and len(prompts) == 1:
            return [self._drafted(prompts[0], max_new_tokens)]
        eos = self.tokenizer.eos_token_id
        ids, mask, pos = self._padded(prompts)
        feed = {**dict(zip(INPUTS, (ids, mask, pos))), **empty_past(self.session, len(prompts))}
        new: list[list[int]] = [[] for _ in prompts]
        live = np.arange(len(prompts))
        for step in range(max_new_tokens):
            outs = dict(zip(self.outputs, self.session.run(None, feed)))
            nxt = outs["logits"].argmax(-1)
            keep = nxt != eos
            if self.drafts is not None:  # the draft table learns every answer, its eos included
                for i in live[~keep].tolist():
                    self.drafts.learn(new[i] + [eos])
            live, nxt = live[keep], nxt[keep]
            for i, tok in zip(live.tolist(), nxt.tolist()):
                new[i].append(tok)
            if not len(live) or step == max_new_tokens - 1:
                break
            mask = np.concatenate([mask[keep], np.ones((len(live), 1), dtype=np.int64)], axis=1)
            pos = pos[keep][:, -1:] + 1
            feed = {"input_ids": nxt[:, None].astype(np.int64), "attention_mask": mask, "position_ids": pos,
                    **{name: outs["present" + name[4:]][keep] for name in self.past_names}}
        if self.drafts is not None:
            for i in live.tolist():  # stopped by max_new_tokens
                self.drafts.learn(new[i])
        return new

    def _drafted(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """One prompt's greedy tokens, up to ``K`` drafted ones checked a forward (``decode_with_drafts``)."""
        import numpy as np

        past = empty_past(self.session, 1)

        def forward(fed: list[int], drafts: list[int], start: int) -> list[int]:
            nonlocal past
            end = start + len(fed) + len(drafts)
            feed = {"input_ids": np.array([fed + drafts], dtype=np.int64),
                    "attention_mask": np.ones((1, end), dtype=np.int64),
                    "position_ids": np.arange(start, end, dtype=np.int64)[None], **past}
            outs = dict(zip(self.outputs, self.session.run(None, feed)))
            past = {name: outs["present" + name[4:]] for name in self.past_names}
            return outs["next_tokens"][0, -(len(drafts) + 1):].tolist()

        def forget(n: int) -> None:
            nonlocal past
            past = {name: t[:, :, :-n] for name, t in past.items()}

        eos = self.tokenizer.eos_token_id
        tokens = decode_with_drafts(forward, forget, prompt, max_new_tokens, eos, self.drafts)
        self.drafts.learn(tokens)
        return tokens[:-1] if tokens and tokens[-1] == eos else tokens

    def _generate_rereading(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """``generate`` for a graph exported before the KV cache: each token re-reads its whole sequence."""
        eos = self.tokenizer.eos_token_id
        seqs = [list(p) for p in prompts]
        new: list[list[int]] = [[] for _ in prompts]
        live = list(range(len(prompts)))
        for _ in range(max_new_tokens):
            if not live:
                break
            nxt = self.logits([seqs[i] for i in live]).argmax(-1)
            still = []
            for i, tok in zip(live, nxt.tolist()):
                if tok == eos:
                    continue
                seqs[i].append(tok)
                new[i].append(tok)
                still.append(i)
            live = still
        return new

    def predict(self, texts: list[str], max_new_tokens: int | None = None) -> list[str]:
        """The raw label text (first line of the greedy answer) per formatted input."""
        if self.spec["method"] == "single_task":
            raise StepdistillError("a single_task student answers after its rationale: serve it with `--engine "
                                   "onnx`, which reads the answer after the rationale, rather than this label path")
        if self.spec.get("label_scoring", "generate") != "generate":
            raise StepdistillError("this student picks labels by scoring candidates; the ONNX path generates them "
                                   "and would not match")
        budget = max_new_tokens or self.spec["max_new_tokens"]
        out = self.generate([self.prompt(t) for t in texts], budget)
        return [self.tokenizer.decode(t, skip_special_tokens=True).strip().split("\n")[0].strip() for t in out]
