"""Few-shot chain-of-thought prompts for the teacher.

A prompt is an instruction plus exemplars (an input, a short step-by-step rationale, and the answer
in the fixed final form ``So the answer is <answer>.``), followed by the new input. The same prompt
is rendered as one completion text (``Q: ... A: ...`` blocks) or as chat turns; its hash covers the
instruction, the exemplars and the format, and is recorded with every teacher output.

Without exemplars (a custom task that names none) the prompt is zero-shot: the instruction alone, which
asks for the same final form; expect a lower parse rate than with a few exemplars.

Built-in tasks ship their exemplars in ``teacher/exemplars/<task>.jsonl`` (written by us from
training rows). A custom task names its own file with the YAML key ``exemplars``; each line holds
either ``input`` (the formatted input text) or the row fields the task's template needs, plus
``rationale`` and ``label`` (and optionally ``answer``, the text shown after "So the answer is").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from stepdistill.errors import DataError
from stepdistill.tasks import Task, read_jsonl
from stepdistill.tasks.answers import LETTERS

ANSWER_PREFIX = "So the answer is"
PROMPT_VERSION = "cot-v1"  # bump when the rendering below changes: it is part of the hash

INSTRUCTIONS = {
    "classification": "Answer the question. Think step by step in one or two short sentences, then finish "
                      "with \"So the answer is <label>.\" where <label> is one of: {labels}.",
    "multiple_choice": "Answer the multiple-choice question. Think step by step in one or two short "
                       "sentences, then finish with \"So the answer is (<letter>) <choice>.\"",
    "equation": "Solve the math word problem. Think step by step, then finish with \"So the answer is "
                "(<equation>).\" where <equation> uses only numbers from the problem and + - * /.",
    "numeric": "Answer the question with a number. Think step by step in one or two short sentences, then "
               "finish with \"So the answer is <number>.\" where <number> is a plain number (digits only, "
               "no units).",
}

# --rationalize (STaR's rationalization; Magister et al.; SCOTT): the gold answer is shown with each question and
# the teacher explains it. Per answer kind: the instruction, and the hint put after every input (exemplars too).
RATIONALIZE_INSTRUCTIONS = {
    "classification": "The correct answer is given after each question. Explain in one or two short sentences "
                      "why it is correct, then finish with \"So the answer is <label>.\" where <label> is one of: "
                      "{labels}.",
    "multiple_choice": "The correct answer is given after each multiple-choice question. Explain in one or two "
                       "short sentences why it is the best choice, then finish with \"So the answer is (<letter>) "
                       "<choice>.\"",
    "equation": "The correct answer is given after each math word problem. Explain step by step how to get it from "
                "the numbers in the problem, then finish with \"So the answer is (<equation>).\" where <equation> uses "
                "only numbers from the problem and + - * /.",
}
RATIONALIZE_HINTS = {
    "classification": "(The correct answer is {answer}. Explain why.)",
    "multiple_choice": "(The correct answer is {answer}. Explain why.)",
    "equation": "(The correct answer is {answer}. Explain how to get it.)",
}


def hint_answer(kind: str, answer: str) -> str:
    """The answer as a hint shows it: an equation task shows its value (``( 84.0 / 2.0 )`` -> ``42``), so the
    teacher still writes the equation; other kinds show the answer as the exemplars write it."""
    if kind != "equation":
        return answer
    from stepdistill.safe_math import try_eval

    value = try_eval(answer)
    if value is None:
        return answer
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Exemplar:
    input: str
    rationale: str
    answer: str  # the text after "So the answer is"


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt for one input: ``text`` for completion endpoints, ``messages`` for chat."""

    text: str
    messages: tuple[Mapping[str, str], ...]


