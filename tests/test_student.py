"""Tiny real students built in-process: loss wiring, training that lowers the loss, prediction."""

import pytest
import torch

from stepdistill.config import load_config
from stepdistill.student.data import build_training_data
from stepdistill.student.losses import IGNORE
from stepdistill.student.models import load_pretrained
from stepdistill.student.predict import Student
from stepdistill.student.shared import RATIONALE_SEGMENT
from stepdistill.student.train import StudentWithLoss, student_meta
from stepdistill.student.views import collate
from stepdistill.tasks import Example, get_task

EXAMPLES = [
    Example(id=str(i), input=f"Tom has {i} apples and gets {i + 2} more.\nHow many apples?",
            label=f"( {i}.0 + {i + 2}.0 )", teacher_label=f"({i} + {i + 2})",
            teacher_rationale=f"Tom had {i} apples. He got {i + 2} more. {i} + {i + 2} = {2 * i + 2}.")
    for i in range(1, 9)
]


def _features(family, method="dsbs", name=None):
    cfg = load_config(None, [f"student.family={family}", f"student.name={name or ('tiny-random-llama' if family == 'causal' else 'tiny-random-t5')}",
                             f"method.name={method}"])
    model, tok = load_pretrained(cfg.student.family, cfg.student.name)
    model.eval()  # no dropout: exact comparisons
    data = build_training_data(cfg, get_task("svamp"), EXAMPLES, tok)
    return cfg, model, tok, data


@pytest.mark.parametrize("family", ["causal", "seq2seq"])
def test_alpha_one_equals_the_models_own_label_loss(family):
    cfg, model, tok, data = _features(family)
    label_feats = [f for f in data.features if f.task == 0]
    batch = collate(data.features, tok.pad_token_id, family)
    ours = StudentWithLoss(model, family, alpha=1.0)(**batch)["loss"]
    lb = collate(label_feats, tok.pad_token_id, family)
    hf = model(input_ids=lb["input_ids"], attention_mask=lb["attention_mask"], labels=lb["labels"]).loss
    assert torch.allclose(ours, hf, atol=1e-5)


def test_target_only_logits_equal_full_logits():
    cfg, model, tok, data = _features("causal")
    batch = collate(data.features, tok.pad_token_id, "causal")
    fast = StudentWithLoss(model, "causal", 0.5, target_logits_only=True)(**batch)
    full = StudentWithLoss(model, "causal", 0.5, target_logits_only=False)(**batch)
    for key in ("loss", "label_loss", "rationale_loss"):
        assert torch.allclose(fast[key], full[key], atol=1e-5)


def test_padding_does_not_change_the_loss():
    cfg, model, tok, data = _features("causal")
    feats = data.features[:2]
    alone = StudentWithLoss(model, "causal", 0.5)(**collate(feats[:1], tok.pad_token_id, "causal"))["label_loss"]
    padded = collate(feats, tok.pad_token_id, "causal")
    # drop the second row's targets: only the first row (now padded) contributes
    padded["labels"][1] = IGNORE
    padded["task"][1] = 0
    with_pad = StudentWithLoss(model, "causal", 0.5)(**padded)["label_loss"]
    assert torch.allclose(alone, with_pad, atol=1e-5)


def test_views_per_method():
    for method, views in (("dsbs", 16), ("standard", 8), ("single_task", 8)):
        _, _, tok, data = _features("causal", method)
        assert len(data.features) == views, method
    _, _, tok, data = _features("causal", "single_task")
    assert "So the answer is" in tok.decode([t for t in data.features[0].labels if t != IGNORE])


def test_failure_policy_drops_rationale_or_row():
    bad = EXAMPLES[:3] + [Example(id="bad", input="x", label="( 1.0 + 1.0 )", teacher_label=None,
                                  teacher_rationale="garbled")]
    for policy, rows, views in (("drop_rationale", 4, 7), ("drop_row", 3, 6)):
        cfg = load_config(None, ["student.name=tiny-random-llama", f"data.teacher_failures={policy}"])
        model, tok = load_pretrained("causal", "tiny-random-llama")
        data = build_training_data(cfg, get_task("svamp"), bad, tok)
        assert (data.report["rows_used"], data.report["views"]) == (rows, views)


