"""Shared-input single pass for dsbs with a causal student (``student.prompt_layout=suffix``).

The prefix layout puts the task marker in front of the input (``[label] <input>\nAnswer:``), so the label
and rationale views share no prefix and the input is encoded twice. With the task marker *after* the input
(the suffix layout: ``<input>\n[label] Answer: <label>`` and ``<input>\n[rationale] Rationale: <rationale>``)
both views start with the same tokens, and one row can hold ``input | label segment | rationale segment``:

* a block attention mask lets the rationale segment see the input and itself, never the label segment;
* position ids restart at ``len(input)`` for the rationale segment.

With several rationales per input (``data.max_rationales_per_input``), each gets its own segment after the label
(the same mask rule keeps them apart) and its tokens weigh 1/K (``data.rationale_weighting=per_input``).

The logits at every target position then equal those of the two separate suffix-layout views
(``views.make_feature(..., layout="suffix")``; up to float
rounding), so the loss is the same ``alpha * label_loss + (1 - alpha) * rationale_loss`` while the input is
encoded once. ``stepdistill train`` uses it for dsbs whenever the layout is ``suffix``; the saved model has
prompt format 2 and ``Student.predict`` prompts it that way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stepdistill.student.losses import (
    IGNORE, LABEL_TASK, RATIONALE_TASK, multitask_loss, rationale_weights, token_cross_entropy,
)
from stepdistill.student.views import LAYOUTS, _ids, target_ids

SUFFIX_LABEL_MARKER = LAYOUTS["suffix"]["label"][1]
SUFFIX_RATIONALE_MARKER = LAYOUTS["suffix"]["rationale"][1]

INPUT_SEGMENT, LABEL_SEGMENT, RATIONALE_SEGMENT = 0, 1, 2


@dataclass(frozen=True)
class SharedFeature:
    input_ids: list[int]  # input, then the label segment, then the rationale segment (may be empty)
    labels: list[int]  # IGNORE except at target tokens
    segment: list[int]  # INPUT_SEGMENT / LABEL_SEGMENT / RATIONALE_SEGMENT per token
    position_ids: list[int]  # each segment after the input restarts at len(input)
    example: int
    weight: list[float] | None = None  # per-token loss weight; None = all 1 (one rationale)


def shared_feature(tokenizer, text: str, label: str, rationale: str | list[str] | None, max_input: int,
                   max_label: int, max_rationale: int, example: int, weighting: str = "per_input") -> SharedFeature:
    """``input | marker + label | marker + rationale 1 | ... | marker + rationale K`` in one row (no rationale
    segment when ``rationale`` is None or empty). Rationale k has segment ``RATIONALE_SEGMENT + k``, so it sees
    the input and itself only; with K > 1 its tokens weigh ``rationale_weights`` (1/K each for per_input)."""
    rationales = [rationale] if isinstance(rationale, str) else list(rationale or [])
    body = _ids(tokenizer, text)[:max_input]
    p = len(body)
    ids, labels, seg, pos = list(body), [IGNORE] * p, [INPUT_SEGMENT] * p, list(range(p))
    segments = [(SUFFIX_LABEL_MARKER, label, max_label, LABEL_SEGMENT, 1.0)]
    weights = rationale_weights([len(rationales)], weighting)
    segments += [(SUFFIX_RATIONALE_MARKER, r, max_rationale, RATIONALE_SEGMENT + k, w)
                 for k, (r, w) in enumerate(zip(rationales, weights))]
    token_weight = [1.0] * p
    for marker, target, budget, kind, w in segments:
        m = _ids(tokenizer, marker)
        t = target_ids(tokenizer, "causal", target, budget)
        ids += m + t
        labels += [IGNORE] * len(m) + t
        seg += [kind] * (len(m) + len(t))
        pos += list(range(p, p + len(m) + len(t)))
        token_weight += [w] * (len(m) + len(t))
    return SharedFeature(ids, labels, seg, pos, example, None if all(w == 1.0 for w in weights) else token_weight)


def block_mask(segment: torch.Tensor, valid: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Additive attention mask [B, 1, T, T] from ``segment`` [B, T] and ``valid`` [B, T] (1 = real token).

    Causal, and a query may see a key only when the key is input, or in the query's own segment. Padding
    keys are hidden; every query sees itself, so no row is empty."""
    t = segment.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment.device).tril()
    q, k = segment[:, :, None], segment[:, None, :]
    allowed = causal[None] & ((k == INPUT_SEGMENT) | (k == q)) & valid[:, None, :].bool()
    allowed |= torch.eye(t, dtype=torch.bool, device=segment.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def collate_shared(features: list[SharedFeature], pad_id: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Right-pad shared rows: input_ids, position_ids, labels, segment [B, T]; attention_mask [B, 1, T, T]."""
    width = max(len(f.input_ids) for f in features)
    b = len(features)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    labels = torch.full((b, width), IGNORE, dtype=torch.long)
    seg = torch.full((b, width), INPUT_SEGMENT, dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    valid = torch.zeros((b, width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f.input_ids)
        ids[i, :n] = torch.tensor(f.input_ids)
        labels[i, :n] = torch.tensor(f.labels)
        seg[i, :n] = torch.tensor(f.segment)
        pos[i, :n] = torch.tensor(f.position_ids)
        valid[i, :n] = 1
    batch = {"input_ids": ids, "position_ids": pos, "labels": labels, "segment": seg,
             "attention_mask": block_mask(seg, valid, dtype)}
    if any(f.weight is not None for f in features):  # weight [B, T]: several rationales for one input
        weight = torch.ones((b, width), dtype=torch.float32)
        for i, f in enumerate(features):
            if f.weight is not None:
                weight[i, : len(f.weight)] = torch.tensor(f.weight)
        batch["weight"] = weight
    return batch


class SharedInputLoss(nn.Module):
    """``forward(**collate_shared(...))`` -> the dsbs loss dict, logits only at target positions.

    Shapes: input_ids/position_ids/labels/segment [B, T], attention_mask [B, 1, T, T], weight [B, T] or None."""

    def __init__(self, model, alpha: float):
        super().__init__()
        self.model = model
        self.alpha = alpha

    def forward(self, input_ids, position_ids, labels, segment, attention_mask, weight=None):
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        backbone = getattr(inner, inner.base_model_prefix)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids).last_hidden_state
        shift = labels[:, 1:]
        mask = shift != IGNORE
        logits = inner.get_output_embeddings()(hidden[:, :-1][mask])
        token_losses = token_cross_entropy(logits, shift[mask])
        seg = segment[:, 1:][mask]
        token_task = torch.where(seg >= RATIONALE_SEGMENT, RATIONALE_TASK, LABEL_TASK)
        token_weight = None if weight is None else weight[:, 1:][mask]
        return multitask_loss(token_losses, token_task, self.alpha, token_weight)
