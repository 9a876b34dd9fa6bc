"""Label-only (and optionally explained) prediction with a trained student.

    from stepdistill.student import Student
    student = Student.load("runs/svamp-dsbs-gold-s42")
    student.predict([{"body": "...", "question": "..."}], explain=True)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from stepdistill.errors import StepdistillError
from stepdistill.student.views import PROMPT_FORMAT, prompt_ids, split_single_task

META_FILE = "stepdistill.json"
_CHOICE_LINE = re.compile(r"^\(([a-z])\)\s*(.+)$", re.MULTILINE)


def find_model_dir(path: str | Path) -> Path:
    """A run directory (its ``model/``) or a model directory holding ``stepdistill.json``."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / META_FILE).is_file():
            return candidate
    raise StepdistillError(f"{path} is neither a run directory with model/ nor a stepdistill model directory "
                           f"(no {META_FILE}); train one with `stepdistill train CONFIG`")


def generate(model, tokenizer, family: str, prompts: list[list[int]], max_new_tokens: int,
             batch_size: int) -> list[str]:
    """Greedy generation for token-id prompts, batched by length; returns decoded continuations."""
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                p = prompts[i]
                if family == "causal":  # left padding so generation continues from the prompt
                    ids[row, width - len(p):] = torch.tensor(p)
                    mask[row, width - len(p):] = 1
                else:
                    ids[row, : len(p)] = torch.tensor(p)
                    mask[row, : len(p)] = 1
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=pad, eos_token_id=eos)
            new = gen[:, width:] if family == "causal" else gen
            for row, i in enumerate(idx):
                tokens = new[row].tolist()
                if eos in tokens:
                    tokens = tokens[: tokens.index(eos)]
                out[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    model.train(was_training)
    return out


class Student:
    """A trained student: ``Student.load(run_or_model_dir).predict(inputs, explain=False)``."""

    def __init__(self, model, tokenizer, meta: Mapping[str, Any], task=None):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = dict(meta)
        self.family = meta["family"]
        self.method = meta["method"]
        if task is None:
            from stepdistill.tasks import get_task

            task = get_task(meta.get("task_spec") or meta["task"])
        self.task = task

    @classmethod
    def load(cls, path: str | Path, dtype: str = "float32") -> "Student":
        from stepdistill.student.models import load_pretrained

        model_dir = find_model_dir(path)
        meta = json.loads((model_dir / META_FILE).read_text())
        if meta.get("prompt_format") != PROMPT_FORMAT:
            raise StepdistillError(f"{model_dir} uses prompt format {meta.get('prompt_format')}; this stepdistill "
                                   f"reads format {PROMPT_FORMAT}")
        model, tok = load_pretrained(meta["family"], str(model_dir), dtype)
        model.eval()
        return cls(model, tok, meta)

    @property
    def can_explain(self) -> bool:
        return self.method in ("dsbs", "single_task")

    def _text_and_row(self, item: str | Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        if isinstance(item, str):
            row: dict = {}
            if self.task.answer.kind == "multiple_choice":  # raw text: read the lettered choices back
                row[getattr(self.task.answer, "choices_field", "choices")] = [m.group(2).strip() for m in
                                                                              _CHOICE_LINE.finditer(item)]
            return item, row
        if isinstance(item, Mapping):
            try:
                return self.task.format_input(item), item
            except KeyError as exc:
                raise StepdistillError(f"input is missing field {exc.args[0]!r} for task '{self.task.name}'") from None
        raise StepdistillError(f"an input must be a string or an object of task fields, got {type(item).__name__}")

    def predict(self, inputs: Sequence[str | Mapping[str, Any]], explain: bool = False, batch_size: int = 16,
                max_new_tokens: int | None = None) -> list[dict]:
        """One dict per input: ``label`` (canonical, or None when the output is not a valid answer),
        ``raw`` (the generated answer text) and, with ``explain``, ``rationale``."""
        if explain and not self.can_explain:
            raise StepdistillError(f"this student was trained with method '{self.method}', without rationales; "
                                   "explanations need a dsbs or single_task student")
        pairs = [self._text_and_row(x) for x in inputs]
        max_in = int(self.meta.get("max_input_tokens", 256))
        label_budget = max_new_tokens or int(self.meta.get("max_new_tokens") or self.task.max_new_tokens())
        rationale_budget = int(self.meta.get("max_rationale_tokens", 128))
        results = [{} for _ in pairs]
        if self.method == "single_task":
            prompts = [prompt_ids(self.tokenizer, self.family, "rationale", t, max_in) for t, _ in pairs]
            texts = generate(self.model, self.tokenizer, self.family, prompts, rationale_budget + label_budget,
                             batch_size)
            for res, text in zip(results, texts):
                rationale, answer = split_single_task(text)
                res.update(raw=answer if answer is not None else text, rationale=rationale, _answer=answer)
        else:
            prompts = [prompt_ids(self.tokenizer, self.family, "label", t, max_in) for t, _ in pairs]
            texts = generate(self.model, self.tokenizer, self.family, prompts, label_budget, batch_size)
            for res, text in zip(results, texts):
                res.update(raw=text.split("\n")[0].strip(), _answer=text.split("\n")[0].strip())
            if explain:
                prompts = [prompt_ids(self.tokenizer, self.family, "rationale", t, max_in) for t, _ in pairs]
                for res, text in zip(results, generate(self.model, self.tokenizer, self.family, prompts,
                                                       rationale_budget, batch_size)):
                    res["rationale"] = text
        for res, (_, row) in zip(results, pairs):
            answer = res.pop("_answer")
            res["label"] = None if answer is None else self.task.answer.normalize(answer, row)
            if not explain:
                res.pop("rationale", None)
        return results
