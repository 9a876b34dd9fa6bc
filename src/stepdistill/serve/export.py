"""Export a trained student as a standalone Hugging Face directory that plain ``transformers`` loads.

    stepdistill export runs/tiny-causal-svamp-dsbs-s0 exported/tiny-svamp [--onnx]

Writes safetensors weights, config, tokenizer, ``stepdistill_prompt.json`` (the exact prompt layout,
so predictions can be reproduced without stepdistill) and a ``README.md`` model card: task, teacher,
prompt hash, data size, method, alpha, metrics and data licences, with a plain-transformers snippet.
``stepdistill.json`` and ``metrics.json`` are kept too, so ``Student.load(OUT)`` also works.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from stepdistill.errors import StepdistillError, make_dir
from stepdistill.student import views
from stepdistill.student.predict import META_FILE

PROMPT_FILE = "stepdistill_prompt.json"
AUTO_CLASSES = {"causal": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM"}


@dataclass(frozen=True)
class ExportResult:
    out: Path
    files: list[str]
    prompt_hash: str
    onnx: Path | None = None
    gguf: Path | None = None


def prompt_spec(meta: dict, task) -> dict:
    """Everything that decides what the student reads and how its output is cut, as plain data."""
    causal = meta["family"] == "causal"
    number = meta.get("prompt_format", 1)
    layout = views.LAYOUTS[views.layout_of_format(number)]
    return {
        "prompt_format": number,
        "family": meta["family"],
        "method": meta["method"],
        "input_template": task.template,
        "label_prefix": layout["label"][0],
        "rationale_prefix": layout["rationale"][0],
        "answer_marker": layout["label"][1] if causal else None,
        "rationale_marker": layout["rationale"][1] if causal else None,
        "single_task_join": views.SINGLE_TASK_JOIN if meta["method"] == "single_task" else None,
        "max_input_tokens": meta.get("max_input_tokens"),
        "max_new_tokens": meta.get("max_new_tokens") or task.max_new_tokens(),
        "max_rationale_tokens": meta.get("max_rationale_tokens"),
        "label_scoring": meta.get("label_scoring") or "generate",
    }


def prompt_hash(spec: dict) -> str:
    """sha256 of the prompt spec (JSON, sorted keys): equal hashes mean identical prompts and budgets."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def export(path: str | Path, out: str | Path, *, overwrite: bool = False, onnx: bool = False,
           gguf: str | None = None) -> ExportResult:
    """Write the standalone directory ``out`` for the student of run (or model) directory ``path``;
    ``gguf`` (a quantisation: f16, q8_0, f32) adds ``model-QUANT.gguf`` for llama.cpp."""
    import transformers

    from stepdistill.serve.info import run_info
    from stepdistill.tasks import get_task

    info = run_info(path)
    meta = info.meta
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise StepdistillError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if meta["family"] not in AUTO_CLASSES:
        raise StepdistillError(f"cannot export student family '{meta['family']}'; known: {', '.join(AUTO_CLASSES)}")
    task = get_task(meta.get("task_spec") or meta["task"])
    spec = prompt_spec(meta, task)
    digest = prompt_hash(spec)

    make_dir(out.parent, "export OUT")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    auto = getattr(transformers, AUTO_CLASSES[meta["family"]])
    model = auto.from_pretrained(str(info.model_dir))  # loading with the plain Auto class is part of the check
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(info.model_dir))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.copy2(info.model_dir / META_FILE, tmp / META_FILE)
    if info.metrics is not None:
        (tmp / "metrics.json").write_text(json.dumps(info.metrics, indent=1))
    (tmp / PROMPT_FILE).write_text(json.dumps({**spec, "prompt_sha256": digest}, indent=1) + "\n")
    (tmp / "README.md").write_text(model_card(info, task, spec, digest), encoding="utf-8")
    onnx_path = None
    if onnx:
        from stepdistill.serve.onnx import export_onnx

        onnx_path = export_onnx(model, meta["family"], tmp / "onnx")
    gguf_path = None
    if gguf:
        from stepdistill.serve.gguf_export import card_section, export_gguf

        gguf_path = export_gguf(model, tokenizer, spec, tmp / f"model-{gguf}.gguf", gguf,
                                name=f"{task.name} {meta['method']} student")
        with open(tmp / "README.md", "a", encoding="utf-8") as card:
            card.write(card_section(gguf_path.name, spec))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return ExportResult(out=out, files=files, prompt_hash=digest,
                        onnx=None if onnx_path is None else out / onnx_path.relative_to(tmp),
                        gguf=None if gguf_path is None else out / gguf_path.name)


