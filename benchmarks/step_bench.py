"""What the training-step throughput benchmarks share (``throughput.py``, ``device_check.py``): the bench (model,
data, batches), FLOP estimates, and the step variants, each built as (inputs builder, loss fn, flop counter),
with the loss and gradient checks against the official step.
"""

from __future__ import annotations

import copy
import random
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_step import reference_loss, task_prefix_batches  # noqa: E402

from stepdistill.config import load_config  # noqa: E402
from stepdistill.student.data import build_training_data  # noqa: E402
from stepdistill.student.losses import LABEL_TASK, RATIONALE_TASK  # noqa: E402
from stepdistill.student.models import load_pretrained  # noqa: E402
from stepdistill.student.shared import SharedInputLoss, collate_shared  # noqa: E402
from stepdistill.student.train import StudentWithLoss, make_optimizer  # noqa: E402
from stepdistill.student.views import collate, epoch_batches  # noqa: E402
from stepdistill.tasks import get_task, load_splits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ALPHA = 0.5


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


def _feats(bench: Bench, batch):
    return [f for e in batch for f in bench.features[e]]


def _n_targets(labels) -> int:
    return int((labels[:, 1:] != -100).sum())


def reference_variant(bench: Bench, views=None):
    """The official step (two passes, full logits); ``views``: bench.suffix for suffix-layout prompts."""
    views = bench.features if views is None else views

    def build(batch):
        return bench.put(task_prefix_batches([f for e in batch for f in views[e]], bench.tok.pad_token_id))

    def loss(x):
        return reference_loss(bench.model, x, ALPHA)

    def count(x):
        rows = [tuple(v["input_ids"].shape) for v in x.values()]
        return flops(bench, rows, sum(b * t for b, t in rows), True, True), rows
    return build, loss, count


def split_target_variant(bench: Bench):
    """Two passes, logits at target positions only."""
    wrapper, pad = StudentWithLoss(bench.model, "causal", ALPHA), bench.tok.pad_token_id

    def build(batch):
        fs = _feats(bench, batch)
        return bench.put([collate([f for f in fs if f.task == t], pad, "causal") for t in (LABEL_TASK, RATIONALE_TASK)])

    def loss(x):
        a, b = wrapper(**x[0]), wrapper(**x[1])
        return {"loss": ALPHA * a["loss"] + (1 - ALPHA) * b["loss"], "label_loss": a["label_loss"],
                "rationale_loss": b["rationale_loss"]}

    def count(x):
        rows = [tuple(v["input_ids"].shape) for v in x]
        return flops(bench, rows, sum(_n_targets(v["labels"]) for v in x), True, True), rows
    return build, loss, count


def ours_variant(bench: Bench, target_only=True, freeze=False, lora=False, bf16=False, split=False):
    """``StudentWithLoss`` as ``stepdistill train`` runs it (prefix layout), with the options named."""
    model = bench.lora_model()[0] if lora else bench.model
    wrapper = StudentWithLoss(model, "causal", ALPHA, target_logits_only=target_only, split_views=split)

    def build(batch):
        return bench.put(collate(_feats(bench, batch), bench.tok.pad_token_id, "causal"))

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
        logit_rows = _n_targets(x["labels"]) if target_only else rows[0][0] * rows[0][1]
        return flops(bench, rows, logit_rows, not lora, not (lora or freeze)), rows
    return build, loss, count


def shared_variant(bench: Bench, lora=False, bf16=False, freeze=False, compile=False):
    """The shared-input single pass of the suffix layout (``student/shared.py``)."""
    wrapper = SharedInputLoss(bench.lora_model()[0] if lora else bench.model, ALPHA)
    if compile:  # as train.compile does it; compiles on its first call (the equality check)
        wrapper = torch.compile(wrapper, dynamic=True)

    def build(batch):
        return bench.put(collate_shared([bench.shared[e] for e in batch], bench.tok.pad_token_id))

    def loss(x):
        with precision(bf16, bench.device.type):
            return wrapper(**x)

    def count(x):
        rows = [tuple(x["input_ids"].shape)]
        return flops(bench, rows, _n_targets(x["labels"]), not lora, not (lora or freeze)), rows
    return build, loss, count


def make_variants(bench: Bench) -> dict:
    """Every variant by name: ``make`` builds its (inputs builder, loss fn, flop counter); the flags say how
    it is batched and trained."""
    reference, ours = partial(reference_variant, bench), partial(ours_variant, bench)
    shared, split_target_only = partial(shared_variant, bench), partial(split_target_variant, bench)
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
