"""The paper's four benchmark tasks, registered exactly as a plugin task would be."""

from __future__ import annotations

from stepdistill.tasks.answers import Classification, Equation, MultipleChoice
from stepdistill.tasks.core import Task

NLI_LABELS = ("entailment", "neutral", "contradiction")
NLI_TEMPLATE = "Premise: {premise}\nHypothesis: {hypothesis}"
PALM_TEACHER = "PaLM-540B released outputs (google-research/distilling-step-by-step)"
NO_TRAIN = (
    "train inputs are not available in the data bundle (only PaLM outputs without inputs), so the "
    "valid split is the training pool (10% of it held out for validation); test is the real test split"
)

ESNLI = Task(
    name="esnli",
    description="e-SNLI natural language inference (premise + hypothesis -> entailment/neutral/contradiction)",
    answer=Classification(NLI_LABELS),
    template=NLI_TEMPLATE,
    files={"pool": "valid.jsonl", "test": "test.jsonl"},
    required_fields=("premise", "hypothesis"),
    notes=NO_TRAIN,
    license="e-SNLI: MIT (SNLI: check its own terms)",
    teacher=PALM_TEACHER,
)

ANLI1 = Task(
    name="anli1",
    description="Adversarial NLI round 1 (premise + hypothesis -> entailment/neutral/contradiction)",
    answer=Classification(NLI_LABELS),
    template=NLI_TEMPLATE,
    files={"pool": "valid.jsonl", "test": "test.jsonl"},
    required_fields=("premise", "hypothesis"),
    notes=NO_TRAIN + "; ANLI is CC BY-NC 4.0 (non-commercial use only)",
    license="ANLI: CC BY-NC 4.0 (non-commercial)",
    teacher=PALM_TEACHER,
)

CQA = Task(
    name="cqa",
    description="CommonsenseQA v1.11 with CoS-E (question + 5 lettered choices -> choice text)",
    answer=MultipleChoice("choices"),
    template="{question}\nAnswer Choices:\n{choices}",
    files={"pool": "train.jsonl", "test": "test.jsonl"},
    required_fields=("question", "choices"),
    notes="pool: train (10% held out for validation, seed 0); test = CQA v1.11 validation",
    license="CoS-E: BSD-3-Clause (CommonsenseQA: check its own terms)",
    teacher=PALM_TEACHER,
)

SVAMP = Task(
    name="svamp",
    description="SVAMP arithmetic word problems (body + question -> equation, scored by value)",
    answer=Equation(),
    template="{body}\n{question}",
    files={"pool": "train.jsonl", "test": "test.jsonl"},
    required_fields=("body", "question"),
    notes="pool: train 800 (10% held out for validation, seed 0); test 200",
    license="SVAMP: MIT",
    teacher=PALM_TEACHER,
)

BUILTIN_TASKS = (ESNLI, ANLI1, CQA, SVAMP)
