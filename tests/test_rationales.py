"""Several rationales per input: the weighting in the loss (property tests), the selection policies, the file
formats and the refusals, and a tiny real student trained on SVAMP with the shared extra rationales."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stepdistill.config import RATIONALE_ORDERS, RATIONALE_POLICIES, RATIONALE_WEIGHTINGS, load_config
from stepdistill.errors import DataError
from stepdistill.student.data import build_training_data, length_stats
from stepdistill.student.losses import (
    IGNORE, LABEL_TASK, RATIONALE_TASK, WEIGHTINGS, multitask_loss, per_token, rationale_weights,
)
from stepdistill.student.models import load_pretrained
from stepdistill.student.rationales import CORRECTNESS, ORDERS, read_rationale_file
from stepdistill.student.shared import SharedInputLoss, collate_shared, shared_feature
from stepdistill.student.step import StudentWithLoss
from stepdistill.student.views import Feature, collate
from stepdistill.tasks import Example, get_task

# ---- the loss: each input's label keeps its weight whatever its K ------------------------------------


def _batch(ks, label_len, rat_len, weighting, seed):
    """Features for inputs with ks[i] rationales each, through the real collate; per-token losses drawn at random."""
    g = torch.Generator().manual_seed(seed)
    feats = []
    for i, k in enumerate(ks):
        feats.append(Feature([1] * label_len[i], [5] * label_len[i], LABEL_TASK, i))
        for w in rationale_weights([k], weighting):
            feats.append(Feature([1] * rat_len[i], [6] * rat_len[i], RATIONALE_TASK, i, w))
    batch = collate(feats, 0, "causal")
    mask = batch["labels"] != IGNORE
    losses = torch.rand(int(mask.sum()), generator=g, dtype=torch.float32).requires_grad_()
    example = torch.tensor([f.example for f in feats])[:, None].expand_as(mask)[mask]
    task = batch["task"][:, None].expand_as(mask)[mask]
    return batch, mask, losses, example, task


@settings(deadline=None, max_examples=60)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=6), st.integers(0, 10_000), st.floats(0.05, 0.95),
       st.sampled_from(WEIGHTINGS))
def test_each_inputs_label_weight_is_independent_of_its_number_of_rationales(ks, seed, alpha, weighting):
    """The gradient of the loss on an input's label tokens is alpha * (its label tokens / all label tokens), the
    same as with one rationale each; its rationale sequences weigh 1 in total (per_input) or K (per_rationale)."""
    n = len(ks)
    label_len = [1 + (seed + 3 * i) % 4 for i in range(n)]
    rat_len = [2 + (seed + 5 * i) % 7 for i in range(n)]
    batch, mask, losses, example, task = _batch(ks, label_len, rat_len, weighting, seed)
    out = multitask_loss(losses, task, alpha, per_token(batch.get("weight"), mask))
    out["loss"].backward()
    grad = losses.grad
    has_rationales = any(ks)
    label_share = alpha if has_rationales else 1.0
    for i in range(n):
        on_label = grad[(example == i) & (task == LABEL_TASK)].sum()
        assert torch.allclose(on_label, torch.tensor(label_share * label_len[i] / sum(label_len)), atol=1e-6)
    seq_weight = {i: sum(rationale_weights([k], weighting)) for i, k in enumerate(ks)}
    for i, k in enumerate(ks):
        assert seq_weight[i] == pytest.approx(k if weighting == "per_rationale" else min(k, 1))
    if has_rationales:  # the rationale task: each input's share is its sequence weight x its length
        total = sum(seq_weight[i] * rat_len[i] for i in range(n))
        for i in range(n):
            on_rationale = grad[(example == i) & (task == RATIONALE_TASK)].sum()
            assert torch.allclose(on_rationale, torch.tensor((1 - alpha) * seq_weight[i] * rat_len[i] / total),
                                  atol=1e-6)


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 1000), st.floats(0, 1))
def test_all_one_weights_are_bit_identical_to_the_unweighted_loss(n_label, n_rationale, seed, alpha):
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(n_label + n_rationale, generator=g) * 10
    task = torch.tensor([0] * n_label + [1] * n_rationale)
    plain = multitask_loss(losses, task, alpha)
    ones = multitask_loss(losses, task, alpha, torch.ones(n_label + n_rationale))
    for key in plain:
        assert torch.equal(plain[key], ones[key]), key


def test_one_rationale_per_input_adds_no_weights():
    """K=1 everywhere: the batch has no weight tensor, so training runs the code it ran before several rationales."""
    feats = [Feature([1, 2], [IGNORE, 2], LABEL_TASK, 0), Feature([1, 3], [IGNORE, 3], RATIONALE_TASK, 0,
                                                                   rationale_weights([1])[0])]
    assert "weight" not in collate(feats, 0, "causal")
    assert rationale_weights([1], "per_input") == rationale_weights([1], "per_rationale") == [1.0]
    with pytest.raises(ValueError, match="per_input, per_rationale"):
        rationale_weights([2], "per_token")


def test_config_choices_match_the_registries():
    assert set(RATIONALE_POLICIES) == set(CORRECTNESS)
    assert set(RATIONALE_ORDERS) == set(ORDERS)
    assert set(RATIONALE_WEIGHTINGS) == set(WEIGHTINGS)


# ---- policies on a real tokenizer and real features ----------------------------------------------------

EXAMPLES = [
    Example(id=str(i), input=f"Tom has {i} apples and gets {i + 2} more.\nHow many apples?",
            label=f"( {i}.0 + {i + 2}.0 )", teacher_label=f"({i} + {i + 2})",
            teacher_rationale=f"Tom had {i} apples. He got {i + 2} more. {i} + {i + 2} = {2 * i + 2}.")
    for i in range(1, 5)
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def tok():
    return load_pretrained("causal", "tiny-random-llama")[1]


@pytest.fixture
def extra(tmp_path):
    """Id 1: three rationales in the shared format (one wrong, one long), plus a row of another source;
    id 2: two rows of plain strings; id 3: none; id 4: a list of strings without answers."""
    return _write(tmp_path / "extra.jsonl", [
        {"id": "1", "source": "a", "gold_answer": 4, "rationales": [
            {"text": "1 + 3 = 4. The answer is 4", "answer": 4.0, "correct": True, "words": 8},
            {"text": "1 - 3 = -2. The answer is -2", "answer": -2.0, "correct": False, "words": 7},
            {"text": "Tom starts with 1 apple and then he receives 3 more, so he has 1 + 3 = 4", "answer": 4.0,
             "correct": True, "words": 18}]},
        {"id": "1", "source": "b", "rationales": [{"text": "Add them: 4", "answer": 4, "correct": True}]},
        {"id": "2", "teacher_rationale": "2 + 4 = 6.", "teacher_label": "6"},
        {"id": "2", "rationale": "Two and four make six, so 6.", "answer": "6"},
        {"id": "4", "rationales": ["4 plus 6 is 10", "  "]},
    ])


def _build(tok, *sets, examples=EXAMPLES, method="dsbs"):
    cfg = load_config(None, ["student.name=tiny-random-llama", f"method.name={method}", *sets])
    return build_training_data(cfg, get_task("svamp"), examples, tok)


def _texts(tok, data, i):
    return [tok.decode([t for t in data.features[f].labels if t != IGNORE], skip_special_tokens=True).strip()
            for f in data.by_example[i] if data.features[f].task == RATIONALE_TASK]


def test_default_trains_one_teacher_rationale_as_before(tok, extra):
    data = _build(tok, f"data.extra_rationales={extra}")
    assert [len(ids) for ids in data.by_example] == [2, 2, 2, 2]
    assert all(f.weight == 1.0 for f in data.features)
    assert _texts(tok, data, 0) == [EXAMPLES[0].teacher_rationale]
    assert data.report["teacher"] == get_task("svamp").teacher  # the task's own (PaLM); no other source kept
    r = data.report["rationales"]
    assert (r["candidates"], r["kept"], r["dropped_over_cap"]) == (4 + 4 + 2 + 1, 4, 7)


def test_all_rationales_of_an_input_each_weigh_one_over_k(tok, extra):
    data = _build(tok, f"data.extra_rationales={extra}", "data.rationale_sources=[a, b]",
                  "data.max_rationales_per_input=null")
    assert [len(ids) - 1 for ids in data.by_example] == [4, 0, 0, 0]
    assert [data.features[f].weight for f in data.by_example[0]] == [1.0, 0.25, 0.25, 0.25, 0.25]
    r = data.report["rationales"]
    assert (r["kept"], r["dropped_source"], r["inputs_label_only"], r["rationales_per_input"]) == \
        (4, 7, 3, {"0": 3, "4": 1})
    assert data.report["rationales_dropped"] == 3  # rows without rationales keep the label task, counted
    assert data.report["teacher"] == "a (rationales from extra.jsonl), b (rationales from extra.jsonl)"
    per_rationale = _build(tok, f"data.extra_rationales={extra}", "data.rationale_sources=[a, b]",
                           "data.max_rationales_per_input=null", "data.rationale_weighting=per_rationale")
    assert {f.weight for f in per_rationale.features} == {1.0}


def test_correct_only_shortest_first_cap_and_word_cap(tok, extra):
    base = [f"data.extra_rationales={extra}", "data.rationale_sources=[a, b]", "data.rationale_policy=correct"]
    data = _build(tok, *base, "data.max_rationales_per_input=null")
    assert _texts(tok, data, 0) == ["1 + 3 = 4. The answer is 4",
                                    "Tom starts with 1 apple and then he receives 3 more, so he has 1 + 3 = 4",
                                    "Add them: 4"]
    assert data.report["rationales"]["dropped_wrong"] == 1
    shortest = _build(tok, *base, "data.rationale_order=shortest", "data.max_rationales_per_input=2")
    assert _texts(tok, shortest, 0) == ["Add them: 4", "1 + 3 = 4. The answer is 4"]
    assert shortest.report["rationales"]["dropped_over_cap"] == 1
    longest = _build(tok, *base, "data.rationale_order=longest", "data.max_rationales_per_input=1")
    assert _texts(tok, longest, 0)[0].startswith("Tom starts")
    capped = _build(tok, *base, "data.max_rationale_words=10", "data.max_rationales_per_input=null")
    assert _texts(tok, capped, 0) == ["1 + 3 = 4. The answer is 4", "Add them: 4"]
    assert capped.report["rationales"]["dropped_too_long"] == 1
    assert capped.report["rationales"]["words_kept"] == length_stats([9, 3])


def test_teacher_source_rows_per_id_and_answerless_lists(tok, extra):
    """Id 2's two rows are pooled with its teacher rationale; id 4's answerless strings fail correct-only."""
    data = _build(tok, f"data.extra_rationales={extra}", "data.rationale_sources=[teacher]",
                  "data.max_rationales_per_input=null")
    assert _texts(tok, data, 1) == [EXAMPLES[1].teacher_rationale, "2 + 4 = 6.", "Two and four make six, so 6."]
    assert _texts(tok, data, 3) == [EXAMPLES[3].teacher_rationale, "4 plus 6 is 10"]
    strict = _build(tok, f"data.extra_rationales={extra}", "data.rationale_policy=correct",
                    "data.rationale_sources=[teacher]", "data.max_rationales_per_input=null")
    assert _texts(tok, strict, 3) == [EXAMPLES[3].teacher_rationale]


def test_a_failed_teacher_row_still_trains_on_other_rationales(tok, extra):
    failed = [Example(id="1", input="Tom has 1 apple and gets 3 more.", label="( 1.0 + 3.0 )")]
    data = _build(tok, f"data.extra_rationales={extra}", "data.rationale_sources=[b]", examples=failed)
    assert _texts(tok, data, 0) == ["Add them: 4"] and data.report["teacher_failed"] == 0
    single = _build(tok, f"data.extra_rationales={extra}", "data.rationale_sources=[b]", examples=failed,
                    method="single_task")
    assert len(single.features) == 1


def test_suffix_layout_with_k_copies_of_a_rationale_equals_one_copy(tok):
    """Shared single pass: K rationale segments each see the input and themselves, and weigh 1/K, so K copies of
    one rationale give the loss of one."""
    model, _ = load_pretrained("causal", "tiny-random-llama")
    model.eval()
    ex = EXAMPLES[0]
    one = shared_feature(tok, ex.input, ex.label, [ex.teacher_rationale], 64, 16, 48, 0)
    three = shared_feature(tok, ex.input, ex.label, [ex.teacher_rationale] * 3, 64, 16, 48, 0)
    loss = SharedInputLoss(model, 0.5)
    a = loss(**collate_shared([one], tok.pad_token_id))
    b = loss(**collate_shared([three], tok.pad_token_id))
    for key in ("loss", "label_loss", "rationale_loss"):
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_prefix_layout_with_k_copies_of_a_rationale_equals_one_copy(tok, tmp_path):
    model, _ = load_pretrained("causal", "tiny-random-llama")
    model.eval()
    ex = EXAMPLES[0]
    copies = _write(tmp_path / "copies.jsonl", [{"id": ex.id, "rationales": [ex.teacher_rationale + " "] * 3}])
    one = _build(tok, examples=[ex])
    many = _build(tok, f"data.extra_rationales={copies}", "data.max_rationales_per_input=null", examples=[ex])
    assert len(many.features) == 5
    wrapper = StudentWithLoss(model, "causal", 0.5)
    a = wrapper(**collate(one.features, tok.pad_token_id, "causal"))
    b = wrapper(**collate(many.features, tok.pad_token_id, "causal"))
    assert torch.allclose(a["loss"], b["loss"], atol=1e-5)
    ones = collate(one.features, tok.pad_token_id, "causal")
    ones["weight"] = torch.ones(len(one.features))
    assert torch.equal(wrapper(**ones)["loss"], a["loss"])  # K=1 with explicit weights: bit-identical


# ---- refusals ---------------------------------------------------------------------------------------


def test_the_test_overlap_file_and_test_ids_are_refused(tmp_path, data_dir):
    overlap = _write(tmp_path / "extra_rationales_test_overlap.jsonl", [{"id": "x", "rationales": ["a"]}])
    with pytest.raises(DataError, match="refusing to train on extra_rationales_test_overlap.jsonl"):
        read_rationale_file(overlap)
    test_id = json.loads((data_dir / "svamp" / "test.jsonl").read_text().splitlines()[0])["id"]
    sneaky = _write(tmp_path / "mine.jsonl", [{"id": "chal-1", "rationales": ["a"]},
                                              {"id": test_id, "rationales": ["b"]}])
    cfg = load_config(None, ["student.name=tiny-random-llama", f"data.extra_rationales={sneaky}"])
    tok = load_pretrained("causal", "tiny-random-llama")[1]
    with pytest.raises(DataError, match=rf"mine.jsonl:2: id '{test_id}' is in the test split"):
        build_training_data(cfg, get_task("svamp"), EXAMPLES, tok)


def test_bad_settings_are_named():
    for setting, message in (("data.rationale_policy=best", "data.rationale_policy: one of all, correct"),
                             ("data.rationale_order=random", "data.rationale_order: one of given, shortest"),
                             ("data.max_rationales_per_input=0", "data.max_rationales_per_input: must be positive"),
                             ("data.rationale_sources=7", "data.rationale_sources: expected list or null")):
        with pytest.raises(Exception, match=message):
            load_config(None, [setting])


def test_length_stats():
    assert length_stats([]) == {"n": 0, "mean": None, "median": None, "p10": None, "p90": None, "min": None,
                                "max": None}
    s = length_stats(range(1, 12))
    assert (s["n"], s["median"], s["p10"], s["p90"], s["mean"], s["min"], s["max"]) == (11, 6, 2, 10, 6, 1, 11)
    assert length_stats([3, 1])["median"] == 2


# ---- a tiny real student on SVAMP with the MCC-KD rationales ------------------------------------------


def test_training_on_the_shared_svamp_rationales_reports_counts(tmp_path, data_dir):
    extra = data_dir / "svamp" / "extra_rationales_train.jsonl"
    if not extra.is_file():
        pytest.skip("no svamp/extra_rationales_train.jsonl in the data bundle")
    from stepdistill.student.train import run

    cfg = load_config("configs/tiny-causal.yaml", [
        f"output_dir={tmp_path}/run", f"data.extra_rationales={extra}", "data.rationale_sources=[mcc-kd-chatgpt]",
        "data.rationale_policy=correct", "data.max_rationales_per_input=4", "train.max_steps=2",
        "data.valid_size=4", "eval.max_new_tokens=4"])
    metrics = json.loads((run(cfg) / "metrics.json").read_text())
    r = metrics["train"]["data"]["rationales"]
    assert r["inputs"] == 48 and r["kept"] == sum(int(k) * v for k, v in r["rationales_per_input"].items())
    assert r["candidates"] == r["dropped_source"] + r["dropped_wrong"] + r["dropped_over_cap"] + r["kept"]
    assert 0 < r["inputs_label_only"] < 48 and max(int(k) for k in r["rationales_per_input"]) == 4
    assert r["words_kept"]["n"] == r["kept"] and r["words_kept"]["median"] > 20
    assert r["kept_by_source"] == {"mcc-kd-chatgpt": r["kept"]}
    assert metrics["train"]["data"]["teacher"] == "mcc-kd-chatgpt (rationales from extra_rationales_train.jsonl)"


def test_the_svamp_rationales_study_arms_are_plain_config_overrides(repo, data_dir):
    """configs/studies/svamp_rationales.yaml: arms (c)-(e) resolve against the svamp config and pick what they say."""
    import yaml

    from stepdistill.student.rationales import make_selector
    from stepdistill.tasks import load_splits

    if not (data_dir / "svamp" / "extra_rationales_train.jsonl").is_file():
        pytest.skip("no svamp/extra_rationales_train.jsonl in the data bundle")
    spec = yaml.safe_load((repo / "configs" / "studies" / "svamp_rationales.yaml").read_text())
    task = get_task("svamp")
    train = load_splits(task, None, with_test=False).train
    expected = {"dsbs_mcckd_correct4": ({"mcc-kd-chatgpt"}, 4), "dsbs_eit_level1": ({"eit-chatgpt-level1"}, 1),
                "dsbs_eit_level6": ({"eit-chatgpt-level6"}, 1)}
    for arm, (sources, most) in expected.items():
        cfg = load_config(repo / "configs" / "svamp-smollm2.yaml", spec["methods"][arm])
        selector = make_selector(cfg.data, task)
        for ex in train:
            pool = selector.pool(ex, True)
            chosen = selector.select(ex, True)
            assert len(chosen) <= most and set(chosen) <= {r.text for r in pool if r.source in sources}
        r = selector.report()
        assert max(int(k) for k in r["rationales_per_input"]) == most and r["inputs"] == len(train) == 720
    lengths = {arm: make_selector(load_config(repo / "configs" / "svamp-smollm2.yaml", spec["methods"][arm]).data,
                                  task) for arm in ("dsbs_eit_level1", "dsbs_eit_level6")}
    for sel in lengths.values():
        for ex in train:
            sel.select(ex, True)
    assert lengths["dsbs_eit_level1"].report()["words_kept"]["median"] < \
        lengths["dsbs_eit_level6"].report()["words_kept"]["median"]
