"""Memory of a process that trains one cell after another (a study, a sweep, a notebook), with and without
``stepdistill.pipeline.release_memory`` after each run; writes benchmarks/results/memory_cells.json.

    python benchmarks/memory_cells.py                   # SmolLM2-135M, 4 short ANLI cells per mode (~8 min)
    python benchmarks/memory_cells.py --student tiny-random-llama --steps 2   # a smoke run (seconds)

Each mode runs in its own fresh process, so one mode's heap cannot help the other. A cell is a cell of a
two-arm study, run as ``stepdistill study`` runs it (``study.runner.run_cell``: a real ``pipeline.run``: load the
student, train ``--steps`` steps, validate, test, with the fast options, suffix layout and bf16), alternating
standard fine-tuning and DSbS. Resident memory (VmRSS) is read after each run, and the peak
(VmHWM) at the end: a leak shows as RSS that grows cell after cell; memory the allocator keeps shows as a high
RSS that stays flat and that ``release_memory`` gives back.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import REPO, RESULTS, git_commit  # noqa: E402

OUT = RESULTS / "memory_cells.json"


def status_mb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def child(args) -> dict:
    """One mode, in this process: the cells of a two-arm study run by the study runner (which gives the memory
    back after each cell through ``release_memory``), RSS after each."""
    import shutil

    import stepdistill.pipeline as pipeline
    from stepdistill.study.runner import run_cell
    from stepdistill.study.spec import StudySpec

    if args.mode == "keep":
        pipeline.release_memory = lambda: False  # looked up at call time by the runner and pipeline.run
    spec = StudySpec(path=Path(__file__), name="memory_cells", config=REPO / "configs" / "anli1-smollm2.yaml",
                     methods={"standard": ["method.name=standard"], "dsbs": ["method.name=dsbs"]},
                     baseline="standard", seeds=list(range((args.cells + 1) // 2)), lrs=[3e-4], epochs=[1.0],
                     train_sizes=[64], students=[args.student],
                     set=["data.valid_size=8", "data.test_size=8", f"train.max_steps={args.steps}",
                          "student.prompt_layout=suffix", "train.mixed_precision=bf16"])
    runs_dir = Path(args.runs_dir) / args.mode
    shutil.rmtree(runs_dir, ignore_errors=True)  # every cell trains: a finished run would be read back instead
    cells = []
    for i, cell in enumerate(spec.cells()[:args.cells]):
        t0 = time.time()
        run_cell(spec, cell, runs_dir, args.threads)
        cells.append({"cell": i, "method": cell.arm, "rss_mb": status_mb("VmRSS"),
                      "seconds": round(time.time() - t0, 1)})
        print(f"  {args.mode} cell {i} ({cell.arm}): RSS {cells[-1]['rss_mb']} MB", file=sys.stderr, flush=True)
    return {"mode": args.mode, "cells": cells, "peak_rss_mb": status_mb("VmHWM")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="smollm2-135m")
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--steps", type=int, default=8, help="training steps per cell")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs-dir", default=str(Path.home() / ".cache" / "stepdistill" / "memory_cells"))
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--mode", choices=["release", "keep"], help=argparse.SUPPRESS)  # internal: one child process
    args = p.parse_args()
    if args.mode:
        print(json.dumps(child(args)))
        return 0
    modes = {}
    for mode in ("keep", "release"):
        cmd = [sys.executable, __file__, "--mode", mode, "--student", args.student, "--cells", str(args.cells),
               "--steps", str(args.steps), "--threads", str(args.threads), "--runs-dir", args.runs_dir]
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
        modes[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {"benchmark": "memory_cells", "git_commit": git_commit(), "student": args.student, "cells": args.cells,
              "steps_per_cell": args.steps, "threads": args.threads,
              "command": "python benchmarks/memory_cells.py " + " ".join(sys.argv[1:]), **modes}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for mode, r in modes.items():
        print(f"{mode}: RSS after each cell {[c['rss_mb'] for c in r['cells']]} MB, peak {r['peak_rss_mb']} MB")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from stepdistill.cli import run_script

    run_script(main)  # domain errors as one line, exit 2
