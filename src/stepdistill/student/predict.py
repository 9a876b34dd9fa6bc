"""Label-only (and optionally explained) prediction with a trained student.

    from stepdistill.student import Student
    student = Student.load("runs/svamp-dsbs-gold-s42")
    student.predict([{"body": "...", "question": "..."}], explain=True)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from stepdistill.errors import StepdistillError
from stepdistill.student.views import layout_of_format, prompt_ids, split_single_task, target_ids

META_FILE = "stepdistill.json"


def find_model_dir(path: str | Path) -> Path:
    """A run directory (its ``model/``) or a model directory holding ``stepdistill.json``."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / META_FILE).is_file():
            return candidate
    raise StepdistillError(f"{path} is neither a run directory with model/ nor a stepdistill model directory "
                           f"(no {META_FILE}); train one with `stepdistill train CONFIG`")


def padded_batches(prompts: list[list[int]], batch_size: int, pad: int, left: bool):
    """Token-id prompts in batches of similar length: yields (positions in ``prompts``, ids, attention mask), the
    ids padded with ``pad`` on the left (causal models continue from the prompt's end) or on the right."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            span = slice(width - len(prompts[i]), width) if left else slice(0, len(prompts[i]))
            ids[row, span] = torch.tensor(prompts[i])
            mask[row, span] = 1
        yield idx, ids, mask


def decode_until_eos(tokenizer, tokens: list[int]) -> str:
    eos = tokenizer.eos_token_id
    return tokenizer.decode(tokens[: tokens.index(eos)] if eos in tokens else tokens, skip_special_tokens=True).strip()


def generate(model, tokenizer, family: str, prompts: list[list[int]], max_new_tokens: int,
             batch_size: int) -> list[str]:
    """Greedy generation for token-id prompts, batched by length; returns decoded continuations."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    out: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for idx, ids, mask in padded_batches(prompts, batch_size, pad, left=family == "causal"):
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=pad, eos_token_id=eos)
            new = gen[:, ids.shape[1]:] if family == "causal" else gen
            for row, i in enumerate(idx):
                out[i] = decode_until_eos(tokenizer, new[row].tolist())
    model.train(was_training)
    return out


