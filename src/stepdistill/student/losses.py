"""Pure loss functions (tensor shapes in the docstrings), tested on their properties."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100
LABEL_TASK = 0
RATIONALE_TASK = 1


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy. ``logits``: [N, V] (any float dtype), ``targets``: [N] -> [N] float32."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def task_mean(token_losses: torch.Tensor, token_task: torch.Tensor, task: int,
              token_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Mean of ``token_losses`` [N] over tokens whose ``token_task`` [N] equals ``task``; (0, 0) if none.

    With ``token_weight`` [N] (> 0) it is the weighted mean ``sum(w * l) / sum(w)``; all-ones weights give the
    unweighted mean bit for bit."""
    mask = token_task == task
    count = int(mask.sum())
    if count == 0:
        return token_losses.new_zeros(()), 0
    if token_weight is None:
        return token_losses[mask].sum() / count, count
    w = token_weight[mask].to(token_losses.dtype)
    return (token_losses[mask] * w).sum() / w.sum(), count


def multitask_loss(token_losses: torch.Tensor, token_task: torch.Tensor, alpha: float,
                   token_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Distilling step-by-step loss: ``alpha * label_loss + (1 - alpha) * rationale_loss``.

    ``token_losses``: [N] per-target-token losses; ``token_task``: [N] with 0 (label) or 1 (rationale);
    ``token_weight``: [N] or None, the weight of each token's sequence (``rationale_weights``: with K rationales
    for one input, each of them weighs 1/K, so an input counts once in the rationale task whatever its K).
    Each task's loss is the (weighted) mean over its target tokens in the batch (as a per-task HF loss would be).
    The two tasks are averaged apart, so extra rationale sequences never dilute the label task.
    When a batch holds tokens of one task only, that task's loss is returned unweighted.
    Returns ``{"loss", "label_loss", "rationale_loss"}`` (scalars)."""
    label_loss, n_label = task_mean(token_losses, token_task, LABEL_TASK, token_weight)
    rationale_loss, n_rationale = task_mean(token_losses, token_task, RATIONALE_TASK, token_weight)
    if n_label and n_rationale:
        loss = alpha * label_loss + (1.0 - alpha) * rationale_loss
    elif n_label:
        loss = label_loss
    else:
        loss = rationale_loss
    return {"loss": loss, "label_loss": label_loss.detach(), "rationale_loss": rationale_loss.detach()}


def per_token(weight: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor | None:
    """Sequence weights ``weight`` [B] spread to the selected tokens ``mask`` [B, T] -> [N] (None stays None)."""
    return None if weight is None else weight[:, None].expand_as(mask)[mask]


WEIGHTINGS = ("per_input", "per_rationale")


def rationale_weights(counts: list[int], weighting: str = "per_input") -> list[float]:
    """Sequence weight of each of an input's rationales, given how many it has (``counts``, one per input,
    in order) -> a flat list, one weight per rationale. ``per_input``: 1/K each (every input weighs 1 in the
    rationale task, as its label weighs 1 in the label task); ``per_rationale``: 1 each (an input with K
    rationales weighs K). K=1 gives 1.0 either way."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"rationale weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    return [1.0 / k if weighting == "per_input" else 1.0 for k in counts for _ in range(k)]