def test_wrong_rationales_drop_trains_only_the_label_task_on_rows_the_teacher_got_wrong():
    """data.wrong_rationales=drop: a row whose teacher label fails the task's answer check against gold loses its
    rationale view (dsbs, both layouts) or the whole row (single_task); the default keeps it, as the paper."""
    wrong = Example(id="wrong", input="Tom has 5 apples and gets 7 more.\nHow many apples?", label="( 5.0 + 7.0 )",
                    teacher_label="(5 - 7)", teacher_rationale="Tom had 5 apples. He gave 7. 5 - 7 = -2.")
    rows = EXAMPLES[:4] + [wrong]
    _, tok = load_pretrained("causal", "tiny-random-llama")

    def build(method, policy, *extra):
        cfg = load_config(None, ["student.name=tiny-random-llama", f"method.name={method}",
                                 f"data.wrong_rationales={policy}", *extra])
        return build_training_data(cfg, get_task("svamp"), rows, tok)

    keep = build("dsbs", "keep")
    assert (keep.report["rows_used"], keep.report["views"]) == (5, 10) and "rationales_wrong_dropped" not in keep.report
    drop = build("dsbs", "drop")
    assert (drop.report["rows_used"], drop.report["views"]) == (5, 9)
    assert drop.report["rationales_wrong_dropped"] == 1 and drop.report["rationales_dropped"] == 1
    assert [len(ids) for ids in drop.by_example] == [2, 2, 2, 2, 1]  # the wrong row keeps its label task
    shared = build("dsbs", "drop", "student.prompt_layout=suffix").shared
    assert [RATIONALE_SEGMENT in s.segment for s in shared] == [True, True, True, True, False]
    single = build("single_task", "drop")
    assert [ex.id for ex in single.examples] == ["1", "2", "3", "4"] and single.report["rows_dropped"] == 1
    assert build("standard", "drop").report["views"] == 5  # no rationales to drop
    with pytest.raises(Exception, match="data.wrong_rationales: one of keep, drop"):
        load_config(None, ["data.wrong_rationales=maybe"])


@pytest.mark.parametrize("family", ["causal", "seq2seq"])
def test_training_lowers_the_loss(family):
    cfg, model, tok, data = _features(family)
    torch.manual_seed(0)
    wrapper = StudentWithLoss(model, family, 0.5)
    batch = collate(data.features, tok.pad_token_id, family)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = float(wrapper(**batch)["loss"].detach())
    for _ in range(30):
        loss = wrapper(**batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
    last = float(wrapper(**batch)["loss"].detach())
    assert last < 0.6 * first, (first, last)


def test_student_predicts_labels_and_explains():
    cfg, model, tok, data = _features("causal")
    student = Student(model, tok, student_meta(cfg, get_task("svamp")))
    out = student.predict([EXAMPLES[0].input, {"body": "A", "question": "B"}], explain=True)
    assert len(out) == 2 and set(out[0]) == {"label", "raw", "rationale"}
    assert set(student.predict([EXAMPLES[0].input])[0]) == {"label", "raw"}


@pytest.mark.slow
def test_smollm2_alias_loads_the_real_pretrained_student():
    pytest.importorskip("gguf")
    from stepdistill.student.models import smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except Exception as exc:  # CI installs it; say so when it is missing elsewhere
        pytest.skip(str(exc))
    model, tok = load_pretrained("causal", "smollm2-135m")
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_a_stopped_process_is_not_training_time():
    """A step that a SIGSTOP (or a starved process) stretched is counted at the median step; the first step
    (warm-up, compilation) and the ~2x spread of batch lengths are not stalls."""
    import random
    import statistics

    from stepdistill.student.loop import stalled_seconds

    rng = random.Random(0)
    steady = [30.0] + [rng.uniform(1.0, 2.0) for _ in range(200)]  # a slow first step, varied batches
    assert stalled_seconds(steady) == 0.0
    for pause in (30.0, 600.0, 2100.0):
        paused = list(steady)
        paused[77] += pause
        excess = paused[77] - statistics.median(paused[1:])
        assert stalled_seconds(paused) == pytest.approx(excess)
        assert sum(paused) - stalled_seconds(paused) == pytest.approx(sum(steady), abs=2.0)  # within a step
    assert stalled_seconds([1.0, 100.0]) == 0.0  # too few steps to tell
