"""A real run with the real pretrained student on this machine, recorded under benchmarks/results/.

    python benchmarks/real_run.py                      # SVAMP, 200 training rows, 1 epoch, dsbs
    python benchmarks/real_run.py --collect runs/real-svamp-smollm2-200   # record an existing run

Runs `stepdistill run configs/svamp-smollm2.yaml --set data.train_size=200 --set train.epochs=1`
and writes benchmarks/results/real_run_svamp_smollm2_200.json (metrics + command + commit + machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import REPO, RESULTS, git_commit  # noqa: E402

from stepdistill.student.train import machine_info  # noqa: E402

COMMAND = ["stepdistill", "run", "configs/svamp-smollm2.yaml", "--set", "data.train_size=200", "--set",
           "train.epochs=1", "-o", "runs/real-svamp-smollm2-200", "--overwrite"]
OUT = RESULTS / "real_run_svamp_smollm2_200.json"


def collect(run_dir: Path, wall_s: float | None) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "command": " ".join(COMMAND),
        "git_commit": git_commit(),
        "machine": machine_info(torch.device("cpu")),  # of this process; metrics["train"]["machines"]: the run's
        "wall_s": wall_s,
        "metrics": metrics,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collect", help="record an existing run directory instead of training")
    p.add_argument("--wall-s", type=float, help="with --collect: the measured wall time of that run")
    args = p.parse_args()
    if args.collect:
        result = collect(Path(args.collect), args.wall_s)
    else:
        t0 = time.time()
        subprocess.run(COMMAND, cwd=REPO, check=True)
        result = collect(REPO / "runs" / "real-svamp-smollm2-200", round(time.time() - t0, 1))
    OUT.write_text(json.dumps(result, indent=1))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    from stepdistill.cli import run_script

    run_script(main)  # domain errors as one line, exit 2
