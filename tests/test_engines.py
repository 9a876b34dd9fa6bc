"""Engines behind one server: the same student through onnxruntime and llama.cpp answers like PyTorch,
and the server (OpenAI routes included) is the same whatever engine does the math."""

from __future__ import annotations

import httpx
import openai
import pytest
import torch
from serve_helpers import TEXTS, ThreadServer, lively_bpe_dir, lively_model_dir

from stepdistill.errors import StepdistillError
from stepdistill.serve.engines import ENGINES, HalfDecodeLinear, load_engine
from stepdistill.serve.export import export
from stepdistill.serve.server import create_app
from stepdistill.student import Student


def test_unknown_engine_names_the_known_ones(tmp_path):
    with pytest.raises(StepdistillError, match="known: llamacpp, onnx, torch"):
        load_engine("vllm", tmp_path)
    assert set(ENGINES.names()) >= {"torch", "llamacpp", "onnx"}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma"])
def test_onnx_graph_decodes_through_its_kv_cache_like_re_reading(tmp_path, arch):
    """The exported graph reads a prompt once and then one position a token against its KV cache, or checks drafted
    tokens a forward for a lone prompt; the tokens are the same every way: the torch student's, and those of
    re-reading the whole sequence for every token (graphs exported before the cache decode that way)."""
    pytest.importorskip("onnxruntime")
    from stepdistill.serve.onnx import OnnxLabeler

    model_dir = lively_bpe_dir(tmp_path, arch)
    out = export(model_dir, tmp_path / "out", onnx=True)
    labeler = OnnxLabeler(out.out)
    assert labeler.past_names[:2] == ["past.0.key", "past.0.value"]
    prompts = [labeler.prompt(t) for t in TEXTS]  # different lengths: left padding against the cache
    cached = labeler.generate(prompts, 12)
    assert any(len(t) > 1 for t in cached)  # several tokens, so the cache is read
    for _ in range(2):  # a lone prompt checks drafted tokens: at first from the prompt, then from the answers too
        assert [labeler.generate([p], 12)[0] for p in prompts] == cached
    stats = labeler.drafts.stats()
    assert stats["answers"] == 2 * len(prompts) and stats["tokens"] > stats["forwards"]
    labeler.drafts = None
    assert [labeler.generate([p], 12)[0] for p in prompts] == cached
    labeler.past_names = []  # as a graph exported before the cache
    assert labeler.generate(prompts, 12) == cached
    student = Student.load(model_dir)
    assert load_engine("onnx", out.out).predict(TEXTS, batch_size=3) == student.predict(TEXTS)
    assert load_engine("onnx", out.out, drafts=False).labeler.drafts is None


def test_onnx_engine_gives_the_torch_labels(tmp_path):
    pytest.importorskip("onnxruntime")
    model_dir = lively_model_dir(tmp_path)
    out = export(model_dir, tmp_path / "out", onnx=True)
    engine = load_engine("onnx", out.out)
    student = Student.load(model_dir)
    assert engine.predict(TEXTS, batch_size=2) == student.predict(TEXTS)
    # rationales too (explain): through the KV cache they cost a position a token like the label's
    assert engine.predict(TEXTS[:3], explain=True, batch_size=1) == student.predict(TEXTS[:3], explain=True)
    single = lively_model_dir(tmp_path / "single", method="single_task")  # its answer follows its rationale
    engine = load_engine("onnx", export(single, tmp_path / "single_out", onnx=True).out)
    assert engine.predict(TEXTS[:3], batch_size=1) == Student.load(single).predict(TEXTS[:3])
    with pytest.raises(StepdistillError, match="cannot score"):
        engine.predict(TEXTS, scoring="score")


def test_server_with_the_llamacpp_engine_answers_openai_clients(tmp_path):
    pytest.importorskip("llama_cpp")
    out = export(lively_bpe_dir(tmp_path, "llama"), tmp_path / "out", gguf="f16")
    engine = load_engine("llamacpp", out.out)
    try:
        want = engine.predict([TEXTS[0]], explain=True)[0]
        with ThreadServer(create_app(engine, model_name="m")) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
            r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": TEXTS[0]}],
                                               extra_body={"explain": True})
            assert httpx.get(url + "/info").json()["engine"] == "llamacpp"
        assert r.model_extra["stepdistill"]["raw"] == want["raw"]
        assert r.choices[0].message.model_extra["reasoning_content"] == want["rationale"]
        assert r.usage.prompt_tokens > 0
    finally:
        engine.close()


