"""The shared-input single pass (student/shared.py) equals the two separate suffix-layout views."""

import pytest
import torch

from stepdistill.student.losses import LABEL_TASK, RATIONALE_TASK
from stepdistill.student.models import load_pretrained
from stepdistill.student.shared import SharedInputLoss, collate_shared, shared_feature
from stepdistill.student.train import StudentWithLoss
from stepdistill.student.views import collate, make_feature

ROWS = [(f"Tom has {i} apples and gets {i + 2} more.\nHow many apples?" + " Really." * (i % 3),
         f"({i} + {i + 2})", f"Tom had {i} apples. He got {i + 2} more." + " So." * i if i != 3 else None)
        for i in range(1, 6)]


def _setup():
    model, tok = load_pretrained("causal", "tiny-random-llama")
    model.eval()
    two = []
    for j, (text, label, rationale) in enumerate(ROWS):
        two.append(make_feature(tok, "causal", "label", text, label, 64, 16, LABEL_TASK, j, "suffix"))
        if rationale is not None:
            two.append(make_feature(tok, "causal", "rationale", text, rationale, 64, 48, RATIONALE_TASK, j, "suffix"))
    shared = [shared_feature(tok, t, l, r, 64, 16, 48, j) for j, (t, l, r) in enumerate(ROWS)]
    return model, tok, two, shared


def test_shared_pass_equals_two_views_loss_and_gradients():
    model, tok, two, shared = _setup()
    ref = StudentWithLoss(model, "causal", 0.3)(**collate(two, tok.pad_token_id, "causal"))
    ref["loss"].backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = SharedInputLoss(model, 0.3)(**collate_shared(shared, tok.pad_token_id))
    out["loss"].backward()
    for key in ("loss", "label_loss", "rationale_loss"):
        assert torch.allclose(out[key], ref[key], atol=1e-5), key
    for g, r in zip((p.grad for p in model.parameters()), ref_grads):
        assert torch.allclose(g, r, atol=1e-5)


def test_rationale_segment_cannot_see_the_label_segment():
    model, tok, _, shared = _setup()
    loss = SharedInputLoss(model, 0.5)
    base = loss(**collate_shared(shared, tok.pad_token_id))
    other = [shared_feature(tok, t, "(999 * 7 - 3)", r, 64, 16, 48, j) for j, (t, _, r) in enumerate(ROWS)]
    changed = loss(**collate_shared(other, tok.pad_token_id))
    assert torch.allclose(base["rationale_loss"], changed["rationale_loss"], atol=1e-6)
    assert not torch.allclose(base["label_loss"], changed["label_loss"], atol=1e-4)


def test_score_labels_matches_separate_forwards_and_predict_option():
    from stepdistill.student.predict import Student
    from stepdistill.student.views import prompt_ids, target_ids
    from stepdistill.tasks import get_task

    model, tok = load_pretrained("causal", "tiny-random-llama")
    model.eval()
    task = get_task("esnli")
    meta = {"family": "causal", "method": "dsbs", "task": "esnli", "max_input_tokens": 64, "max_label_tokens": 8}
    student = Student(model, tok, meta, task)
    texts = ["Premise: A man plays.\nHypothesis: A man sleeps.", "Premise: Dogs run.\nHypothesis: Animals move."]
    got = student.score_labels(texts, batch_size=2)
    for text, res in zip(texts, got):
        prompt = prompt_ids(tok, "causal", "label", text, 64)
        for cand, score in res["scores"].items():
            tgt = target_ids(tok, "causal", cand, 8)
            ids = torch.tensor([prompt + tgt])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1:-1].float(), -1)
            expected = float(logp.gather(1, torch.tensor(tgt)[:, None]).sum())
            assert abs(score - expected) < 1e-4
        assert res["label"] == max(res["scores"], key=res["scores"].get)
    assert [p["label"] for p in student.predict(texts, scoring="score")] == [r["label"] for r in got]
    assert student.label_scoring() == "generate" and student.label_scoring("score") == "score"


def test_label_scoring_option_is_checked_against_the_student():
    from stepdistill.errors import StepdistillError
    from stepdistill.student.predict import Student
    from stepdistill.tasks import get_task

    model, tok = load_pretrained("causal", "tiny-random-llama")
    meta = {"family": "causal", "method": "single_task", "task": "esnli", "label_scoring": "score"}
    single = Student(model, tok, meta, get_task("esnli"))
    assert single.label_scoring() == "generate"  # its own setting cannot apply: its label follows the rationale
    with pytest.raises(StepdistillError, match="single_task"):
        single.label_scoring("score")
    equation = Student(model, tok, {"family": "causal", "method": "dsbs", "task": "svamp"}, get_task("svamp"))
    with pytest.raises(StepdistillError, match="multiple-choice"):
        equation.label_scoring("score")
    with pytest.raises(StepdistillError, match="generate or score"):
        equation.label_scoring("vote")


