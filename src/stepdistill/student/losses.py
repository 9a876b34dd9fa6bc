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


def task_mean(token_losses: torch.Tensor, token_task: torch.Tensor, task: int) -> tuple[torch.Tensor, int]:
    """Mean of ``token_losses`` [N] over tokens whose ``token_task`` [N] equals ``task``; (0, 0) if none."""
    mask = token_task == task
    count = int(mask.sum())
    if count == 0:
        return token_losses.new_zeros(()), 0
    return token_losses[mask].sum() / count, count


def multitask_loss(token_losses: torch.Tensor, token_task: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """Distilling step-by-step loss: ``alpha * label_loss + (1 - alpha) * rationale_loss``.

    ``token_losses``: [N] per-target-token losses; ``token_task``: [N] with 0 (label) or 1 (rationale).
    Each task's loss is the mean over its target tokens in the batch (as a per-task HF loss would be).
    When a batch holds tokens of one task only, that task's loss is returned unweighted.
    Returns ``{"loss", "label_loss", "rationale_loss"}`` (scalars)."""
    label_loss, n_label = task_mean(token_losses, token_task, LABEL_TASK)
    rationale_loss, n_rationale = task_mean(token_losses, token_task, RATIONALE_TASK)
    if n_label and n_rationale:
        loss = alpha * label_loss + (1.0 - alpha) * rationale_loss
    elif n_label:
        loss = label_loss
    else:
        loss = rationale_loss
    return {"loss": loss, "label_loss": label_loss.detach(), "rationale_loss": rationale_loss.detach()}