@dataclass(frozen=True)
class PromptTemplate:
    task: str
    instruction: str
    exemplars: tuple[Exemplar, ...]
    source: str  # where the exemplars came from
    rationalize: bool = False  # the gold answer is shown after each input (extract --rationalize)
    kind: str = "classification"  # the task's answer kind (picks the rationalize hint)

    def hint(self, answer: str) -> str:
        """The line after an input in rationalize mode ('' otherwise)."""
        if not self.rationalize:
            return ""
        hint = RATIONALIZE_HINTS.get(self.kind, RATIONALIZE_HINTS["classification"])
        return "\n" + hint.format(answer=hint_answer(self.kind, answer))

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop sequences for completion mode: the model starting the next exemplar."""
        return ("\nQ:", "\n\nQ:")

    def header(self) -> str:
        blocks = [f"Q: {e.input}{self.hint(e.answer)}\nA: {e.rationale} {ANSWER_PREFIX} {e.answer}.\n\n"
                  for e in self.exemplars]
        return self.instruction + "\n\n" + "".join(blocks)

    def render(self, input_text: str, answer: str | None = None) -> Prompt:
        """The prompt for one input; in rationalize mode ``answer`` (the gold answer, as ``display_answer``
        writes it) is shown after it."""
        if self.rationalize and not answer:
            raise ValueError("a rationalize prompt needs the gold answer")
        query = input_text + (self.hint(answer) if self.rationalize else "")
        text = self.header() + f"Q: {query}\nA:"
        messages: list[dict[str, str]] = [{"role": "system", "content": self.instruction}]
        for e in self.exemplars:
            messages.append({"role": "user", "content": e.input + self.hint(e.answer)})
            messages.append({"role": "assistant", "content": f"{e.rationale} {ANSWER_PREFIX} {e.answer}."})
        messages.append({"role": "user", "content": query})
        return Prompt(text=text, messages=tuple(messages))

    def text(self, mode: str = "completion") -> str:
        """The full template (version, mode, header and query format) as recorded with the outputs; in chat
        mode the instruction is the system turn and each exemplar a user/assistant pair."""
        query = "Q: {input}" + (self.hint("{answer}") if self.rationalize else "") + "\nA:"
        return f"[{PROMPT_VERSION}; {mode}{'; rationalize' if self.rationalize else ''}]\n" + self.header() + query

    def hash_for(self, mode: str = "completion") -> str:
        return hashlib.sha256(self.text(mode).encode("utf-8")).hexdigest()[:16]

    @property
    def hash(self) -> str:
        return self.hash_for("completion")


def display_answer(task: Task, label: str, row: Mapping[str, Any]) -> str:
    """How an exemplar's answer is written: ``(c) choice`` for multiple choice, else the label."""
    if task.answer.kind == "multiple_choice":
        choices = task.answer.choices(row)
        lowered = [c.strip().lower() for c in choices]
        if label.strip().lower() in lowered:
            i = lowered.index(label.strip().lower())
            return f"({LETTERS[i]}) {choices[i]}"
    return label


def builtin_exemplars_path(task_name: str) -> Path | None:
    ref = resources.files("stepdistill.teacher") / "exemplars" / f"{task_name}.jsonl"
    return Path(str(ref)) if ref.is_file() else None


def load_exemplars(task: Task, path: str | Path | None = None) -> tuple[tuple[Exemplar, ...], str]:
    """Exemplars from ``path``, else the task's ``exemplars`` file, else the built-in file; none (a
    zero-shot prompt) for a custom task without exemplars."""
    chosen = path or task.exemplars or builtin_exemplars_path(task.name)
    if chosen is None:
        return (), "none (zero-shot)"
    out = []
    for lineno, row in read_jsonl(chosen):
        where = f"{chosen}:{lineno}"
        for key in ("rationale", "label"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"{where}: exemplar needs a non-empty string '{key}'")
        if isinstance(row.get("input"), str):
            text = row["input"].strip()
        else:
            try:
                text = task.format_input(row)
            except KeyError as exc:
                raise DataError(f"{where}: exemplar has no 'input' and lacks field {exc.args[0]!r} "
                                f"needed by the task template") from None
        if task.answer.normalize(row["label"], row) is None:
            raise DataError(f"{where}: exemplar label {row['label']!r} is not a valid answer for task '{task.name}'")
        answer = row.get("answer") or display_answer(task, row["label"].strip(), row)
        out.append(Exemplar(input=text, rationale=row["rationale"].strip().rstrip(), answer=str(answer).rstrip(".")))
    if not out:
        raise DataError(f"{chosen}: no exemplars")
    return tuple(out), str(chosen)


def build_template(task: Task, exemplars_path: str | Path | None = None, rationalize: bool = False) -> PromptTemplate:
    """The task's few-shot prompt; ``rationalize``: the variant that shows the gold answer (its own hash)."""
    exemplars, source = load_exemplars(task, exemplars_path)
    kind = task.answer.kind
    table = RATIONALIZE_INSTRUCTIONS if rationalize else INSTRUCTIONS
    instruction = table.get(kind, table["classification"])
    if kind == "classification":
        instruction = instruction.format(labels=", ".join(task.answer.labels))
    return PromptTemplate(task=task.name, instruction=instruction, exemplars=exemplars, source=source,
                          rationalize=rationalize, kind=kind)


def template_record(template: PromptTemplate) -> str:
    return json.dumps({"task": template.task, "hash": template.hash, "source": template.source,
                       "text": template.text()}, ensure_ascii=False)
