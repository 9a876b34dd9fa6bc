"""Bounded loopback load test of `stepdistill serve`: requests/s and p50/p95 latency, label-only vs explain.

    python benchmarks/serve_load.py                      # writes benchmarks/results/serve_load.json

With no --run it builds the tiny causal run (configs/tiny-causal.yaml, 1 epoch) in a temporary folder, and
adds runs/real-svamp-smollm2-200 when that run has a model. For each run it starts `stepdistill serve` on a
free 127.0.0.1 port, sends a fixed number of requests (one test-split input each) from a fixed number of
concurrent clients, first at concurrency 1 (no batching possible), then at --concurrency, for label-only
and explain requests, and stops. Numbers depend on the machine and its load: they are recorded, never
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
REAL_RUN = REPO / "runs" / "real-svamp-smollm2-200"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def start_server(run_dir: Path, threads: int, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    # uvicorn logs the port it bound (we ask for port 0: any free one) on stderr at info level
    cmd = [sys.executable, "-m", "stepdistill", "serve", str(run_dir), "--port", "0", "--log-level", "info",
           "--threads", str(threads), "--max-wait-ms", str(max_wait_ms)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"server for {run_dir} exited with {proc.returncode}")
        m = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
        if m:
            # keep draining stderr so the server never blocks on a full pipe
            import threading

            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, m.group(1)
    proc.terminate()
    raise RuntimeError("server did not start within 300 s")


async def load(url: str, texts: list[str], n: int, concurrency: int, explain: bool) -> dict:
    """``n`` requests, at most ``concurrency`` in flight; each request is one input."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
        before = (await client.get(url + "/health")).json()["batching"]

        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(url + "/predict", json={"input": texts[i % len(texts)], "explain": explain})
                latencies.append(time.perf_counter() - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
        after = (await client.get(url + "/health")).json()["batching"]
    batches = after["batches"] - before["batches"]
    return {
        "explain": explain, "requests": n, "concurrency": concurrency, "statuses": statuses,
        "seconds": round(wall, 3), "requests_per_s": round(n / wall, 3),
        "latency_p50_s": round(percentile(latencies, 0.5), 3), "latency_p95_s": round(percentile(latencies, 0.95), 3),
        "latency_mean_s": round(statistics.fmean(latencies), 3),
        "model_batches": batches, "inputs_per_batch": round((after["inputs"] - before["inputs"]) / batches, 2)
        if batches else None,
    }


def test_inputs(run_dir: Path, k: int = 32) -> list[str]:
    """Formatted inputs from the run's test split (fixed inputs when no data is around)."""
    from stepdistill.serve import run_info
    from stepdistill.tasks import get_task

    meta = run_info(run_dir).meta
    try:
        return [ex.input for ex in get_task(meta.get("task_spec") or meta["task"]).read("test")[:k]]
    except Exception:  # noqa: BLE001 - a benchmark still runs without the data bundle
        return [f"Tom has {i} apples and buys {i + 3} more.\nHow many apples does he have?" for i in range(k)]


def bench_run(run_dir: Path, args) -> dict:
    from stepdistill.serve import run_info

    proc, url = start_server(run_dir, args.threads, args.max_wait_ms)
    try:
        texts = test_inputs(run_dir)
        asyncio.run(load(url, texts, 2, 1, False))  # warm-up
        results = []
        for explain, n in ((False, args.requests), (True, args.explain_requests)):
            for conc in sorted({1, args.concurrency}):
                res = asyncio.run(load(url, texts, n if conc > 1 else max(2, n // 4), conc, explain))
                print(json.dumps(res), file=sys.stderr)
                results.append(res)
        return {"run": str(run_dir), **run_info(run_dir).summary(), "results": results}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", help="run directory (repeatable; default: tiny causal run + the real "
                   "SmolLM2 run when present)")
    p.add_argument("--requests", type=int, default=48, help="label-only requests per concurrency level (default 48)")
    p.add_argument("--explain-requests", type=int, default=16, help="explain requests per concurrency level (16)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8; 1 is also measured)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server (default 1: on a shared, "
                   "busy CPU, 2 threads made the tiny model 5-20x slower)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="server micro-batch wait (default 5)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    args = p.parse_args()
    command = "python benchmarks/serve_load.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(r) for r in args.run or []]
        if not runs:
            from stepdistill import pipeline
            from stepdistill.config import load_config

            cfg = load_config(REPO / "configs" / "tiny-causal.yaml", [f"output_dir={tmp}/tiny", "train.epochs=1"])
            runs.append(pipeline.run(cfg, overwrite=True))
            if (REAL_RUN / "model" / "stepdistill.json").is_file():
                runs.append(REAL_RUN)
        report = {
            "command": command.strip(),
            "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                        "python": platform.python_version(), "platform": platform.platform()},
            "settings": {k: v for k, v in vars(args).items() if k not in ("run", "out")},
            "runs": [bench_run(r, args) for r in runs],
        }
        report["runs_included"] = [r["run"] if "real-" in r["run"] else f"{r['student']} (built by this script)"
                                   for r in report["runs"]]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from stepdistill.cli import run_script

    run_script(main)  # domain errors as one line, exit 2