# ---- model card -------------------------------------------------------------------------------------

def _base_model(student: str) -> str:
    from stepdistill.student.models import ALIASES

    if student in ALIASES:
        return f"{student}: {ALIASES.get(student).description}"
    return student


def _metrics_table(summary: dict) -> str:
    rows = ["| split | accuracy | n | teacher accuracy |", "|---|---|---|---|"]
    for split in ("valid", "test"):
        m = summary.get(split)
        if m:
            teacher = m.get("teacher_accuracy")
            rows.append(f"| {split} | {m['accuracy']:.4f} | {m.get('n', '')} | "
                        f"{'' if teacher is None else f'{teacher:.4f}'} |")
    return "\n".join(rows) if len(rows) > 2 else "No metrics recorded (metrics.json was not found)."


def usage_snippet(spec: dict) -> str:
    """Plain-transformers code reproducing the student's label-only prediction for one input."""
    causal = spec["family"] == "causal"
    auto = AUTO_CLASSES[spec["family"]]
    head = f'''import re

import torch
from transformers import {auto}, AutoTokenizer

model_dir = "."  # this directory
tok = AutoTokenizer.from_pretrained(model_dir)
model = {auto}.from_pretrained(model_dir).eval()


def ids(text):  # each prompt piece is tokenized on its own, without special tokens
    return tok(text, add_special_tokens=False)["input_ids"] if text else []


def predict(text):
    """Label-only prediction for one formatted input (see input_template)."""
'''
    if spec["method"] == "single_task":
        prefix, marker, budget = "rationale_prefix", "rationale_marker", spec["max_rationale_tokens"] + spec[
            "max_new_tokens"]
    else:
        prefix, marker, budget = "label_prefix", "answer_marker", spec["max_new_tokens"]
    if causal:
        body = f'''    prompt = ids({spec[prefix]!r}) + ids(text)[:{spec["max_input_tokens"]}] + ids({spec[marker]!r})
    out = model.generate(torch.tensor([prompt]), max_new_tokens={budget}, do_sample=False, num_beams=1,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    answer = tok.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
'''
    else:
        body = f'''    prompt = ids({spec[prefix]!r}) + ids(text)[:{spec["max_input_tokens"]}] + [tok.eos_token_id]
    out = model.generate(torch.tensor([prompt]), max_new_tokens={budget}, do_sample=False, num_beams=1,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    answer = tok.decode(out[0], skip_special_tokens=True).strip()
'''
    if spec["method"] == "single_task":
        tail = '''    parts = re.split(r"so the answer is", answer, flags=re.IGNORECASE)
    return parts[-1].strip() if len(parts) > 1 else None  # None: no answer given
'''
    else:
        tail = '''    return answer.split("\\n")[0].strip()
'''
    return head + body + tail


