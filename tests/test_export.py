"""`stepdistill export`: a standalone HF directory that plain transformers loads (stepdistill not importable)
and that predicts what the student predicts; the model card; the ONNX label-only path against PyTorch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
from serve_helpers import TEXTS, lively_model_dir, tiny_run

from stepdistill.cli import main as cli
from stepdistill.serve.export import export, prompt_hash, prompt_spec
from stepdistill.student import Student

NLI = ["Premise: A man plays a guitar on stage.\nHypothesis: A man is performing music.",
       "Premise: Two dogs run in a field.\nHypothesis: The cats sleep.", "x"]

PLAIN = textwrap.dedent('''
    import json, sys
    sys.modules["stepdistill"] = None  # the exported directory must not need stepdistill
    snippet = open("README.md").read().split("```python\\n", 1)[1].split("```", 1)[0]
    exec(snippet)  # the card's own code, unchanged
    print(json.dumps([predict(t) for t in json.loads(sys.argv[1])]))
''')


def plain_transformers_predictions(out_dir, texts) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PLAIN, json.dumps(texts)], cwd=out_dir, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family, texts", [("causal", TEXTS), ("seq2seq", NLI)])
def test_exported_directory_predicts_the_same_with_plain_transformers(tmp_path, family, texts):
    model_dir = lively_model_dir(tmp_path, family)
    out = tmp_path / "exported"
    result = export(model_dir, out)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "stepdistill_prompt.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin"))
    want = [p["raw"] for p in Student.load(model_dir).predict(texts, batch_size=1)]
    assert len(set(want)) > 1  # a meaningful comparison: the outputs differ between inputs
    assert plain_transformers_predictions(out, texts) == want
    assert Student.load(out).predict(texts, batch_size=1) == Student.load(model_dir).predict(texts, batch_size=1)
    spec = json.loads((out / "stepdistill_prompt.json").read_text())
    assert spec.pop("prompt_sha256") == result.prompt_hash == prompt_hash(spec)


def test_suffix_layout_student_exports_its_own_prompt_layout(tmp_path):
    model_dir = lively_model_dir(tmp_path, "causal", layout="suffix")
    out = tmp_path / "exported"
    export(model_dir, out)
    spec = json.loads((out / "stepdistill_prompt.json").read_text())
    assert spec["prompt_format"] == 2 and spec["label_prefix"] == "" and spec["answer_marker"] == "\n[label] Answer:"
    want = [p["raw"] for p in Student.load(model_dir).predict(TEXTS, batch_size=1)]
    assert len(set(want)) > 1
    assert plain_transformers_predictions(out, TEXTS) == want
    # the prefix-layout prompt gives other outputs: the layout really is the one the student was trained on
    prefix_dir = lively_model_dir(tmp_path, "causal")
    assert [p["raw"] for p in Student.load(prefix_dir).predict(TEXTS, batch_size=1)] != want


def test_single_task_card_snippet_reads_the_answer_after_the_rationale(tmp_path):
    model_dir = lively_model_dir(tmp_path, "causal", method="single_task")
    export(model_dir, tmp_path / "out")
    assert "[rationale] " in (tmp_path / "out" / "README.md").read_text()
    got = plain_transformers_predictions(tmp_path / "out", TEXTS)
    for answer, pred in zip(got, Student.load(model_dir).predict(TEXTS, batch_size=1)):
        if answer is None:  # no "so the answer is" in the generation: no label either
            assert pred["label"] is None and "so the answer is" not in pred["raw"].lower()
        else:
            assert answer == pred["raw"]


def test_prompt_hash_changes_with_the_prompt():
    meta = {"family": "causal", "method": "dsbs", "max_input_tokens": 192, "max_new_tokens": 12,
            "max_rationale_tokens": 96}
    from stepdistill.tasks import get_task

    base = prompt_hash(prompt_spec(meta, get_task("svamp")))
    assert base == prompt_hash(prompt_spec(dict(meta), get_task("svamp")))
    assert base != prompt_hash(prompt_spec({**meta, "max_input_tokens": 128}, get_task("svamp")))
    assert base != prompt_hash(prompt_spec(meta, get_task("esnli")))
    assert base != prompt_hash(prompt_spec({**meta, "family": "seq2seq"}, get_task("svamp")))


def test_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    model_dir = lively_model_dir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli(["export", str(model_dir), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert cli(["export", str(model_dir), str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "README.md").is_file()


def test_onnx_label_path_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import numpy as np
    import torch

    from stepdistill.serve.onnx import OnnxLabeler

    model_dir = lively_model_dir(tmp_path)
    result = export(model_dir, tmp_path / "out", onnx=True)
    assert result.onnx is not None and result.onnx.is_file()
    labeler = OnnxLabeler(tmp_path / "out")
    student = Student.load(model_dir)
    prompts = [labeler.prompt(t) for t in TEXTS]  # different lengths: exercises left padding
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        ref = student.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
                            ).logits[:, -1].numpy()
    got = labeler.logits(prompts)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert labeler.predict(TEXTS) == [p["raw"] for p in student.predict(TEXTS, batch_size=1)]


@pytest.mark.slow
def test_export_of_a_trained_run_has_a_full_model_card(tmp_path, data_dir, capsys):
    run_dir = tiny_run(tmp_path)
    out = tmp_path / "exported"
    assert cli(["export", str(run_dir), str(out)]) == 0
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: transformers" in front and "- svamp" in front
    for needle in ("| task | svamp |", "dsbs (labels: gold, alpha: 0.5)", "PaLM-540B", "16 examples",
                   "SVAMP: MIT", "| test | 0.", "prompt sha256"):
        assert needle in card, needle
    assert re.search(r"`[0-9a-f]{64}`", card)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads((out / "metrics.json").read_text()) == metrics
    texts = [json.loads(line)["body"] + "\n" + json.loads(line)["question"]
             for line in (data_dir / "svamp" / "test.jsonl").read_text().splitlines()[:3]]
    want = [p["raw"] for p in Student.load(run_dir).predict(texts, batch_size=1)]
    assert plain_transformers_predictions(out, texts) == want
