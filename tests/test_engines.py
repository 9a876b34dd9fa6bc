"""Engines behind one server: the same student through onnxruntime and llama.cpp answers like PyTorch,
and the server (OpenAI routes included) is the same whatever engine does the math."""

from __future__ import annotations

import httpx
import openai
import pytest
from serve_helpers import TEXTS, ThreadServer, lively_bpe_dir, lively_model_dir

from stepdistill.errors import StepdistillError
from stepdistill.serve.engines import ENGINES, load_engine
from stepdistill.serve.export import export
from stepdistill.serve.server import create_app
from stepdistill.student import Student


def test_unknown_engine_names_the_known_ones(tmp_path):
    with pytest.raises(StepdistillError, match="known: llamacpp, onnx, torch"):
        load_engine("vllm", tmp_path)
    assert set(ENGINES.names()) >= {"torch", "llamacpp", "onnx"}


def test_onnx_engine_gives_the_torch_labels(tmp_path):
    pytest.importorskip("onnxruntime")
    model_dir = lively_model_dir(tmp_path)
    out = export(model_dir, tmp_path / "out", onnx=True)
    engine = load_engine("onnx", out.out)
    want = Student.load(model_dir).predict(TEXTS)
    assert engine.predict(TEXTS, batch_size=2) == want
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