def model_card(info, task, spec: dict, digest: str) -> str:
    meta = info.meta
    summary = info.metrics_summary()
    size = info.data_size()
    pipeline_tag = "text-generation" if spec["family"] == "causal" else "text2text-generation"
    example_fields = ", ".join(f'{name}="..."' for name in _template_fields(task.template))
    front = "\n".join([
        "---",
        "library_name: transformers",
        f"pipeline_tag: {pipeline_tag}",
        "tags:",
        "- stepdistill",
        "- distilling-step-by-step",
        f"- {task.name}",
        "---",
    ])
    prompt_line, decoding_line, explain = _prompt_lines(spec)
    return f"""{front}

# {task.name} student distilled step by step ({meta['method']})

A `{meta['student']}` student fine-tuned with stepdistill on the
**{task.name}** task ({task.description}), following *Distilling Step-by-Step* (Hsieh et al., 2023).

| | |
|---|---|
| task | {task.name} |
| method | {meta['method']} (labels: {meta.get('labels')}, alpha: {meta.get('alpha')}) |
| teacher | {info.teacher()} |
| base model | {_base_model(meta['student'])} |
| training data | {size.get('n_train')} examples{f", {size['views']} training views" if 'views' in size else ''} |
| prompt format | {spec['prompt_format']} |
| prompt sha256 | `{digest}` |

## Metrics

{_metrics_table(summary)}

Accuracy is exact match of the canonical label, as computed by `stepdistill evaluate`.

## Prompt

The input is the task's fields filled into the template below (`{{choices}}` renders as `(a) ...` lines),
then the pieces are tokenized **one by one, without special tokens**, and concatenated:

```
input_template: {spec['input_template']!r}
{prompt_line}
{decoding_line}
```
{explain}
`{PROMPT_FILE}` holds the same as JSON; its `prompt_sha256` is the sha256 of the other fields
(JSON, sorted keys).

## Use with plain transformers

```python
{usage_snippet(spec)}

print(predict({task.template!r}.format({example_fields})))
```

With stepdistill installed, `Student.load("<this directory>").predict([...], explain=True)` does the same
and also normalizes the label (for example, equations to a canonical form).

## Licences

- Data: {task.license or 'see the task definition'}
- Base model: {_base_model(meta['student'])}; its licence applies to these weights.
- Teacher outputs: {info.teacher()}; check the teacher's terms of use.
"""


def _prompt_lines(spec: dict) -> tuple[str, str, str]:
    """The model card's prompt and decoding lines, and how to ask for a rationale ("" where the student has
    no rationale task)."""
    single = spec["method"] == "single_task"
    prefix = spec["rationale_prefix"] if single else spec["label_prefix"]
    marker = spec["rationale_marker"] if single else spec["answer_marker"]
    end = f"ids({marker!r})" if spec["family"] == "causal" else "[eos]"
    prompt_line = f"prompt ({spec['family']}): ids({prefix!r}) + ids(input)[:{spec['max_input_tokens']}] + {end}"
    if single:
        budget = spec["max_rationale_tokens"] + spec["max_new_tokens"]
        decoding_line = (f"decoding: greedy, at most {budget} new tokens, up to eos; the label follows the last "
                         f"{spec['single_task_join'].strip()!r} (case-insensitive)")
    else:
        decoding_line = (f"decoding: greedy, at most {spec['max_new_tokens']} new tokens, up to eos; the label is "
                         "the first line")
    if spec["label_scoring"] == "score" and not single:
        decoding_line += ("\nNOTE: stepdistill picks this student's label by scoring each candidate label (sum of "
                          "the log-probabilities of ids(' ' + label) + [eos] after the prompt; no space for "
                          "seq2seq) instead of generating it; greedy generation below can differ")
    explain = ""
    if spec["method"] == "dsbs":
        pieces = [f"the prefix `{spec['rationale_prefix']!s}`"] if spec["rationale_prefix"] else []
        if spec["rationale_marker"]:
            pieces.append(f"the marker `{spec['rationale_marker']!r}`")
        explain = (f"\nFor a rationale, use {' and '.join(pieces)}"
                   + f" with up to {spec['max_rationale_tokens']} new tokens.\n")
    return prompt_line, decoding_line, explain


def _template_fields(template: str) -> list[str]:
    import re

    return list(dict.fromkeys(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", template)))
