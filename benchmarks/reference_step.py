"""The official implementation's training step, ported for a causal student (the throughput reference).

google-research/distilling-step-by-step @ ef94426, ``model_utils.py``:

    class TaskPrefixDataCollator(DataCollatorForSeq2Seq):   # pads 'pred' and 'expl' views separately
        ...  return {'pred': pred_features, 'expl': expl_features}

    class TaskPrefixTrainer(Seq2SeqTrainer):
        def compute_loss(self, model, inputs, return_outputs=False):
            pred_outputs = model(**inputs['pred'])
            expl_outputs = model(**inputs['expl'])
            loss = self.alpha * pred_outputs.loss + (1. - self.alpha) * expl_outputs.loss

and the HF Trainer then calls ``loss.backward()`` once and ``optimizer.step()``. The task prefix is in front of
the input (``predict: ``/``explain: `` there; ``[label] ``/``[rationale] `` here, the same prompt layout the
student uses), each view batch is padded to its own longest row, and the model computes logits over the whole
vocabulary at every position (``model(input_ids, attention_mask, labels=...)``).
"""

from __future__ import annotations

from stepdistill.student.losses import LABEL_TASK
from stepdistill.student.views import collate


def task_prefix_batches(features, pad_id: int) -> dict:
    """``TaskPrefixDataCollator``: the label ('pred') and rationale ('expl') views, each padded on its own."""
    pred = [f for f in features if f.task == LABEL_TASK]
    expl = [f for f in features if f.task != LABEL_TASK]
    out = {"pred": collate(pred, pad_id, "causal")}
    if expl:
        out["expl"] = collate(expl, pad_id, "causal")
    for view in out.values():
        view.pop("task")
    return out


def reference_loss(model, inputs: dict, alpha: float) -> dict:
    """``TaskPrefixTrainer.compute_loss``: two full forward passes with full-vocabulary logits."""
    pred = model(**inputs["pred"]).loss
    if "expl" not in inputs:
        return {"loss": pred, "label_loss": pred.detach(), "rationale_loss": pred.new_zeros(())}
    expl = model(**inputs["expl"]).loss
    return {"loss": alpha * pred + (1.0 - alpha) * expl, "label_loss": pred.detach(), "rationale_loss": expl.detach()}


def reference_step(model, optimizer, inputs: dict, alpha: float, max_grad_norm: float = 1.0) -> dict:
    """One optimiser step as the HF Trainer takes it: one backward of the combined loss, clip, step, zero."""
    import torch

    out = reference_loss(model, inputs, alpha)
    out["loss"].backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return out
