"""Decoding with drafted tokens (``serve/drafts.py``): the torch engine's path for one prompt at a time gives the
tokens of one-token-a-forward greedy decoding, whatever the drafts: none, all right, or all wrong."""

from __future__ import annotations

import pytest
from serve_helpers import TEXTS, lively_bpe_dir, lively_model_dir

from stepdistill.serve.drafts import DraftTable, greedy_with_drafts
from stepdistill.serve.engines import greedy_causal, load_engine
from stepdistill.student import Student


def test_the_table_drafts_the_most_frequent_follower_of_the_last_two_tokens():
    table = DraftTable()
    for seq in ([1, 2, 3, 9], [1, 2, 3, 9], [1, 2, 4, 9]):
        table.learn(seq)
    assert table.draft([]) == [1, 2, 3, 9]  # the start of an answer has its own context
    assert table.draft([1, 2], k=1) == [3]
    assert table.draft([7, 7]) == []  # never seen
    full = DraftTable(max_contexts=2)
    full.learn([5, 6, 7, 8])
    assert len(full.next) == 2 and full.draft([]) == [5, 6]


def forward_counter(model):
    calls = []
    forward = model.forward

    def counted(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    model.forward = counted
    return calls


@pytest.mark.parametrize("seed", ["none", "right", "wrong"])
def test_drafted_decoding_gives_the_tokens_of_plain_greedy_decoding(tmp_path, seed):
    student = Student.load(lively_model_dir(tmp_path))
    prompts = student._prompts("rationale", TEXTS, 64)
    eos = student.tokenizer.eos_token_id
    want = []
    for p in prompts:
        greedy_causal(student.model, student.tokenizer, [p], 24, 1, learn=want.append)
    assert any(len(w) > 6 for w in want)
    table = DraftTable()
    if seed == "right":
        for w in want:
            table.learn(w)
    elif seed == "wrong":
        for w in want:
            table.learn([(t + 1) % 50 for t in w])
    calls = forward_counter(student.model)
    got = [greedy_with_drafts(student.model, p, 24, eos, table) for p in prompts]
    assert got == want
    steps = sum(len(w) for w in want)  # one forward per token without drafts
    if seed == "right":
        assert len(calls) < steps / 2 and max(calls[1:]) > 1  # several tokens checked per forward
        assert calls[0] > len(prompts[0])  # the prompt's forward checks the start of the answer too
    for budget in (1, 2, 5):
        assert greedy_with_drafts(student.model, prompts[0], budget, eos, table) == want[0][:budget]


def test_the_torch_engine_drafts_one_prompt_at_a_time_and_answers_as_generate(tmp_path):
    model_dir = lively_model_dir(tmp_path)
    fast, plain = (load_engine("torch", model_dir, precision="float32", drafts=d) for d in (True, False))
    assert fast.drafts is not None and plain.drafts is None
    inputs = TEXTS + [t.replace("apples", "pears") for t in TEXTS]
    want = Student.load(model_dir).predict(inputs, explain=True, batch_size=1)
    for _ in range(2):  # the second time, the table knows every answer
        assert [fast.predict([x], explain=True)[0] for x in inputs] == want
    assert fast.drafts.next and plain.predict(inputs, explain=True, batch_size=1) == want
    assert load_engine("torch", model_dir, precision="float16-decode").drafts is None


def test_info_says_whether_the_engine_drafts_and_other_engines_refuse_no_drafts(tmp_path):
    from stepdistill.errors import StepdistillError
    from stepdistill.serve.server import describe, serve

    import httpx
    from serve_helpers import ThreadServer

    from stepdistill.serve.server import create_app

    model_dir = lively_model_dir(tmp_path)
    engine = load_engine("torch", model_dir, precision="float32")
    assert describe(engine, None)["drafts"] is True
    with ThreadServer(create_app(engine)) as url:
        for _ in range(2):
            assert httpx.post(url + "/predict", json={"inputs": [TEXTS[0]]}).status_code == 200
        drafts = httpx.get(url + "/health").json()["drafts"]
    assert drafts["answers"] == 2 and drafts["tokens"] >= drafts["forwards"] >= 2 and drafts["contexts"] > 0
    assert drafts["tokens_per_forward"] == round(drafts["tokens"] / drafts["forwards"], 2)
    assert describe(load_engine("torch", model_dir, precision="float32", drafts=False), None)["drafts"] is False
    with pytest.raises(StepdistillError, match="--no-drafts to the torch and onnx engines"):
        serve(str(model_dir), engine="llamacpp", drafts=False)
    with pytest.raises(StepdistillError, match="--precision applies to the torch engine"):
        serve(str(model_dir), engine="onnx", precision="float32")


@pytest.mark.parametrize("arch", ["qwen2", "gemma"])
def test_drafted_decoding_keeps_the_tokens_of_other_architectures(tmp_path, arch):
    student = Student.load(lively_bpe_dir(tmp_path, arch))
    eos = student.tokenizer.eos_token_id
    for p in student._prompts("rationale", TEXTS, 64):
        want = []
        greedy_causal(student.model, student.tokenizer, [p], 24, 1, learn=want.append)
        table = DraftTable()
        table.learn(want[0][:5] + [(t + 1) % 50 for t in want[0][5:]])  # right, then wrong
        assert greedy_with_drafts(student.model, p, 24, eos, table) == want[0]


def test_where_the_table_is_unsure_the_prompt_is_looked_up():
    from stepdistill.serve.drafts import prompt_index

    index = prompt_index([10, 11, 12, 13, 11, 14, 7, 5])  # 11 is followed by 12, then (last) by 14
    table = DraftTable()
    assert table.draft([11], k=1, prompt=index) == [14]  # the last occurrence of the run
    assert table.draft([10, 11], k=3, prompt=index) == [12, 13, 11]  # the longest run decides
    for seq in ([7, 9], [7, 9], [7, 8], [7, 6]):
        table.learn(seq)
    assert table.draft([7], k=1, prompt=index) == [9]  # 9 followed 7 in half the answers: the table is sure
    table.learn([7, 8])
    assert table.draft([7], k=1, prompt=index) == [5]  # 2 of 5: unsure, so what followed 7 in the prompt
    assert table.draft([7], k=1, prompt={}) == [9]  # nothing there: the table's most frequent
    assert table.draft([3, 3], k=2, prompt={}) == []