class Student:
    """A trained student: ``Student.load(run_or_model_dir).predict(inputs, explain=False)``."""

    def __init__(self, model, tokenizer, meta: Mapping[str, Any], task=None):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = dict(meta)
        self.family = meta["family"]
        self.method = meta["method"]
        try:
            self.layout = layout_of_format(meta.get("prompt_format", 1))
        except ValueError as exc:
            raise StepdistillError(str(exc)) from None
        if task is None:
            from stepdistill.tasks import get_task

            task = get_task(meta.get("task_spec") or meta["task"])
        self.task = task

    @classmethod
    def load(cls, path: str | Path, dtype: str = "float32", device: str | None = None) -> "Student":
        """``device``: where the model runs; default the GPU where torch sees one (evaluation after GPU training
        runs there too), else the CPU. Prediction and label scoring follow the model's device."""
        from stepdistill.student.models import load_pretrained

        model_dir = find_model_dir(path)
        meta = json.loads((model_dir / META_FILE).read_text())
        try:
            layout_of_format(meta.get("prompt_format"))
        except ValueError as exc:
            raise StepdistillError(f"{model_dir}: {exc}") from None
        model, tok = load_pretrained(meta["family"], str(model_dir), dtype)
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        return cls(model, tok, meta)

    def _prompts(self, view: str, texts: list[str], max_input_tokens: int) -> list[list[int]]:
        """Prompt ids of ``view`` ("label" or "rationale") in the layout the student was trained with."""
        return [prompt_ids(self.tokenizer, self.family, view, t, max_input_tokens, self.layout) for t in texts]

    def generate(self, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[str]:
        """Greedy continuations of token-id prompts, decoded up to eos. Engines (``serve/engines.py``) that
        run the model elsewhere override this; everything else (prompts, label parsing) stays here."""
        return generate(self.model, self.tokenizer, self.family, prompts, max_new_tokens, batch_size)

    @property
    def can_explain(self) -> bool:
        return self.method in ("dsbs", "single_task")

    def _text_and_row(self, item: str | Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        """The task's one input rule (``Task.read_input``): an object of fields goes through the template, a
        string is the formatted input."""
        return self.task.read_input(item)

    def candidates(self, row: Mapping[str, Any]) -> list[str]:
        """The closed label set of a classification task, or the row's choices of a multiple-choice task."""
        answer = self.task.answer
        if answer.kind == "classification":
            return list(answer.labels)
        if answer.kind == "multiple_choice":
            return answer.choices(row)
        raise StepdistillError(f"label scoring needs a classification or multiple-choice task; '{self.task.name}' "
                               f"has {answer.kind} answers (use eval.label_scoring=generate)")

    def label_scoring(self, scoring: str | None = None) -> str:
        """How :meth:`predict` will pick labels, generate or score: ``scoring`` if given (checked: it must
        apply to this student), else the student's own setting (``eval.label_scoring`` at training time), else
        generate. A single_task student always generates (its label follows its rationale)."""
        if scoring == "score" and self.method == "single_task":
            raise StepdistillError("a single_task student writes its rationale before the label, so its label "
                                   "cannot be scored alone (use scoring='generate')")
        if scoring == "score" and self.task.answer.kind not in ("classification", "multiple_choice"):
            self.candidates({})  # raises, naming the task's answer kind
        scoring = scoring or self.meta.get("label_scoring") or "generate"
        if scoring not in ("generate", "score"):
            raise StepdistillError(f"label scoring must be generate or score, got '{scoring}'")
        return "generate" if self.method == "single_task" else scoring

    def score_labels(self, inputs: Sequence[str | Mapping[str, Any]], batch_size: int = 16) -> list[dict]:
        """Label-only prediction without generation: one forward per batch scores every candidate label
        (sum of its target tokens' log-probabilities, end-of-sequence included, as trained) and picks the best.
        Causal students hold the prompt once per row with each candidate in its own segment (block attention
        mask, positions restarting after the prompt, as in ``student/shared.py``). One dict per input:
        ``label``, ``raw`` (the chosen candidate) and ``scores`` (candidate -> log-probability)."""
        pairs = [self._text_and_row(x) for x in inputs]
        cands = [self.candidates(row) for _, row in pairs]
        for (text, _), c in zip(pairs, cands):
            if not c:
                raise StepdistillError(f"no label candidates for input {text[:60]!r} (its choices are missing)")
        max_in = int(self.meta.get("max_input_tokens", 256))
        max_label = int(self.meta.get("max_label_tokens", 32))
        prompts = self._prompts("label", [t for t, _ in pairs], max_in)
        targets = [[target_ids(self.tokenizer, self.family, c, max_label) for c in cs] for cs in cands]
        scorer = _score_causal if self.family == "causal" else _score_seq2seq
        scores: list[list[float]] = [[] for _ in pairs]
        order = sorted(range(len(pairs)), key=lambda i: len(prompts[i]) + sum(map(len, targets[i])))
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                for i, s in zip(idx, scorer(self.model, self.tokenizer, [prompts[i] for i in idx],
                                             [targets[i] for i in idx])):
                    scores[i] = s
        self.model.train(was_training)
        results = []
        for (_, row), cs, s in zip(pairs, cands, scores):
            best = max(range(len(cs)), key=lambda j: s[j])
            results.append({"label": self.task.answer.normalize(cs[best], row), "raw": cs[best],
                            "scores": dict(zip(cs, s))})
        return results

    def predict(self, inputs: Sequence[str | Mapping[str, Any]], explain: bool = False, batch_size: int = 16,
                max_new_tokens: int | None = None, scoring: str | None = None) -> list[dict]:
        """One dict per input: ``label`` (canonical, or None when the output is not a valid answer),
        ``raw`` (the generated answer text) and, with ``explain``, ``rationale``. ``scoring="score"`` picks
        the label by :meth:`score_labels` (classification and multiple-choice tasks) instead of generating it;
        None = the model's ``label_scoring`` setting (``eval.label_scoring`` at training time), else generate."""
        if explain and not self.can_explain:
            raise StepdistillError(f"this student was trained with method '{self.method}', without rationales; "
                                   "explanations need a dsbs or single_task student")
        if self.label_scoring(scoring) == "score":
            results = self.score_labels(inputs, batch_size=batch_size)
            for res in results:
                res.pop("scores")
            if explain:
                texts = [self._text_and_row(x)[0] for x in inputs]
                max_in = int(self.meta.get("max_input_tokens", 256))
                prompts = self._prompts("rationale", texts, max_in)
                for res, text in zip(results, self.generate(prompts,
                                                       int(self.meta.get("max_rationale_tokens", 128)), batch_size)):
                    res["rationale"] = text
            return results
        pairs = [self._text_and_row(x) for x in inputs]
        max_in = int(self.meta.get("max_input_tokens", 256))
        label_budget = max_new_tokens or int(self.meta.get("max_new_tokens") or self.task.max_new_tokens())
        rationale_budget = int(self.meta.get("max_rationale_tokens", 128))
        results = [{} for _ in pairs]
        if self.method == "single_task":
            prompts = self._prompts("rationale", [t for t, _ in pairs], max_in)
            texts = self.generate(prompts, rationale_budget + label_budget,
                             batch_size)
            for res, text in zip(results, texts):
                rationale, answer = split_single_task(text)
                res.update(raw=answer if answer is not None else text, rationale=rationale, _answer=answer)
        else:
            prompts = self._prompts("label", [t for t, _ in pairs], max_in)
            texts = self.generate(prompts, label_budget, batch_size)
            for res, text in zip(results, texts):
                res.update(raw=text.split("\n")[0].strip(), _answer=text.split("\n")[0].strip())
            if explain:
                prompts = self._prompts("rationale", [t for t, _ in pairs], max_in)
                for res, text in zip(results, self.generate(prompts,
                                                       rationale_budget, batch_size)):
                    res["rationale"] = text
        for res, (_, row) in zip(results, pairs):
            answer = res.pop("_answer")
            res["label"] = None if answer is None else self.task.answer.normalize(answer, row)
            if not explain:
                res.pop("rationale", None)
        return results


def _score_causal(model, tokenizer, prompts: list[list[int]], targets: list[list[list[int]]]) -> list[list[float]]:
    """Log-probability of each candidate target after its prompt: one row per prompt, candidates as segments."""
    from stepdistill.student.shared import block_mask

    rows, segs, poss, picks = [], [], [], []  # picks: per row, per candidate, (source position, token) pairs
    for prompt, cands in zip(prompts, targets):
        p = len(prompt)
        ids, seg, pos, row_picks = list(prompt), [0] * p, list(range(p)), []
        for j, tgt in enumerate(cands, start=1):
            start = len(ids)
            ids += tgt
            seg += [j] * len(tgt)
            pos += list(range(p, p + len(tgt)))
            # the first candidate token is predicted from the last prompt token, the rest from their predecessor
            row_picks.append([(p - 1 if k == 0 else start + k - 1, t) for k, t in enumerate(tgt)])
        rows.append(ids), segs.append(seg), poss.append(pos), picks.append(row_picks)
    width = max(map(len, rows))
    b = len(rows)
    ids_t = torch.full((b, width), tokenizer.pad_token_id, dtype=torch.long)
    seg_t = torch.zeros((b, width), dtype=torch.long)
    pos_t = torch.zeros((b, width), dtype=torch.long)
    valid = torch.zeros((b, width), dtype=torch.long)
    for i, (ids, seg, pos) in enumerate(zip(rows, segs, poss)):
        ids_t[i, :len(ids)], seg_t[i, :len(ids)] = torch.tensor(ids), torch.tensor(seg)
        pos_t[i, :len(ids)], valid[i, :len(ids)] = torch.tensor(pos), 1
    device = next(model.parameters()).device
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, inner.base_model_prefix)
    mask = block_mask(seg_t, valid, next(model.parameters()).dtype)
    hidden = backbone(input_ids=ids_t.to(device), attention_mask=mask.to(device),
                      position_ids=pos_t.to(device)).last_hidden_state
    flat = [(i, src, tok) for i, row in enumerate(picks) for cand in row for src, tok in cand]
    rows_i = torch.tensor([f[0] for f in flat], device=device)
    src_i = torch.tensor([f[1] for f in flat], device=device)
    tok_i = torch.tensor([f[2] for f in flat], device=device)
    logp = torch.log_softmax(inner.get_output_embeddings()(hidden[rows_i, src_i]).float(), -1)
    token_lp = logp.gather(1, tok_i[:, None])[:, 0].tolist()
    out, k = [], 0
    for row in picks:
        scores = []
        for cand in row:
            scores.append(float(sum(token_lp[k:k + len(cand)])))
            k += len(cand)
        out.append(scores)
    return out


def _score_seq2seq(model, tokenizer, prompts: list[list[int]], targets: list[list[list[int]]]) -> list[list[float]]:
    """Seq2seq: the encoder input repeated per candidate, all candidates in one forward."""
    enc = [p for p, cands in zip(prompts, targets) for _ in cands]
    dec = [t for cands in targets for t in cands]
    b, w, lw = len(enc), max(map(len, enc)), max(map(len, dec))
    ids = torch.full((b, w), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((b, w), dtype=torch.long)
    labels = torch.full((b, lw), -100, dtype=torch.long)
    for i, (e, d) in enumerate(zip(enc, dec)):
        ids[i, :len(e)], mask[i, :len(e)], labels[i, :len(d)] = torch.tensor(e), 1, torch.tensor(d)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).logits
    logp = torch.log_softmax(logits.float(), -1)
    keep = labels.to(device) != -100
    token_lp = logp.gather(2, labels.clamp(min=0).to(device)[..., None])[..., 0] * keep
    flat = token_lp.sum(1).tolist()
    out, k = [], 0
    for cands in targets:
        out.append(flat[k:k + len(cands)])
        k += len(cands)
    return out
