"""Device check: the whole student stage on one device (CPU or a CUDA GPU), written to one JSON file.

    python benchmarks/device_check.py --device cpu --size tiny --out /tmp/device_check.json     # CI smoke, seconds
    python benchmarks/device_check.py --prepare .device         # here: data slice + SmolLM2 tokenizer to carry
    STEPDISTILL_DATA=.device/data STEPDISTILL_CACHE=.device/cache \\
        python benchmarks/device_check.py --device cuda --size smollm2-shape   # on the GPU machine (README)

Sections, each written to the JSON as soon as it ends (a timeout still leaves the finished ones), each with
``status`` ok or the error, so one failing part does not hide the others:

1. ``students``: tiny random causal and seq2seq students through the package's own code: train in fp32 and with
   ``mixed_precision=auto`` (bf16 where the device has bf16 units), pause after half the steps with a checkpoint and
   resume (``train_loop(until=)`` then ``train.run(resume=True)``; no kill) to the uninterrupted run's weights,
   predict, label scoring, and one ``serve`` request (``POST /predict``);
2. ``torchrun``: ``torchrun --nproc_per_node 1 -m stepdistill train`` (nccl on CUDA, gloo on CPU);
3. ``throughput``: benchmarks/throughput.py's same-examples timing of the official step vs ours (prefix, suffix,
   suffix+compile, suffix+bf16) on a randomly initialised model of SmolLM2-135M's shape
   (``random-smollm2-shape``), per batch size, with its loss/gradient equality checks and peak GPU memory per
   variant, plus label-only prediction speed (generate and score).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_bench  # noqa: E402
import throughput  # noqa: E402

from stepdistill.config import load_config  # noqa: E402
from stepdistill.student import Student, train  # noqa: E402
from stepdistill.student.loop import train_loop  # noqa: E402
from stepdistill.student.machine import machine_info, resolve_precision  # noqa: E402
from stepdistill.tasks import get_task  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZES = {  # student for the throughput section, batch sizes, examples per timed round, warm-up and timed rounds
    "tiny": {"student": "tiny-random-llama", "batch_sizes": [4], "examples": 8, "warmup": 1, "steps": 1},
    "smollm2-shape": {"student": "random-smollm2-shape", "batch_sizes": [8, 32, 64], "examples": 128,
                      "warmup": 1, "steps": 2},
}
VARIANTS = ["reference", "ours_prefix", "ours_suffix", "ours_suffix+compile", "ours_suffix+bf16"]
SLICE = {"svamp": {"train.jsonl": 320, "test.jsonl": 64}, "esnli": {"valid.jsonl": 200, "test.jsonl": 64}}


# ---- 1. tiny students through train / resume / predict / label scoring / serve ------------------------------

def student_checks(family: str, device: torch.device, work: Path, data_dir: str | None) -> dict:
    """Train, resume, predict, score labels and serve one request with a tiny random ``family`` student."""
    config = REPO / "configs" / ("tiny-causal.yaml" if family == "causal" else "tiny-seq2seq.yaml")
    base = ["train.max_steps=6", "train.eval_every=100", "data.train_size=32", "data.valid_size=8",
            "data.test_size=8", *([f"data.data_dir={data_dir}"] if data_dir else [])]
    out: dict = {}
    runs = {}
    for name, extra in (("fp32", []), ("auto", ["train.mixed_precision=auto"])):
        cfg = load_config(config, [f"output_dir={work / family / name}", *base, *extra])
        _reset_peak(device)
        t0 = time.time()
        runs[name] = train.run(cfg, overwrite=True)
        metrics = json.loads((runs[name] / "metrics.json").read_text())
        trained = metrics["train"]
        out[f"train_{name}"] = {"precision": trained["precision"], "steps": trained["steps"],
                                "examples_per_s": trained["examples_per_s"], "wall_s": round(time.time() - t0, 1),
                                "first_loss": _first_loss(runs[name]), "peak_gpu_memory_mib": _peak_mib(device)}
    out["auto_expected"] = resolve_precision("auto", device)[0]
    out["auto_picked_expected"] = out["train_auto"]["precision"] == out["auto_expected"]
    out["resume"] = pause_and_resume(config, base, work / family / "paused", runs["fp32"])
    student = Student.load(runs["fp32"])
    student.model.to(device)
    task = student.task
    rows = task.read("test", data_dir)[:16]
    t0 = time.time()
    preds = student.predict([ex.input for ex in rows], batch_size=8, explain=family == "causal")
    out["predict"] = {"rows": len(rows), "examples_per_s": round(len(rows) / (time.time() - t0), 2),
                      "device": str(next(student.model.parameters()).device),
                      "with_rationale_field": sum("rationale" in p for p in preds)}
    if task.answer.kind in ("classification", "multiple_choice"):
        scored = student.predict([ex.input for ex in rows], batch_size=8, scoring="score")
        out["label_scoring"] = {"rows": len(rows), "valid_labels": sum(p["label"] is not None for p in scored)}
    out["serve"] = serve_request(student, rows[0].input)
    return out


def pause_and_resume(config: Path, base: list[str], run_dir: Path, reference: Path) -> dict:
    """Train 3 of 6 steps and stop with a checkpoint, resume in a fresh call; the weights must match ``reference``."""
    from safetensors.torch import load_file

    cfg = load_config(config, [f"output_dir={run_dir}", *base])
    t = train.setup(cfg, overwrite=True)
    train_loop(t, until=3)
    paused_at = t.state.step
    del t
    train.run(cfg, resume=True)
    a, b = load_file(reference / "model" / "model.safetensors"), load_file(run_dir / "model" / "model.safetensors")
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return {"paused_at_step": paused_at, "steps": json.loads((run_dir / "metrics.json").read_text())["train"]["steps"],
            "max_abs_weight_diff_vs_uninterrupted": diff, "same_weights": diff <= 1e-5}


def serve_request(student, text: str) -> dict:
    """One ``POST /predict`` through the real app (FastAPI's in-process client, no socket)."""
    from fastapi.testclient import TestClient

    from stepdistill.serve.server import create_app

    with TestClient(create_app(student)) as client:
        t0 = time.time()
        resp = client.post("/predict", json={"input": text})
        return {"status_code": resp.status_code, "ms": round((time.time() - t0) * 1000, 1),
                "has_label": "label" in json.dumps(resp.json())}


def _first_loss(run_dir: Path) -> float | None:
    for line in (run_dir / "train_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            return record["loss"]
    return None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> int | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None


# ---- 2. torchrun ----------------------------------------------------------------------------------------

def torchrun_check(work: Path, data_dir: str | None, timeout: int = 300) -> dict:
    """``torchrun --nproc_per_node 1 -m stepdistill train``: one process in a process group (nccl on CUDA, gloo
    on CPU, as accelerate picks); metrics.json names the backend through machine_info."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = work / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "stepdistill", "train", "configs/tiny-causal.yaml", "-o", str(run),
           "--set", "train.max_steps=2", "--set", "data.valid_size=4",
           *(["--set", f"data.data_dir={data_dir}"] if data_dir else [])]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    out = {"returncode": proc.returncode, "wall_s": round(time.time() - t0, 1)}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-3000:]
        return out
    metrics = json.loads((run / "metrics.json").read_text())["train"]
    out.update(processes=metrics["processes"], steps=metrics["steps"],
               backend=metrics["machines"][0].get("backend"), device=metrics["machines"][0]["device"])
    return out


# ---- 3. throughput on a model of SmolLM2-135M's shape ----------------------------------------------------

def throughput_checks(device: torch.device, size: str, data_dir: str | None, threads: int, compile: bool,
                      write) -> dict:
    """throughput.py's same-examples timing per batch size (``write`` is called after each one)."""
    spec = SIZES[size]
    out: dict = {"student": spec["student"], "examples_per_round": spec["examples"]}
    names = [v for v in VARIANTS if compile or v != "ours_suffix+compile"]
    bench = None
    for batch_size in spec["batch_sizes"]:
        args = argparse.Namespace(task="svamp", student=spec["student"], data_dir=data_dir, batch_size=batch_size,
                                  warmup=spec["warmup"], steps=spec["steps"], same_examples=spec["examples"],
                                  lora_r=16, threads=threads, device=str(device))
        bench = step_bench.Bench(args)
        out["model_params"] = bench.total_params
        out["tokenizer_vocab"] = len(bench.tok)
        out[f"batch_{batch_size}"] = _time_batch(bench, names, size)
        write(out)
        del bench
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out["prediction"] = prediction_speed(spec["student"], device, data_dir)
    return out


def _time_batch(bench, names: list[str], size: str) -> dict:
    """One batch size's timing; a failure is recorded, not raised. When torch.compile fails (no triton, no C++
    compiler), the compile variant is dropped from ``names`` and the others are timed without it."""
    try:
        return throughput.time_same_examples(bench, names, measure_peak=size != "tiny")
    except torch.OutOfMemoryError as exc:
        return {"status": f"out of memory: {str(exc).splitlines()[0]}"}
    except Exception as exc:
        error = {"status": f"error: {type(exc).__name__}: {str(exc)[:500]}",
                 "traceback": traceback.format_exc()[-3000:]}
        if "ours_suffix+compile" not in names:
            return error
        names.remove("ours_suffix+compile")
        return {**_time_batch(bench, names, size), "compile_error": error}


def prediction_speed(student_name: str, device: torch.device, data_dir: str | None, rows: int = 64) -> dict:
    """Examples/s of label-only prediction with an untrained ``student_name``: generation on SVAMP (up to the
    label budget: a random model rarely stops early) and scoring each candidate on e-SNLI."""
    from stepdistill.student.models import load_pretrained
    from stepdistill.student.train import student_meta

    model, tok = load_pretrained("causal", student_name)
    model.to(device).eval()
    out = {}
    for task_name, config, scoring in (("svamp", "svamp-smollm2.yaml", "generate"),
                                       ("esnli", "esnli-smollm2.yaml", "score")):
        task = get_task(task_name)
        cfg = load_config(REPO / "configs" / config, [f"student.name={student_name}"])
        student = Student(model, tok, student_meta(cfg, task), task)
        inputs = [ex.input for ex in task.read("test", data_dir)[:rows]]
        student.predict(inputs[:4], batch_size=4, scoring=scoring)  # warm-up
        t0 = step_bench.now(device)
        student.predict(inputs, batch_size=32, scoring=scoring)
        out[f"{task_name}_{scoring}"] = {"rows": len(inputs), "batch_size": 32,
                                         "examples_per_s": round(len(inputs) / (step_bench.now(device) - t0), 2)}
    return out


# ---- preparing what travels to a machine without network ---------------------------------------------

def prepare(dest: Path, data_dir: str | None) -> None:
    """Write ``dest/data`` (a slice of SVAMP and e-SNLI) and ``dest/cache/tokenizers/smollm2-135m`` (the
    tokenizer only) for a machine with no network and no weights; a few MB, well under what a device run carries."""
    src = Path(data_dir or os.environ.get("STEPDISTILL_DATA") or REPO.parent / "shared" / "data")
    for task, files in SLICE.items():
        (dest / "data" / task).mkdir(parents=True, exist_ok=True)
        for name, n in files.items():
            with open(src / task / name, encoding="utf-8") as fh:
                lines = [next(fh) for _ in range(n)]
            (dest / "data" / task / name).write_text("".join(lines), encoding="utf-8")
    from stepdistill.student.models import smollm2_dir

    tok_dir = dest / "cache" / "tokenizers" / "smollm2-135m"
    tok_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_dir() / name, tok_dir / name)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"wrote {dest} ({size / 2**20:.1f} MiB)")


