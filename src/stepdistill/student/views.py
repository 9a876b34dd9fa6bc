"""Training views: each example becomes one or two (prompt, target) token sequences, built once.

Views are picked by a task marker, as in the paper: ``[label]`` -> label, ``[rationale]`` -> rationale.
``single_task`` trains one view: rationale, then "So the answer is <label>". The collator only pads.

Two prompt layouts (``student.prompt_layout``), saved with every model as its prompt format:

* ``prefix`` (format 1, the paper's): ``[label] <input>\nAnswer:`` / ``[rationale] <input>\nRationale:``;
* ``suffix`` (format 2, causal students): ``<input>\n[label] Answer:`` / ``<input>\n[rationale] Rationale:``.
  Both views then start with the same tokens, so a dsbs step encodes the input once for both
  (``student/shared.py``).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import torch

from stepdistill.student.losses import IGNORE

LABEL_PREFIX = "[label] "
RATIONALE_PREFIX = "[rationale] "
ANSWER_MARKER = "\nAnswer:"
RATIONALE_MARKER = "\nRationale:"
SINGLE_TASK_JOIN = " So the answer is "
# layout -> view -> (text before the input, text after it); the format number is saved with every model
LAYOUTS = {
    "prefix": {"label": (LABEL_PREFIX, ANSWER_MARKER), "rationale": (RATIONALE_PREFIX, RATIONALE_MARKER)},
    "suffix": {"label": ("", "\n[label] Answer:"), "rationale": ("", "\n[rationale] Rationale:")},
}
PROMPT_FORMATS = {1: "prefix", 2: "suffix"}
FORMAT_OF_LAYOUT = {layout: number for number, layout in PROMPT_FORMATS.items()}


def layout_of_format(number) -> str:
    """The layout a saved model's ``prompt_format`` stands for; ValueError for a format this version lacks."""
    if number not in PROMPT_FORMATS:
        raise ValueError(f"prompt format {number!r} is unknown to this stepdistill (known: "
                         f"{', '.join(str(n) for n in PROMPT_FORMATS)}); upgrade stepdistill")
    return PROMPT_FORMATS[number]


@dataclass(frozen=True)
class Feature:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss
    task: int  # LABEL_TASK or RATIONALE_TASK
    example: int  # index of the example it came from
    weight: float = 1.0  # loss weight of its tokens (1/K for one of an input's K rationales; losses.rationale_weights)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def prompt_ids(tokenizer, family: str, view: str, text: str, max_input_tokens: int,
               layout: str = "prefix") -> list[int]:
    """Token ids of a prompt. ``view``: "label" or "rationale". Shared by training and inference: each piece
    (before, input, after) is tokenized on its own, so the input's tokens are the same in both views."""
    before, after = LAYOUTS[layout][view]
    body = _ids(tokenizer, text)[:max_input_tokens]
    if family == "causal":
        return _ids(tokenizer, before) + body + _ids(tokenizer, after)
    return _ids(tokenizer, before) + body + [tokenizer.eos_token_id]


def target_ids(tokenizer, family: str, text: str, max_tokens: int) -> list[int]:
    lead = " " if family == "causal" else ""
    return _ids(tokenizer, lead + text)[:max_tokens] + [tokenizer.eos_token_id]


def target_overflows(tokenizer, family: str, text: str, max_tokens: int) -> bool:
    """Whether ``target_ids`` cuts ``text`` at ``max_tokens`` (its end, often the answer, is then not trained)."""
    lead = " " if family == "causal" else ""
    return len(_ids(tokenizer, lead + text)) > max_tokens


def make_feature(tokenizer, family: str, view: str, text: str, target: str, max_input: int, max_target: int,
                 task: int, example: int, layout: str = "prefix", weight: float = 1.0) -> Feature:
    prompt = prompt_ids(tokenizer, family, view, text, max_input, layout)
    tgt = target_ids(tokenizer, family, target, max_target)
    if family == "causal":
        return Feature(prompt + tgt, [IGNORE] * len(prompt) + tgt, task, example, weight)
    return Feature(prompt, tgt, task, example, weight)


def split_single_task(text: str) -> tuple[str, str | None]:
    """Split a single-task generation into (rationale, answer text or None)."""
    parts = re.split(r"so the answer is", text, flags=re.IGNORECASE)
    if len(parts) < 2:
        return text.strip(), None
    return parts[0].strip(), parts[-1].strip()


def collate(features: list[Feature], pad_id: int, family: str) -> dict[str, torch.Tensor]:
    """Right-pad a list of features into tensors: input_ids/attention_mask [B, T], labels [B, T or L], task [B],
    and weight [B] (float32) when a feature weighs other than 1 (several rationales for one input)."""
    width = max(len(f.input_ids) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        ids[i, : len(f.input_ids)] = torch.tensor(f.input_ids)
        mask[i, : len(f.input_ids)] = 1
    lwidth = width if family == "causal" else max(len(f.labels) for f in features)
    labels = torch.full((len(features), lwidth), IGNORE, dtype=torch.long)
    for i, f in enumerate(features):
        labels[i, : len(f.labels)] = torch.tensor(f.labels)
    task = torch.tensor([f.task for f in features], dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "task": task}
    if any(f.weight != 1.0 for f in features):
        batch["weight"] = torch.tensor([f.weight for f in features], dtype=torch.float32)
    return batch


def epoch_batches(n_examples: int, lengths: list[int], batch_size: int, seed: int, epoch: int,
                  group_by_length: bool) -> list[list[int]]:
    """Example indices per batch for one epoch, deterministic in (seed, epoch). With ``group_by_length``,
    examples are shuffled, sorted by length within chunks of 16 batches, and the batch order is shuffled."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(n_examples))
    rng.shuffle(order)
    if group_by_length:
        chunk = batch_size * 16
        order = [i for c in range(0, len(order), chunk)
                 for i in sorted(order[c:c + chunk], key=lambda j: -lengths[j])]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_examples / batch_size))