# ---- the torch engine's lean greedy loop ----------------------------------------------------------

@pytest.mark.parametrize("layout", ["prefix", "suffix"])
def test_torch_engine_gives_the_labels_and_rationales_of_generate(tmp_path, layout):
    model_dir = lively_model_dir(tmp_path, layout=layout)
    fast = load_engine("torch", model_dir, precision="float32")
    slow = Student.load(model_dir)
    inputs = TEXTS + [t.replace("apples", "pears") for t in TEXTS]
    for batch_size in (1, 3):
        assert fast.predict(inputs, explain=True, batch_size=batch_size) == slow.predict(inputs, explain=True,
                                                                                         batch_size=batch_size)
    assert fast.predict(TEXTS, max_new_tokens=1) == slow.predict(TEXTS, max_new_tokens=1)


def test_float16_decode_gives_the_labels_and_rationales_of_generate(tmp_path):
    model_dir = lively_model_dir(tmp_path)
    fast = load_engine("torch", model_dir, precision="float16-decode")
    assert fast.precision == "float16-decode"
    assert sum(isinstance(m, HalfDecodeLinear) for m in fast.model.modules()) > 0
    inputs = TEXTS + [t.replace("apples", "pears") for t in TEXTS]
    assert fast.predict(inputs, explain=True, batch_size=1) == Student.load(model_dir).predict(inputs, explain=True,
                                                                                              batch_size=1)


def test_half_decode_linear_reads_float16_weights_for_a_few_rows_only_and_never_overflows():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    half = HalfDecodeLinear(linear, rows=4)
    with torch.no_grad():
        few, many = torch.randn(1, 4, 64), torch.randn(2, 3, 64)
        assert not torch.equal(half(few), linear(few))  # float16 weights: rounded
        assert torch.allclose(half(few), linear(few), rtol=1e-2, atol=1e-2)
        assert torch.equal(half(many), linear(many))  # 6 rows: a prompt, float32 as it was
        huge = torch.full((1, 64), 1e5)  # past float16's range: redone in float32
        assert torch.equal(half(huge), linear(huge)) and torch.isfinite(half(huge)).all()
        assert half(few).dtype == torch.float32


def test_auto_precision_is_bf16_with_bf16_units_and_float32_on_a_cpu_without(monkeypatch):
    from stepdistill.serve.engines import resolve_dtype
    from stepdistill.student import machine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(machine, "native_bf16", lambda device: True)
    assert resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(machine, "native_bf16", lambda device: False)
    assert resolve_dtype("auto") == "float32"
    with pytest.raises(StepdistillError, match="float16-decode"):
        resolve_dtype("int4")


def test_torch_engine_on_a_seq2seq_student_uses_generate(tmp_path):
    model_dir = lively_model_dir(tmp_path, family="seq2seq")
    assert load_engine("torch", model_dir, precision="float32").predict(TEXTS) == Student.load(model_dir).predict(
        TEXTS)


def test_label_scoring_is_the_default_where_validation_showed_it_no_worse():
    from types import SimpleNamespace

    from stepdistill.serve.engines import validated_scoring
    from stepdistill.tasks import get_task

    s = SimpleNamespace(method="dsbs", task=get_task("esnli"), meta={"label_scoring": "generate"})
    both = {"valid": {"accuracy": 0.80, "label_scoring": "generate"}, "valid:score": {"accuracy": 0.81}}
    assert validated_scoring(s, both) == "score"
    assert validated_scoring(s, {**both, "valid:score": {"accuracy": 0.79}}) is None
    assert validated_scoring(s, {"valid": {"accuracy": 0.8}}) is None  # scoring was never validated
    assert validated_scoring(SimpleNamespace(**{**vars(s), "task": get_task("svamp")}), both) is None
    assert validated_scoring(SimpleNamespace(**{**vars(s), "method": "single_task"}), both) is None