# ---- the command ------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda where torch sees one")
    ap.add_argument("--size", choices=list(SIZES), default="tiny")
    ap.add_argument("--sections", nargs="*", default=["students", "torchrun", "throughput"])
    ap.add_argument("--data-dir", default=None, help="default: $STEPDISTILL_DATA")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-compile", action="store_true", help="skip the ours_suffix+compile variant")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/device_check_<gpu or cpu>.json")
    ap.add_argument("--prepare", metavar="DIR", help="only write the data slice and tokenizer to carry to DIR")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare), args.data_dir)
        return 0
    if args.device == "cpu":  # before anything touches CUDA: training picks the GPU wherever it sees one
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA device here", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    info = machine_info(device)
    out_path = Path(args.out or REPO / "benchmarks" / "results" / f"device_check_{_slug(info)}.json")
    result = {"benchmark": "device_check", "device": args.device, "size": args.size, "machine": info,
              "git_commit": throughput.git_commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "sections": {}}

    def write(partial=None, section=None):
        if section is not None:
            result["sections"][section] = partial
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out_path)

    work = Path(tempfile.mkdtemp(prefix="device_check-"))
    checks = {
        "students": lambda: {f: student_checks(f, device, work, args.data_dir) for f in ("causal", "seq2seq")},
        "torchrun": lambda: torchrun_check(work, args.data_dir),
        "throughput": lambda: throughput_checks(device, args.size, args.data_dir, args.threads,
                                                not args.no_compile, lambda p: write(p, "throughput")),
    }
    failed = 0
    for name in args.sections:
        t0 = time.time()
        try:
            section = {"status": "ok", **checks[name]()}
        except Exception as exc:  # recorded beside what the section wrote before failing; the next one still runs
            failed += 1
            section = {**result["sections"].get(name, {}), "status": f"error: {type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()[-4000:]}
        section["wall_s"] = round(time.time() - t0, 1)
        write(section, name)
        print(f"{name}: {section['status']} ({section['wall_s']} s)", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out_path}")
    return 1 if failed else 0


def _slug(info: dict) -> str:
    name = info.get("gpu") or "cpu"
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


if __name__ == "__main__":
    from stepdistill.cli import run_script

    run_script(main)  # domain errors as one line, exit 2