def test_split_views_equal_the_concatenated_pass():
    from stepdistill.config import load_config
    from stepdistill.student.data import build_training_data
    from stepdistill.tasks import Example, get_task

    model, tok = load_pretrained("causal", "tiny-random-llama")
    model.eval()
    cfg = load_config(None, ["student.name=tiny-random-llama"])
    examples = [Example(id=str(j), input=t, label=l, teacher_label=l, teacher_rationale=r) for j, (t, l, r) in
                enumerate(ROWS)]
    data = build_training_data(cfg, get_task("svamp"), examples, tok)
    batch = collate(data.features, tok.pad_token_id, "causal")
    concat = StudentWithLoss(model, "causal", 0.3)(**batch)
    split = StudentWithLoss(model, "causal", 0.3, split_views=True)(**batch)
    for key in ("loss", "label_loss", "rationale_loss"):
        assert torch.allclose(concat[key], split[key], atol=1e-5), key


def test_several_rationales_per_input_train_in_length_sorted_chunks_with_the_same_loss():
    """A rationale view with more rows than inputs is cut, longest first, into chunks of as many rows as the
    batch has inputs; the loss equals the one concatenated pass. With one rationale per input, nothing is cut."""
    from dataclasses import replace

    from stepdistill.config import load_config
    from stepdistill.student.data import build_training_data
    from stepdistill.student.losses import LABEL_TASK, RATIONALE_TASK
    from stepdistill.student.step import view_chunks
    from stepdistill.tasks import Example, get_task

    model, tok = load_pretrained("causal", "tiny-random-llama")
    model.eval()
    cfg = load_config(None, ["student.name=tiny-random-llama"])
    examples = [Example(id=str(j), input=t, label=l, teacher_label=l, teacher_rationale=r or "So.") for j, (t, l, r)
                in enumerate(ROWS)]
    features = build_training_data(cfg, get_task("svamp"), examples, tok).features
    labels = [f for f in features if f.task == LABEL_TASK]
    rationales = [f for f in features if f.task == RATIONALE_TASK]
    one = collate(labels + rationales, tok.pad_token_id, "causal")
    assert [c.tolist() for c in view_chunks(one["task"], one["attention_mask"])] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    several = [replace(f, weight=1 / 3) for f in rationales * 3]
    batch = collate(labels + several, tok.pad_token_id, "causal")
    chunks = view_chunks(batch["task"], batch["attention_mask"])
    assert [len(c) for c in chunks] == [5, 5, 5, 5]
    lengths = batch["attention_mask"].sum(1)
    assert all(lengths[a].min() >= lengths[b].max() for a, b in zip(chunks[1:], chunks[2:]))  # longest first
    assert sorted(torch.cat(chunks).tolist()) == list(range(20))
    concat = StudentWithLoss(model, "causal", 0.3)(**batch)
    split = StudentWithLoss(model, "causal", 0.3, split_views=True)(**batch)
    for key in ("loss", "label_loss", "rationale_loss"):
        assert torch.allclose(concat[key], split[key], atol=1e-5), key


def test_suffix_layout_training_data_gives_the_shared_pass_the_two_view_loss():
    """build_training_data with student.prompt_layout=suffix: the shared rows train on exactly the loss of the
    suffix-layout views (a dropped rationale included), and prompts match what prediction builds."""
    from stepdistill.config import load_config
    from stepdistill.student.data import build_training_data
    from stepdistill.student.views import prompt_ids
    from stepdistill.tasks import Example, get_task

    model, tok = load_pretrained("causal", "tiny-random-llama")
    model.eval()
    cfg = load_config(None, ["student.name=tiny-random-llama", "student.prompt_layout=suffix"])
    examples = [Example(id=str(j), input=t, label=l, teacher_label=l, teacher_rationale=r) for j, (t, l, r) in
                enumerate(ROWS)]
    data = build_training_data(cfg, get_task("svamp"), examples, tok)
    assert data.shared is not None and len(data.shared) == len(ROWS)
    assert data.report["rationales_dropped"] == 1
    for f in data.features:
        view = "label" if f.task == LABEL_TASK else "rationale"
        prompt = prompt_ids(tok, "causal", view, ROWS[f.example][0], cfg.student.max_input_tokens, "suffix")
        assert f.input_ids[:len(prompt)] == prompt
    views = StudentWithLoss(model, "causal", 0.3)(**collate(data.features, tok.pad_token_id, "causal"))
    shared = SharedInputLoss(model, 0.3)(**collate_shared(data.shared, tok.pad_token_id))
    for key in ("loss", "label_loss", "rationale_loss"):
        assert torch.allclose(views[key], shared[key], atol=1e-5), key
    prefix = build_training_data(load_config(None, ["student.name=tiny-random-llama"]), get_task("svamp"),
                                 examples, tok)
    assert prefix.shared is None
