"""ONNX export of the label-only path of a causal student, and greedy decoding with onnxruntime.

    stepdistill export runs/tiny-causal-svamp-dsbs-s0 exported/tiny --onnx
    python -c "from stepdistill.serve.onnx import OnnxLabeler; print(OnnxLabeler('exported/tiny').predict(['...']))"

The graph maps (input_ids, attention_mask, position_ids) [B, T] to next-token logits [B, V]; there is
no KV cache, so each new token re-reads the prompt: fine for short labels, not for long rationales.
``OnnxLabeler`` builds the same prompts as the student (``stepdistill_prompt.json``), left-pads,
decodes greedily and cuts at eos and at the first newline; it needs numpy, onnxruntime and the
tokenizer, not torch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from stepdistill.errors import StepdistillError

ONNX_PIP = "pip install onnx onnxruntime"
ONNX_FILE = "model.onnx"


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise StepdistillError(f"ONNX export needs {', '.join(missing)}: {ONNX_PIP}")


def export_onnx(model, family: str, out_dir: Path, opset: int = 17) -> Path:
    """Write ``out_dir/model.onnx`` for a causal LM ``model``; returns its path."""
    if family != "causal":
        raise StepdistillError(f"ONNX export covers causal students only; this one is '{family}' "
                               "(export without --onnx, or use optimum for encoder-decoder models)")
    _require("onnx", "onnxruntime")
    import torch

    class NextTokenLogits(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, position_ids):
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False)
            return out.logits[:, -1, :]

    model = model.eval()
    previous = getattr(model.config, "_attn_implementation", None)
    model.config._attn_implementation = "eager"  # plain matmul attention: traces and exports reliably
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ONNX_FILE
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.long)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    dynamic = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
               "position_ids": {0: "batch", 1: "length"}, "logits": {0: "batch"}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about constants that are constant here
            torch.onnx.export(NextTokenLogits(model), (ids, mask, pos), str(path), dynamo=False, opset_version=opset,
                              input_names=["input_ids", "attention_mask", "position_ids"], output_names=["logits"],
                              dynamic_axes=dynamic)
        check_parity(NextTokenLogits(model), path, (ids, mask, pos))
    finally:
        if previous is not None:
            model.config._attn_implementation = previous
    return path


def check_parity(module, path: Path, inputs, atol: float = 1e-3) -> float:
    """Run the exported graph and ``module`` on the same (padded) inputs; raise if the logits differ."""
    import numpy as np
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        ref = module(*inputs).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], dict(zip(["input_ids", "attention_mask", "position_ids"],
                                           [x.numpy() for x in inputs])))[0]
    diff = float(np.abs(got - ref).max())
    if not diff <= atol:
        raise StepdistillError(f"the ONNX graph {path} disagrees with PyTorch (max |logit diff| {diff:.2e} > "
                               f"{atol}); export without --onnx")
    return diff


class OnnxLabeler:
    """Label-only greedy prediction with onnxruntime on an exported directory (see module docstring)."""

    def __init__(self, export_dir: str | Path, threads: int | None = None):
        _require("onnxruntime")
        import onnxruntime as ort
        from transformers import AutoTokenizer

        export_dir = Path(export_dir)
        path = export_dir / "onnx" / ONNX_FILE
        if not path.is_file():
            raise StepdistillError(f"{path} is missing; export with `stepdistill export RUN OUT --onnx`")
        self.spec = json.loads((export_dir / "stepdistill_prompt.json").read_text())
        if self.spec["method"] == "single_task":
            raise StepdistillError("a single_task student answers after its rationale; the ONNX label-only path "
                                   "does not cover it")
        if self.spec.get("label_scoring", "generate") != "generate":
            raise StepdistillError("this student picks labels by scoring candidates; the ONNX path generates them "
                                   "and would not match")
        self.tokenizer = AutoTokenizer.from_pretrained(str(export_dir))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def prompt(self, text: str) -> list[int]:
        s = self.spec
        return self._ids(s["label_prefix"]) + self._ids(text)[: s["max_input_tokens"]] + self._ids(s["answer_marker"])

    def logits(self, prompts: list[list[int]]):
        """Next-token logits [B, V] for left-padded ``prompts``."""
        import numpy as np

        width = max(len(p) for p in prompts)
        ids = np.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(prompts), width), dtype=np.int64)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = p
            mask[row, width - len(p):] = 1
        pos = np.clip(mask.cumsum(-1) - 1, 0, None)
        return self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask, "position_ids": pos})[0]

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
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
        budget = max_new_tokens or self.spec["max_new_tokens"]
        out = self.generate([self.prompt(t) for t in texts], budget)
        return [self.tokenizer.decode(t, skip_special_tokens=True).strip().split("\n")[0].strip() for t in out]
