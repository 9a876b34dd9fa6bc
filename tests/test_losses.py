import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stepdistill.student.losses import multitask_loss, task_mean, token_cross_entropy


def _batch(n_label=5, n_rationale=7, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_label + n_rationale, vocab, generator=g)
    targets = torch.randint(0, vocab, (n_label + n_rationale,), generator=g)
    task = torch.tensor([0] * n_label + [1] * n_rationale)
    return token_cross_entropy(logits, targets), task


@settings(deadline=None, max_examples=30)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(0, 1000))
def test_alpha_one_is_label_loss_and_zero_is_rationale_loss(n_label, n_rationale, seed):
    losses, task = _batch(n_label, n_rationale, seed=seed)
    assert torch.allclose(multitask_loss(losses, task, 1.0)["loss"], losses[:n_label].mean())
    assert torch.allclose(multitask_loss(losses, task, 0.0)["loss"], losses[n_label:].mean())


@settings(deadline=None, max_examples=30)
@given(st.floats(0, 1), st.integers(0, 1000))
def test_loss_is_the_alpha_mix(alpha, seed):
    losses, task = _batch(seed=seed)
    out = multitask_loss(losses, task, alpha)
    expected = alpha * losses[:5].mean() + (1 - alpha) * losses[5:].mean()
    assert torch.allclose(out["loss"], expected, atol=1e-6)


def test_perfect_prediction_gives_zero_loss():
    targets = torch.tensor([1, 2, 3])
    logits = torch.full((3, 5), -1e4)
    logits[torch.arange(3), targets] = 1e4
    assert token_cross_entropy(logits, targets).sum() == 0


def test_one_task_batches_are_not_down_weighted():
    losses, task = _batch(4, 0)
    assert torch.allclose(multitask_loss(losses, task, 0.3)["loss"], losses.mean())


def test_task_mean_ignores_other_tasks():
    losses = torch.tensor([1.0, 3.0, 100.0])
    mean, count = task_mean(losses, torch.tensor([0, 0, 1]), 0)
    assert count == 2 and mean == 2.0
    assert task_mean(losses, torch.tensor([0, 0, 0]), 1) == (0, 0) or task_mean(losses, torch.tensor([0, 0, 0]), 1)[1] == 0
