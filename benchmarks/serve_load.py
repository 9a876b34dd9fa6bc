"""Loopback load test of `stepdistill serve` per engine, and of llama.cpp's own server on the same GGUF:
requests/s, p50/p95 latency, accuracy and agreement with the torch engine, label-only, one test row per
request, at concurrency 1 and --concurrency.

    python benchmarks/serve_load.py --student runs/real-svamp-smollm2-200 --n 200   # the issue 25 measurement
    python benchmarks/serve_load.py                                                  # tiny run built here

The student is exported once per --quants entry (`stepdistill export --gguf`); then for each engine
(--engines: torch, llamacpp, onnx, llamacpp-server) a server starts on a free 127.0.0.1 port and answers
the first --n test rows, first one client at a time, then --concurrency clients. `llamacpp-server` is
llama.cpp's OpenAI server (`--llama-server-bin` for the C++ `llama-server`, else llama-cpp-python's
`python -m llama_cpp.server`) called on /v1/completions with the templated prompt, greedy, at most the
label's token budget, with its prompt cache off (`--no-cache-prompt`: each concurrency level sends the same
prompts again, which a cache would answer without computing them; our server caches nothing); its answer's
first line is parsed like the student's. An engine that cannot run
(e.g. a byte-tokenizer student has no GGUF) is recorded as skipped with the reason. Numbers depend on
the machine and its load: they are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("torch", "llamacpp", "onnx", "llamacpp-server")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, ready: str, timeout: float = 300) -> subprocess.Popen:
    """Start ``cmd`` and wait until GET url+ready answers 200; its output is drained to a log in the background.
    The server gets this environment without OMP_WAIT_POLICY, so each runs with the OpenMP wait policy a user
    starting it would get (a passive policy inherited from a shell made llama.cpp 2-3.5x slower)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail: list[str] = []
    threading.Thread(target=lambda: [tail.append(line) or tail.__delitem__(slice(0, -40)) for line in proc.stdout],
                     daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{shlex.join(cmd[:4])} ... exited with {proc.returncode}: {''.join(tail)[-600:]}")
        try:
            if httpx.get(url + ready, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"{cmd[0]} did not answer {ready} within {timeout} s")


def server_command(engine: str, target: Path, port: int, args, precision: str | None = None) -> tuple[list[str], str]:
    """(command, readiness path) of the server for ``engine`` on ``target`` (a run, export dir or .gguf)."""
    if engine == "llamacpp-server":
        if args.llama_server_bin:
            return [args.llama_server_bin, "-m", str(target), "--port", str(port), "-t", str(args.threads),
                    "-c", "4096", "--parallel", str(args.concurrency), "--no-cache-prompt"], "/health"
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(target), "--port", str(port),
                "--n_threads", str(args.threads), "--n_ctx", "2048"], "/v1/models"
    return [sys.executable, "-m", "stepdistill", "serve", str(target), "--engine", engine, "--port", str(port),
            "--threads", str(args.threads), "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning",
            *(torch_flags(precision) if precision else [])], "/health"


def torch_flags(variant: str) -> list[str]:
    """Server flags of a --torch-precisions entry: a precision, optionally ``:no-drafts``."""
    precision, _, extra = variant.partition(":")
    return ["--precision", precision, *(["--no-drafts"] if extra == "no-drafts" else [])]


async def load(ask, items: list, concurrency: int) -> tuple[list[float], list, dict]:
    """Call ``ask(client, item)`` for every item with at most ``concurrency`` in flight."""
    latencies: list[float] = []
    answers: list = [None] * len(items)
    statuses: dict[int, int] = {}
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                status, answers[i] = await ask(client, items[i])
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(len(items))))
        wall = time.perf_counter() - t0
    return latencies, answers, {"statuses": statuses, "seconds": round(wall, 3),
                                "requests_per_s": round(len(items) / wall, 3)}


def asker(engine: str, url: str, spec: dict):
    """An async (client, example) -> (status, raw answer text) for ``engine``'s HTTP API."""
    if engine == "llamacpp-server":
        async def ask(client, ex):
            prompt = spec["label_prefix"] + ex.input + spec["answer_marker"]
            r = await client.post(url + "/v1/completions", json={
                "prompt": prompt, "max_tokens": spec["max_new_tokens"], "temperature": 0.0, "top_k": 1,
                "top_p": 1.0, "repeat_penalty": 1.0})
            if r.status_code != 200:
                return r.status_code, None
            body = r.json()
            ask.cached_tokens += (body.get("timings") or {}).get("cache_n", 0)
            return r.status_code, body["choices"][0]["text"].strip().split("\n")[0].strip()
        ask.cached_tokens = 0
    else:
        async def ask(client, ex):
            r = await client.post(url + "/predict", json={"input": ex.input})
            return r.status_code, r.json()["predictions"][0]["raw"] if r.status_code == 200 else None
    return ask


