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
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import git_commit  # noqa: E402
from step_bench import (  # noqa: E402
    ALPHA, Bench, _grad_match, _grads, _step, check_equality, epoch_estimate, make_variants, matmul_peak)

from stepdistill.config import load_config  # noqa: E402
from stepdistill.student.models import load_pretrained  # noqa: E402
from stepdistill.student.train import StudentWithLoss, machine_info  # noqa: E402
from stepdistill.student.views import collate  # noqa: E402
from stepdistill.tasks import get_task, load_splits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def upgrade_legacy(result: dict) -> dict:
    """Files written before each section named its machine held one file-wide cpu/cpu_count/torch: move them
    into the sections measured then, so a section added later on another machine does not inherit them."""
    legacy = {k: result.pop(k) for k in ("cpu", "cpu_count", "torch") if k in result}
    for section in result.values():
        if legacy and isinstance(section, dict) and "git_commit" in section and "machine" not in section:
            section["machine"] = legacy
    return result


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
