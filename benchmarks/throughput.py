"""Training-step throughput of the student vs the official implementation's step, and prediction speed.

    # the headline: every variant trains on the same 64 SVAMP rows per round (SmolLM2-135M, batch 8, ~20 min)
    python benchmarks/throughput.py --same-examples 64 --warmup 1 --steps 3 --skip-predict
    python benchmarks/throughput.py                      # older mode: one batch per variant per round
    python benchmarks/throughput.py --student tiny-random-llama --same-examples 16 --steps 1 --skip-predict \
        --out /tmp/t.json                                # smoke run

Writes benchmarks/results/throughput.json. With ``--same-examples N`` (section ``training_same_examples``),
each round every variant trains one pass over the same N rows, batched as its own training would batch
them, so length grouping is credited only with the padding it really saves on those rows. Without it, every
variant takes its training step (forward, backward, clip,
AdamW step) on the same batches, interleaved round by round in one process, after warm-up rounds; the
speed-up is the median over rounds of (reference seconds / variant seconds) on the same batch, which keeps
the ratio honest on a shared, noisy machine. Loss equality is checked on the first batch before any step,
with gradients for the default path. FLOP counts are estimates of the matmul work each variant executes
(padding included): 2 (forward) + 2 (input gradients) + 2 (weight gradients, when trained) FLOPs per weight
per token, the same for the logits of each position where they are computed, plus attention scores.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import git_commit  # noqa: E402
from reference_step import reference_loss, task_prefix_batches  # noqa: E402

from stepdistill.config import load_config  # noqa: E402
from stepdistill.student.data import build_training_data  # noqa: E402
from stepdistill.student.losses import LABEL_TASK, RATIONALE_TASK  # noqa: E402
from stepdistill.student.models import load_pretrained  # noqa: E402
from stepdistill.student.shared import SharedInputLoss, collate_shared  # noqa: E402
from stepdistill.student.train import StudentWithLoss, machine_info, make_optimizer  # noqa: E402
from stepdistill.student.views import collate, epoch_batches  # noqa: E402
from stepdistill.tasks import get_task, load_splits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ALPHA = 0.5


def upgrade_legacy(result: dict) -> dict:
    """Files written before each section named its machine held one file-wide cpu/cpu_count/torch: move them
    into the sections measured then, so a section added later on another machine does not inherit them."""
    legacy = {k: result.pop(k) for k in ("cpu", "cpu_count", "torch") if k in result}
    for section in result.values():
        if legacy and isinstance(section, dict) and "git_commit" in section and "machine" not in section:
            section["machine"] = legacy
    return result


def matmul_peak(threads: int, n: int = 2048, dtype=torch.float32, reps: int = 5, device="cpu",
                budget_s: float = 0.5) -> float:
    """Best-of-``reps`` FLOP/s of an n x n @ n x n matmul at ``threads`` threads (on ``device``; a GPU
    gets n = 8192, since 2048 would not fill it). On a CPU a 256 probe first shrinks n so that one matmul takes
    about ``budget_s`` at most: bf16 on a CPU without bf16 units runs at a few GFLOP/s, where a 2048 matmul took
    minutes for the whole measurement."""
    device = torch.device(device)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    if device.type == "cuda":
        n = 8192
    else:
        probe = torch.randn(256, 256, dtype=dtype)
        probe @ probe
        t0 = now(device)
        probe @ probe
        rate = 2 * 256 ** 3 / max(now(device) - t0, 1e-9)
        n = min(n, max(256, int((budget_s * rate / 2) ** (1 / 3)) // 64 * 64))
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = now(device)
        a @ b
        best = min(best, now(device) - t0)
    torch.set_num_threads(old)
    return 2 * n ** 3 / best


def now(device) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` is done (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class Bench:
    """The model, data and batches every variant shares."""

    def __init__(self, args):
        self.args = args
        task = get_task(args.task)
        cfg_path = REPO / "configs" / f"{args.task}-smollm2.yaml"
        self.cfg = load_config(cfg_path, [f"student.name={args.student}"])
        splits = load_splits(task, args.data_dir or self.cfg.data.data_dir, seed=self.cfg.train.seed, with_test=False)
        torch.manual_seed(0)
        self.device = torch.device(getattr(args, "device", "cpu"))
        self.model, self.tok = load_pretrained("causal", args.student)
        self.model.to(self.device).train()
        data = build_training_data(self.cfg, task, splits.train, self.tok)
        # examples with both views (the official code has a rationale for every row)
        keep = [i for i, ids in enumerate(data.by_example) if len(ids) == 2]
        self.examples = [data.examples[i] for i in keep]
        self.features = [[data.features[f] for f in data.by_example[i]] for i in keep]
        lengths = [sum(len(f.input_ids) for f in fs) for fs in self.features]
        rounds = args.warmup + args.steps
        self.random_batches = epoch_batches(len(keep), lengths, args.batch_size, 0, 0, False)[:rounds]
        self.grouped_batches = epoch_batches(len(keep), lengths, args.batch_size, 0, 0, True)[:rounds]
        # the same examples in the suffix layout, built as `stepdistill train` builds them: two views per example
        # (for the reference step on those prompts) and the shared-input row
        suffix = build_training_data(self.cfg.with_overrides(["student.prompt_layout=suffix"]), task, splits.train,
                                     self.tok)
        self.suffix = [[suffix.features[f] for f in suffix.by_example[i]] for i in keep]
        self.shared = [suffix.shared[i] for i in keep]
        self.epoch_padding = {
            "random": padding_stats(self.features, self.shared,
                                    epoch_batches(len(keep), lengths, args.batch_size, 0, 0, False)),
            "length_grouped": padding_stats(self.features, self.shared,
                                            epoch_batches(len(keep), lengths, args.batch_size, 0, 0, True)),
        }
        # fused AdamW everywhere: the HF Trainer's default optimiser (adamw_torch_fused for torch >= 2.8), and
        # stepdistill's (make_optimizer); optimiser_timing() reports the per-tensor loop beside it
        self.optimizer = make_optimizer(list(self.model.parameters()), 1e-5, 0.0)
        subset = list(range(len(keep)))
        random.Random(0).shuffle(subset)
        self.subset = subset[:args.same_examples]  # the examples every variant trains on per round (see rounds)
        cfgm = self.model.config
        self.hidden, self.vocab, self.layers = cfgm.hidden_size, cfgm.vocab_size, cfgm.num_hidden_layers
        emb = self.model.get_input_embeddings().weight
        self.linear_params = sum(p.numel() for p in self.model.parameters() if p.dim() == 2 and p is not emb)
        self.total_params = sum(p.numel() for p in self.model.parameters())
        self._lora = None

    def put(self, x):
        """A collated batch (a dict of tensors, a dict of such dicts, or a list of them) on the bench's device."""
        if isinstance(x, torch.Tensor):
            return x.to(self.device)
        if isinstance(x, dict):
            return {k: self.put(v) for k, v in x.items()}
        return [self.put(v) for v in x]

    def now(self) -> float:
        return now(self.device)

    def round_batches(self, layout: str, grouped: bool, r: int) -> list[list[int]]:
        """Batches covering ``self.subset`` once, as training would form them in epoch ``r``: random (the
        official collator's order) or length-grouped by the variant's own row lengths."""
        if layout == "suffix":
            lengths = [len(self.shared[e].input_ids) for e in self.subset]
        else:
            lengths = [sum(len(f.input_ids) for f in self.features[e]) for e in self.subset]
        order = epoch_batches(len(self.subset), lengths, self.args.batch_size, 0, r, grouped)
        return [[self.subset[i] for i in b] for b in order]

    def lora_model(self):
        if self._lora is None:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(copy.deepcopy(self.model), LoraConfig(
                r=self.args.lora_r, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
            model.train()
            opt = make_optimizer([p for p in model.parameters() if p.requires_grad], 1e-5, 0.0)
            self._lora = (model, opt)
        return self._lora


def padding_stats(features, shared, batches) -> dict:
    """Tokens processed per example (padding included) by the concatenated pass, the two-pass reference and
    the shared-input pass over one epoch of ``batches``."""
    real = concat = two = sh = 0
    for b in batches:
        sh += len(b) * max(len(shared[e].input_ids) for e in b)
        feats = [f for e in b for f in features[e]]
        real += sum(len(f.input_ids) for f in feats)
        concat += len(feats) * max(len(f.input_ids) for f in feats)
        for task in (LABEL_TASK, RATIONALE_TASK):
            fs = [f for f in feats if f.task == task]
            if fs:
                two += len(fs) * max(len(f.input_ids) for f in fs)
    n = sum(len(b) for b in batches)
    return {"examples": n, "real_tokens_per_example": round(real / n, 1),
            "concat_pass_tokens_per_example": round(concat / n, 1),
            "two_pass_tokens_per_example": round(two / n, 1),
            "shared_pass_tokens_per_example": round(sh / n, 1)}


def epoch_estimate(bench: Bench) -> dict:
    """Estimated training FLOPs per example over one whole epoch (all batches, padding included): the
    reference on random batches vs the shared-input pass on length-grouped batches. Unlike the timed grouped
    variants (whose first batches are other examples than the reference's), this compares the same data."""
    n = len(bench.features)
    lengths = [sum(len(f.input_ids) for f in fs) for fs in bench.features]
    out = {}
    for grouped in (False, True):
        batches = epoch_batches(n, lengths, bench.args.batch_size, 0, 0, grouped)
        ref = sh = sp = 0.0
        for b in batches:
            feats = [f for e in b for f in bench.features[e]]
            rows = []
            for task in (LABEL_TASK, RATIONALE_TASK):
                fs = [f for f in feats if f.task == task]
                rows.append((len(fs), max(len(f.input_ids) for f in fs)))
            targets = sum(sum(x != -100 for x in f.labels) for f in feats)
            ref += flops(bench, rows, sum(r * t for r, t in rows), True, True)
            sp += flops(bench, rows, targets, True, True)
            srow = [(len(b), max(len(bench.shared[e].input_ids) for e in b))]
            sh += flops(bench, srow, targets, True, True)
        tag = "length_grouped" if grouped else "random"
        out[f"reference_{tag}_gflop_per_example"] = round(ref / n / 1e9, 2)
        out[f"split_views_{tag}_gflop_per_example"] = round(sp / n / 1e9, 2)
        out[f"shared_{tag}_gflop_per_example"] = round(sh / n / 1e9, 2)
    r = out["reference_random_gflop_per_example"]
    out["flop_ratio_reference_random_over_shared_grouped"] = round(
        r / out["shared_length_grouped_gflop_per_example"], 2)
    out["flop_ratio_reference_random_over_split_grouped"] = round(
        r / out["split_views_length_grouped_gflop_per_example"], 2)
    return out


def flops(bench: Bench, rows: list[tuple[int, int]], logit_rows: int, train_linear: bool, train_head: bool) -> float:
    """Estimated matmul FLOPs of one training step. ``rows``: (batch, padded width) of each forward."""
    h = bench.hidden
    tokens = sum(b * t for b, t in rows)
    lin = (4 + 2 * train_linear) * bench.linear_params * tokens
    head = (4 + 2 * train_head) * h * bench.vocab * logit_rows
    attn = 3 * 4 * bench.layers * h * sum(b * t * t for b, t in rows)  # QK^T and AV, forward + backward
    return lin + head + attn


# ---- variants: each returns (inputs builder, loss fn, step fn, flop counter) --------------------------

def precision(bf16: bool, device_type: str = "cpu"):
    """bf16 autocast (what train.mixed_precision=bf16 does) or plain float32."""
    return torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else torch.autocast(device_type, enabled=False)


def _step(loss, params, optimizer):
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def make_variants(bench: Bench) -> dict:
    m, pad = bench.model, bench.tok.pad_token_id

    def feats(batch):
        return [f for e in batch for f in bench.features[e]]

    def n_targets(labels):
        return int((labels[:, 1:] != -100).sum())

    def reference(views=bench.features):  # bench.suffix: the same step on suffix-layout prompts
        def build(batch):
            return bench.put(task_prefix_batches([f for e in batch for f in views[e]], pad))

        def loss(x):
            return reference_loss(m, x, ALPHA)

        def count(x):
            rows = [tuple(v["input_ids"].shape) for v in x.values()]
            return flops(bench, rows, sum(b * t for b, t in rows), True, True), rows
        return build, loss, count

    def split_target_only():  # two passes, logits at target positions only
        wrapper = StudentWithLoss(m, "causal", ALPHA)

        def build(batch):
            fs = feats(batch)
            return bench.put([collate([f for f in fs if f.task == t], pad, "causal")
                              for t in (LABEL_TASK, RATIONALE_TASK)])

        def loss(x):
            a, b = wrapper(**x[0]), wrapper(**x[1])
            return {"loss": ALPHA * a["loss"] + (1 - ALPHA) * b["loss"], "label_loss": a["label_loss"],
                    "rationale_loss": b["rationale_loss"]}

        def count(x):
            rows = [tuple(v["input_ids"].shape) for v in x]
            return flops(bench, rows, sum(n_targets(v["labels"]) for v in x), True, True), rows
        return build, loss, count

    def ours(target_only=True, grouped=False, freeze=False, threads=None, lora=False, bf16=False, split=False):
        model = bench.lora_model()[0] if lora else m
        wrapper = StudentWithLoss(model, "causal", ALPHA, target_logits_only=target_only, split_views=split)

        def build(batch):
            return bench.put(collate(feats(batch), pad, "causal"))

        def loss(x):
            with precision(bf16, bench.device.type):
                return wrapper(**x)

        def count(x):
            rows = [tuple(x["input_ids"].shape)]
            if split:
                rows = []
                for t in x["task"].unique().tolist():
                    r = x["task"] == t
                    rows.append((int(r.sum()), int(x["attention_mask"][r].sum(1).max())))
            logit_rows = n_targets(x["labels"]) if target_only else rows[0][0] * rows[0][1]
            return flops(bench, rows, logit_rows, not lora, not (lora or freeze)), rows
        return build, loss, count

    def shared(lora=False, bf16=False, freeze=False, compile=False):
        wrapper = SharedInputLoss(bench.lora_model()[0] if lora else m, ALPHA)
        if compile:  # as train.compile does it; compiles on its first call (the equality check)
            wrapper = torch.compile(wrapper, dynamic=True)

        def build(batch):
            return bench.put(collate_shared([bench.shared[e] for e in batch], pad))

        def loss(x):
            with precision(bf16, bench.device.type):
                return wrapper(**x)

        def count(x):
            rows = [tuple(x["input_ids"].shape)]
            return flops(bench, rows, n_targets(x["labels"]), not lora, not (lora or freeze)), rows
        return build, loss, count

    V = {
        "reference_suffix": dict(make=lambda: reference(bench.suffix), untimed=True, layout="suffix",
                                 note="the official step (two passes, full logits) on suffix-layout views; "
                                      "only for the loss/gradient check of the shared pass"),
        "ours_prefix": dict(make=lambda: ours(split=True), grouped=True,
                            note="stepdistill train, prefix layout (the paper's prompts): split views, length "
                                 "grouping, target-only logits, fused AdamW"),
        "ours_suffix": dict(make=shared, grouped=True, layout="suffix",
                            note="stepdistill train, student.prompt_layout=suffix: one shared-input pass per "
                                 "example (block mask), length grouping, target-only logits, fused AdamW; exact"),
        "ours_suffix+freeze_embeddings": dict(make=lambda: shared(freeze=True), grouped=True, layout="suffix",
                                              freeze=True, note="ours_suffix + student.freeze_embeddings (tied: "
                                                                "the LM head is frozen too; changes training)"),
        "ours_suffix+bf16": dict(make=lambda: shared(bf16=True), grouped=True, layout="suffix",
                                 note="ours_suffix + train.mixed_precision=bf16 (autocast; not bit-exact)"),
        "ours_suffix+compile": dict(make=lambda: shared(compile=True), grouped=True, layout="suffix",
                                    note="ours_suffix + train.compile (torch.compile, inductor, dynamic shapes; "
                                         "exact within float noise; compilation not timed: it happens in the "
                                         "equality check and the warm-up round)"),
        "ours_suffix+lora": dict(make=lambda: shared(lora=True), grouped=True, layout="suffix", lora=True,
                                 note=f"ours_suffix + student.lora_r={bench.args.lora_r} (changes training)"),
        "reference": dict(make=reference, note="official TaskPrefixTrainer step: two passes, full-vocabulary "
                          "logits everywhere, prefix layout"),
        "split+target_logits": dict(make=split_target_only, note="two passes, logits only at target positions"),
        "concat+full_logits": dict(make=lambda: ours(target_only=False), note="one concatenated pass (both views "
                                   "padded together), full logits"),
        "ours": dict(make=ours, note="StudentWithLoss default: one concatenated pass, target-only logits"),
        "ours+length_grouping": dict(make=lambda: ours(), grouped=True,
                                     note="ours on length-grouped batches (other examples; see epoch_padding)"),
        "ours+freeze_embeddings": dict(make=lambda: ours(freeze=True), freeze=True,
                                       note="student.freeze_embeddings (tied: the LM head is frozen too)"),
        "ours+lora": dict(make=lambda: ours(lora=True), lora=True,
                          note=f"student.lora_r={bench.args.lora_r}, all linear layers"),
        "ours+1_thread": dict(make=ours, threads=1, note="train.num_threads=1 (default: the --threads value)"),
        "ours+bf16_autocast": dict(make=lambda: ours(bf16=True), note="bf16 autocast (not exact; loss diff shown)"),
        "shared": dict(make=shared, note="shared-input single pass, suffix layout, block mask (student/shared.py; "
                       "benchmark only: trained models use the prefix layout)"),
        "shared+freeze_embeddings": dict(make=lambda: shared(freeze=True), freeze=True,
                                         note="shared-input pass + frozen embeddings"),
        "ours+split_views": dict(make=lambda: ours(split=True), note="train.split_views: one target-only "
                                 "forward per view, each padded to its own longest row (same layout and loss)"),
        "shared+length_grouping": dict(make=shared, grouped=True, note="shared-input pass on length-grouped "
                                       "batches"),
        "shared+length_grouping+lora": dict(make=lambda: shared(lora=True), grouped=True, lora=True,
                                            note="shared pass, length grouping, LoRA"),
        "shared+length_grouping+bf16_autocast": dict(make=lambda: shared(bf16=True), grouped=True,
                                                     note="shared pass, length grouping, bf16 autocast (not exact)"),
    }
    return V


def _grads(model) -> list:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _grad_match(a: list, b: list) -> dict:
    diff = max(float((x - y).abs().max()) for x, y in zip(a, b))
    rel = (sum(float((x - y).pow(2).sum()) for x, y in zip(a, b)) / sum(float(y.pow(2).sum()) for y in b)) ** 0.5
    return {"max_abs_diff": diff, "max_abs_grad": max(float(y.abs().max()) for y in b), "relative_l2_diff": rel}


def check_equality(bench: Bench, variants: dict, built: dict) -> dict:
    """Losses of every variant on batch 0 before any step, and the gradient match of ours vs reference."""
    m = bench.model
    batch = bench.random_batches[0]
    out = {"batch_examples": len(batch)}
    ref = None
    results = {}
    with torch.no_grad():
        for name, (build, loss, _) in built.items():
            if variants[name].get("grouped"):
                continue
            val = {k: float(v) for k, v in loss(build(batch)).items()}
            results[name] = val
    ref = results["reference"]
    for name, val in results.items():
        results[name] = {**{k: round(v, 6) for k, v in val.items()},
                         "abs_diff_vs_reference": {k: abs(val[k] - ref[k]) for k in val}}
    out["losses"] = results
    # the shared pass uses another layout: compare it with the two separate views of that layout
    if "shared" in built:
        wrapper = StudentWithLoss(m, "causal", ALPHA)
        with torch.no_grad():
            two = wrapper(**bench.put(collate([f for e in batch for f in bench.suffix[e]], bench.tok.pad_token_id,
                                              "causal")))
        two = {k: float(v) for k, v in two.items()}
        out["shared_vs_two_suffix_views"] = {k: abs(results["shared"][k] - two[k]) for k in two}
        out["suffix_layout_two_view_losses"] = {k: round(v, 6) for k, v in two.items()}
    # gradients: reference vs ours
    grads = {}
    for name in ("reference", "ours"):
        build, loss, _ = built[name]
        m.zero_grad(set_to_none=True)
        loss(build(batch))["loss"].backward()
        grads[name] = _grads(m)
    m.zero_grad(set_to_none=True)
    out["grad_ours_vs_reference"] = _grad_match(grads["ours"], grads["reference"])
    return out


def time_training(bench: Bench, names: list[str]) -> dict:
    args = bench.args
    variants = make_variants(bench)
    built = {n: variants[n]["make"]() for n in names}
    if bench.args.equality_json:  # reuse a saved check of the same code (saves CPU on a loaded machine)
        equality = json.loads(Path(bench.args.equality_json).read_text())
    else:
        equality = check_equality(bench, variants, built)
    print(json.dumps(equality, indent=1), flush=True)
    times = {n: [] for n in names}
    counts = {n: [] for n in names}
    losses = {n: [] for n in names}
    emb = bench.model.get_input_embeddings().weight
    rounds = args.warmup + args.steps
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate so no variant always runs first
        for name in order:
            spec = variants[name]
            build, loss_fn, count = built[name]
            batch = (bench.grouped_batches if spec.get("grouped") else bench.random_batches)[r]
            if spec.get("lora"):
                model, opt = bench.lora_model()
            else:
                model, opt = bench.model, bench.optimizer
            params = [p for p in model.parameters() if p.requires_grad]
            if spec.get("freeze"):
                emb.requires_grad_(False)
                params = [p for p in params if p is not emb]
            if spec.get("threads"):
                torch.set_num_threads(spec["threads"])
            t0 = bench.now()
            x = build(batch)
            out = loss_fn(x)
            _step(out["loss"], params, opt)
            dt = bench.now() - t0
            torch.set_num_threads(args.threads)
            emb.requires_grad_(True)
            if r >= args.warmup:
                times[name].append(dt)
                counts[name].append(count(x))
                losses[name].append(round(float(out["loss"]), 5))
            print(f"round {r} {name}: {dt:.2f}s", flush=True)
    peak = matmul_peak(args.threads, device=bench.device)
    results = {}
    for name in names:
        ts = times[name]
        med = statistics.median(ts)
        fl = [c[0] for c in counts[name]]
        n_ex = [len((bench.grouped_batches if variants[name].get("grouped") else bench.random_batches)[r])
                for r in range(args.warmup, rounds)]
        ratios = [tr / t for tr, t in zip(times["reference"], ts)] if "reference" in times else []
        results[name] = {
            "note": variants[name]["note"],
            "seconds_per_step": [round(t, 3) for t in ts],
            "median_seconds": round(med, 3),
            "examples_per_s": round(sum(n_ex) / sum(ts), 3),
            "speedup_vs_reference": round(statistics.median(ratios), 3) if ratios else None,
            "speedup_per_round": [round(x, 3) for x in ratios],
            "rows_x_width_per_forward": [c[1] for c in counts[name]],
            "est_gflop_per_step": round(statistics.mean(fl) / 1e9, 1),
            "achieved_gflop_s": round(sum(fl) / sum(ts) / 1e9, 2),
            "fraction_of_measured_peak": round(sum(fl) / sum(ts) / peak, 3),
            "loss_per_step": losses[name],
        }
    return {"equality_on_batch_0": equality, "variants": results, "matmul_peak_gflop_s": round(peak / 1e9, 2),
            "matmul_peak_bf16_gflop_s": round(matmul_peak(args.threads, dtype=torch.bfloat16,
                                                          device=bench.device) / 1e9, 2)}


# ---- the same examples for every variant: one pass over a fixed subset per round ---------------------

SAME_EXAMPLES_VARIANTS = ["reference", "ours_prefix", "ours_suffix", "ours_suffix+freeze_embeddings",
                          "ours_suffix+bf16", "ours_suffix+lora"]


def equality_same_batch(bench: Bench, built: dict) -> dict:
    """Losses and gradients on one batch before any step: ours_prefix vs the reference (same prompts), and
    the shared pass (ours_suffix, and its bf16 form) vs the reference step run on the suffix-layout views."""
    m = bench.model
    batch = bench.random_batches[0]
    losses, grads = {}, {}
    extra = [n for n in ("ours_suffix+compile",) if n in built]
    for name in ("reference", "ours_prefix", "reference_suffix", "ours_suffix", "ours_suffix+bf16", *extra):
        build, loss, _ = built[name]
        m.zero_grad(set_to_none=True)
        out = loss(build(batch))
        out["loss"].backward()
        losses[name] = {k: float(v) for k, v in out.items()}
        grads[name] = _grads(m)
    m.zero_grad(set_to_none=True)

    def diff(a, b):
        return {k: abs(losses[a][k] - losses[b][k]) for k in losses[a]}
    pairs = [("ours_prefix", "reference"), ("ours_suffix", "reference_suffix"),
             ("ours_suffix+bf16", "reference_suffix")] + [(n, "reference_suffix") for n in extra]
    return {
        "batch_examples": len(batch),
        "losses": {k: {kk: round(vv, 6) for kk, vv in v.items()} for k, v in losses.items()},
        "loss_abs_diff": {f"{a}_vs_{b}": diff(a, b) for a, b in pairs},
        "grad_match": {f"{a}_vs_{b}": _grad_match(grads[a], grads[b]) for a, b in pairs},
        "note": "the suffix layout reads other prompts than the prefix layout, so its losses differ from the "
                "reference's; it is checked against the official step run on the same (suffix) prompts",
    }


def optimiser_timing(bench: Bench, reps: int = 3) -> dict:
    """Seconds per AdamW step over all parameters: the per-tensor loop (torch's CPU default) vs fused."""
    params = [torch.nn.Parameter(p.detach().clone()) for p in bench.model.parameters()]  # on the bench's device
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    out = {}
    for name, kw in (("per_tensor_loop", {}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(params, lr=1e-5, **kw)
        opt.step()
        ts = []
        for _ in range(reps):
            t0 = bench.now()
            opt.step()
            ts.append(bench.now() - t0)
        out[f"{name}_s"] = round(statistics.median(ts), 3)
    del params
    return out


def time_same_examples(bench: Bench, names: list[str], measure_peak: bool = True) -> dict:
    """Each timed round, every variant trains one pass over the same ``--same-examples`` rows, batched as
    that variant's training would batch them (random for the reference, length-grouped for ours); variants
    are interleaved and their order rotates. The speed-up of a round is reference seconds / variant seconds
    for the same examples; warm-up rounds take one batch each. ``measure_peak=False`` skips the matmul peak
    (minutes for the bf16 one on a CPU without bf16 units), so a smoke run takes seconds."""
    args = bench.args
    variants = make_variants(bench)
    built = {n: variants[n]["make"]() for n in set(names) | {"reference_suffix", "ours_prefix", "ours_suffix",
                                                              "ours_suffix+bf16"}}
    equality = equality_same_batch(bench, built)
    print(json.dumps(equality, indent=1), flush=True)
    emb = bench.model.get_input_embeddings().weight
    times = {n: [] for n in names}
    flop = {n: [] for n in names}
    widths = {n: [] for n in names}
    losses = {n: [] for n in names}
    peak_mem = {}  # CUDA: the most memory allocated while the variant trains, in bytes
    for r in range(args.warmup + args.steps):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            spec = variants[name]
            build, loss_fn, count = built[name]
            batches = bench.round_batches(spec.get("layout", "prefix"), bool(spec.get("grouped")), r)
            if r < args.warmup:
                batches = batches[:1]
            model, opt = bench.lora_model() if spec.get("lora") else (bench.model, bench.optimizer)
            params = [p for p in model.parameters() if p.requires_grad]
            if spec.get("freeze"):
                emb.requires_grad_(False)
                params = [p for p in params if p is not emb]
            total, fl, ws, ls = 0.0, 0.0, [], []
            if bench.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(bench.device)
            for batch in batches:
                t0 = bench.now()
                x = build(batch)
                out = loss_fn(x)
                _step(out["loss"], params, opt)
                total += bench.now() - t0
                c = count(x)
                fl += c[0]
                ws.append(c[1])
                ls.append(round(float(out["loss"]), 4))
            emb.requires_grad_(True)
            if bench.device.type == "cuda":
                peak_mem[name] = max(peak_mem.get(name, 0), torch.cuda.max_memory_allocated(bench.device))
            if r >= args.warmup:
                times[name].append(total)
                flop[name].append(fl)
                widths[name].append(ws)
                losses[name].append(ls)
            print(f"round {r} {name}: {len(batches)} steps {total:.1f}s", flush=True)
    peak = matmul_peak(args.threads, device=bench.device) if measure_peak else None
    n_ex = len(bench.subset)
    results = {}
    for name in names:
        ts = times[name]
        ratios = [tr / t for tr, t in zip(times["reference"], ts)]
        results[name] = {
            "note": variants[name]["note"],
            "seconds_per_round": [round(t, 2) for t in ts],
            "examples_per_s": round(n_ex * len(ts) / sum(ts), 3),
            "speedup_vs_reference": round(statistics.median(ratios), 3),
            "speedup_per_round": [round(x, 3) for x in ratios],
            "est_gflop_per_example": round(sum(flop[name]) / len(ts) / n_ex / 1e9, 2),
            "achieved_gflop_s": round(sum(flop[name]) / sum(ts) / 1e9, 2),
            "fraction_of_measured_fp32_peak": round(sum(flop[name]) / sum(ts) / peak, 3) if peak else None,
            "rows_x_width_first_round": widths[name][0],
            "loss_first_round": losses[name][0],
        }
        if name in peak_mem:
            results[name]["peak_gpu_memory_mib"] = round(peak_mem[name] / 2**20)
    out = {"examples_per_round": n_ex, "equality_on_one_batch": equality, "variants": results,
           "adamw_step_seconds": optimiser_timing(bench)}
    if measure_peak:
        out["matmul_peak_gflop_s"] = round(peak / 1e9, 2)
        out["matmul_peak_bf16_gflop_s"] = round(matmul_peak(args.threads, dtype=torch.bfloat16,
                                                            device=bench.device) / 1e9, 2)
    return out


# ---- torch.compile, in a child process with a time limit ---------------------------------------------

def compile_child(args) -> None:
    bench = Bench(args)
    wrapper = StudentWithLoss(bench.model, "causal", ALPHA)
    compiled = torch.compile(wrapper, dynamic=True)
    out = {}
    for r in range(args.warmup + args.steps):
        x = collate([f for e in bench.random_batches[r] for f in bench.features[e]], bench.tok.pad_token_id, "causal")
        t0 = time.perf_counter()
        loss = compiled(**x)["loss"]
        _step(loss, list(bench.model.parameters()), bench.optimizer)
        dt = time.perf_counter() - t0
        out.setdefault("seconds_per_step", []).append(round(dt, 2))
        print(f"compiled round {r}: {dt:.1f}s", flush=True)
        Path(args.out).write_text(json.dumps(out))


def run_compile(args) -> dict:
    tmp = Path(args.out).with_suffix(".compile.json")
    cmd = [sys.executable, __file__, "--compile-child", "--student", args.student, "--task", args.task,
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads),
           "--batch-size", str(args.batch_size), "--out", str(tmp)]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, timeout=args.compile_timeout, capture_output=True, text=True)
        status = "ok" if proc.returncode == 0 else f"failed (rc {proc.returncode}): {proc.stderr.strip()[-400:]}"
    except subprocess.TimeoutExpired:
        status = f"did not finish within {args.compile_timeout}s (compile + {args.warmup + args.steps} steps)"
    res = json.loads(tmp.read_text()) if tmp.is_file() else {}
    tmp.unlink(missing_ok=True)
    return {"status": status, "wall_s": round(time.time() - t0, 1), **res,
            "note": "first step includes compilation; later steps with new shapes may recompile (dynamic=True)"}


# ---- prediction ------------------------------------------------------------------------------------

def prediction(args) -> dict:
    from stepdistill.student import Student
    from stepdistill.student.train import student_meta

    torch.set_num_threads(args.threads)
    out = {}
    run = Path(args.run_dir) if args.run_dir else None
    if run and (run / "model").is_dir():
        student = Student.load(run)
        out["student_source"] = f"trained run {run}"
    else:
        cfg = load_config(REPO / "configs" / f"{args.task}-smollm2.yaml", [f"student.name={args.student}"])
        model, tok = load_pretrained("causal", args.student)
        model.eval()
        student = Student(model, tok, student_meta(cfg, get_task(args.task)))
        out["student_source"] = f"untrained {args.student} (no trained run found at {run}); generation may run " \
                                "to the full label budget, so this is a pessimistic speed"
    task = student.task
    rows = load_splits(task, args.data_dir, seed=42).test[:args.predict_rows]
    inputs = [ex.input for ex in rows]
    student.predict(inputs[:4], batch_size=4)  # warm-up
    t0 = time.perf_counter()
    preds = student.predict(inputs, batch_size=args.predict_batch)
    dt = time.perf_counter() - t0
    out["batched"] = {"task": task.name, "rows": len(inputs), "batch_size": args.predict_batch,
                      "examples_per_s": round(len(inputs) / dt, 2),
                      "accuracy_on_these_rows": round(sum(task.is_correct(p["label"], ex)
                                                          for p, ex in zip(preds, rows)) / len(rows), 3)}
    lat = []
    for text in inputs[:args.latency_rows]:
        t0 = time.perf_counter()
        student.predict([text], batch_size=1)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    q = statistics.quantiles(lat, n=20, method="inclusive")
    out["batch_1_latency_ms"] = {"rows": len(lat), "p50": round(statistics.median(lat) * 1000, 1),
                                 "p95": round(q[18] * 1000, 1)}
    # classification: score each candidate in one forward vs generate, on e-SNLI rows
    esnli = get_task("esnli")
    cfg = load_config(REPO / "configs" / "esnli-smollm2.yaml", [f"student.name={args.student}"])
    erows = load_splits(esnli, args.data_dir, seed=42, test_size=1000).test[:args.predict_rows]
    cls = Student(student.model, student.tokenizer, student_meta(cfg, esnli), esnli)
    einputs = [ex.input for ex in erows]
    res = {"rows": len(einputs), "batch_size": args.predict_batch,
           "student": "the same weights (not trained on e-SNLI: accuracy is not meaningful, speed is)"}
    for mode in ("generate", "score"):
        cls.predict(einputs[:4], batch_size=4, scoring=mode)
        t0 = time.perf_counter()
        p = cls.predict(einputs, batch_size=args.predict_batch, scoring=mode)
        dt = time.perf_counter() - t0
        res[mode] = {"examples_per_s": round(len(einputs) / dt, 2),
                     "valid_labels": sum(x["label"] is not None for x in p),
                     "accuracy": round(sum(esnli.is_correct(x["label"], ex)
                                           for x, ex in zip(p, erows)) / len(erows), 3)}
        lat = []
        for text in einputs[:args.latency_rows]:
            t0 = time.perf_counter()
            cls.predict([text], batch_size=1, scoring=mode)
            lat.append(time.perf_counter() - t0)
        res[mode]["batch_1_p50_ms"] = round(statistics.median(lat) * 1000, 1)
    res["score_speedup"] = round(res["score"]["examples_per_s"] / res["generate"]["examples_per_s"], 2)
    out["esnli_label_scoring"] = res
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="smollm2-135m")
    ap.add_argument("--task", default="svamp", choices=["svamp", "cqa", "esnli", "anli1"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--only", nargs="*", help="variants to time (reference is always included)")
    ap.add_argument("--same-examples", type=int, default=0, help="time each variant on one pass over this many "
                    "fixed rows per round, batched as its training would batch them (the headline mode; "
                    "section 'training_same_examples'); 0 = the older one-batch-per-round mode")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--static-only", action="store_true", help="only the untimed parts: model size, epoch "
                    "padding and FLOP estimates")
    ap.add_argument("--equality-json", default=None, help="reuse a saved loss/gradient equality check")
    ap.add_argument("--skip-predict", action="store_true")
    ap.add_argument("--section", default="training", help="result key for the timing; another name adds a "
                    "section to the existing file (e.g. a second set of variants)")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile in a child process")
    ap.add_argument("--compile-timeout", type=int, default=300)
    ap.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", default=str(REPO / "runs" / "real-svamp-smollm2-200"))
    ap.add_argument("--predict-rows", type=int, default=64)
    ap.add_argument("--predict-batch", type=int, default=32)
    ap.add_argument("--latency-rows", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "throughput.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compile_child:
        return compile_child(args)
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}  # other sections are kept
    upgrade_legacy(result)
    result.update({"benchmark": "throughput", "student": args.student, "task": args.task,
                   "batch_size": args.batch_size,
                   "note": "the machine was shared with other jobs; compare the interleaved ratios, not absolute "
                           "times"})

    def stamp() -> dict:
        return {"git_commit": git_commit(), "machine": machine_info(torch.device("cpu")),
                "threads": args.threads, "warmup_rounds": args.warmup,
                "timed_rounds": args.steps, "load_average_at_start": os.getloadavg()}

    if not args.skip_train or args.static_only:
        bench = Bench(args)
        result["model"] = {"params": bench.total_params, "linear_params_excl_embedding": bench.linear_params,
                           "hidden": bench.hidden, "vocab": bench.vocab, "layers": bench.layers}
        result["epoch_padding"] = bench.epoch_padding
        result["epoch_flop_estimate"] = epoch_estimate(bench)
        if args.same_examples and not args.static_only:
            names = ["reference"] + [n for n in (args.only or SAME_EXAMPLES_VARIANTS) if n != "reference"]
            info = stamp()
            key = "training_same_examples" if args.section == "training" else args.section
            result[key] = {**info, **time_same_examples(bench, names), "load_average_at_end": os.getloadavg()}
        elif not args.static_only:
            names = [n for n, v in make_variants(bench).items() if not v.get("untimed")]
            if args.only:
                names = ["reference"] + [n for n in names if n in args.only and n != "reference"]
            info = stamp()
            result[args.section] = {**info, **time_training(bench, names), "load_average_at_end": os.getloadavg()}
        del bench
    if args.compile:
        result["torch_compile"] = {**stamp(), **run_compile(args)}
    if not args.skip_predict and not args.static_only:
        result["prediction"] = {**stamp(), **prediction(args)}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("training")}, indent=1))
    for section, value in result.items():
        if section.startswith("training") and isinstance(value, dict) and "variants" in value:
            print(section)
            for name, v in value["variants"].items():
                print(f"  {name:40s} {v['examples_per_s']:8.3f} ex/s  x{v['speedup_vs_reference']}  "
                      f"{v['achieved_gflop_s']} GFLOP/s")


if __name__ == "__main__":
    from stepdistill.cli import run_script

    run_script(main)  # domain errors as one line, exit 2