def bench_engine(engine: str, target: Path, rows: list, task, spec: dict, args, reference: list | None,
                 precision: str | None = None) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd, ready = server_command(engine, target, port, args, precision)
    proc = start(cmd, url, ready)
    try:
        ask = asker(engine, url, spec)
        asyncio.run(load(ask, rows[:2], 1))  # warm-up
        levels = []
        for conc in sorted({1, args.concurrency}):
            cached_before = getattr(ask, "cached_tokens", 0)
            latencies, answers, res = asyncio.run(load(ask, rows, conc))
            if hasattr(ask, "cached_tokens"):  # llama-server's prompt cache would skip the repeated prompts
                res["prompt_tokens_from_cache"] = ask.cached_tokens - cached_before
            labels = [None if a is None else task.parse(a, ex) for a, ex in zip(answers, rows)]
            res.update(concurrency=conc, requests=len(rows),
                       latency_p50_s=round(percentile(latencies, 0.5), 4),
                       latency_p95_s=round(percentile(latencies, 0.95), 4),
                       latency_mean_s=round(statistics.fmean(latencies), 4),
                       accuracy=round(sum(task.is_correct(lab, ex) for lab, ex in zip(labels, rows)) / len(rows), 4))
            if reference is not None:
                res["same_label_as_torch"] = round(sum(a == b for a, b in zip(labels, reference)) / len(rows), 4)
            res["_labels"] = labels
            print(json.dumps({"engine": engine, "target": target.name, "precision": precision,
                              **{k: v for k, v in res.items() if k != "_labels"}}), file=sys.stderr)
            levels.append(res)
        health = httpx.get(url + "/health", timeout=30).json() if engine != "llamacpp-server" else {}
        return {"engine": engine, "target": str(target), "command": shlex.join(cmd), "levels": levels,
                **({"drafts": health["drafts"]} if "drafts" in health else {})}  # tokens per forward, torch
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def tiny_student(tmp: str) -> Path:
    from stepdistill import pipeline
    from stepdistill.config import load_config

    cfg = load_config(REPO / "configs" / "tiny-causal.yaml", [f"output_dir={tmp}/tiny", "train.epochs=1"])
    return pipeline.run(cfg, overwrite=True)


def run(args, tmp: str) -> dict:
    from stepdistill.serve import run_info
    from stepdistill.serve.export import export, prompt_spec
    from stepdistill.tasks import get_task

    student = Path(args.student) if args.student else tiny_student(tmp)
    info = run_info(student)
    task = get_task(info.meta.get("task_spec") or info.meta["task"])
    rows = task.read("test")[: args.n]
    spec = prompt_spec(info.meta, task)
    exports: dict[str, Path | str] = {}

    def target(engine: str, quant: str | None) -> Path | str:
        """What the engine's server loads (an export made once per kind), or why it cannot run."""
        if engine == "torch":
            return student
        kind = "onnx" if engine == "onnx" else quant
        if kind not in exports:
            try:
                exports[kind] = export(student, Path(tmp) / f"export-{kind}", onnx=kind == "onnx",
                                       gguf=None if kind == "onnx" else kind).out
            except Exception as exc:  # noqa: BLE001 - recorded: e.g. a byte-tokenizer student has no GGUF
                exports[kind] = f"skipped: export failed: {exc}"
        where = exports[kind]
        return next(where.glob("*.gguf")) if engine == "llamacpp-server" and isinstance(where, Path) else where

    results, reference = [], None
    for engine in args.engines.split(","):
        variants = (args.quants.split(",") if engine in ("llamacpp", "llamacpp-server")
                    else args.torch_precisions.split(",") if engine == "torch" else [None])
        for variant in variants:
            quant, precision = (None, variant) if engine == "torch" else (variant, None)
            where = target(engine, quant)
            if isinstance(where, str):
                results.append({"engine": engine, "quant": quant, "skipped": where})
                continue
            try:
                res = bench_engine(engine, where, rows, task, spec, args, reference, precision)
            except Exception as exc:  # noqa: BLE001 - recorded, the other engines still run
                results.append({"engine": engine, "quant": quant, "precision": precision,
                                "skipped": f"{type(exc).__name__}: {exc}"})
                continue
            if engine == "torch" and reference is None:  # the first torch precision is the reference
                reference = res["levels"][0]["_labels"]
            results.append({"quant": quant, "precision": precision, **res})
    for r in results:
        for level in r.get("levels", []):
            level.pop("_labels", None)
    return {"student": str(student), **info.summary(), "n_prompts": len(rows), "results": results}


def machine() -> dict:
    """The CPU (model, ISA: bf16 units or not) and the engines' library versions."""
    import torch

    from stepdistill.student.machine import machine_info

    info = machine_info(torch.device("cpu"))
    try:
        import llama_cpp

        info["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", help="run (or model) directory of the student (default: a tiny run built here)")
    p.add_argument("--n", type=int, default=200, help="test rows, one request each (default 200)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated (default {','.join(ENGINES)})")
    p.add_argument("--quants", default="f16,q8_0", help="GGUF quantisations for the llama.cpp engines (f16,q8_0)")
    p.add_argument("--torch-precisions", default="auto", help="--precision values for the torch engine, the first "
                   "one the reference for label agreement, each optionally with ':no-drafts' (one token a forward) "
                   "(default auto; e.g. float32:no-drafts,auto)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8; 1 is also measured)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of each server (default 2)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="our server's micro-batch wait (default 5)")
    p.add_argument("--llama-server-bin", help="llama.cpp's C++ llama-server (default: python -m llama_cpp.server)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    args = p.parse_args()
    unknown = set(args.engines.split(",")) - set(ENGINES)
    if unknown:
        p.error(f"unknown engine(s) {', '.join(sorted(unknown))}; known: {', '.join(ENGINES)}")
    report = {
        "command": ("python benchmarks/serve_load.py " + shlex.join(sys.argv[1:])).strip(),
        "machine": {**machine(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(), "platform": platform.platform()},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        report.update(run(args, tmp))
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from stepdistill.cli import run_script

    run_script(main)  # domain errors as one line, exit 2
