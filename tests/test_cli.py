"""End-to-end runs through the CLI on tiny in-process students: the run-directory contract,
overwrite protection, resume after SIGKILL, 2-process training, one-line errors."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stepdistill.cli import main

REPO = Path(__file__).resolve().parents[1]
CONTRACT = {"task", "method", "student", "n_train", "seed", "test", "valid"}


def _cli(*args, check=True, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "stepdistill", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("config", ["tiny-causal.yaml", "tiny-seq2seq.yaml"])
def test_run_writes_the_run_directory_contract(tmp_path, data_dir, config):
    run = tmp_path / "run"
    proc = _cli("run", f"configs/{config}", "-o", str(run), "--set", "train.epochs=1")
    assert "test accuracy=" in proc.stdout
    assert (run / "config.yaml").is_file() and (run / "model" / "config.json").is_file()
    assert (run / "model" / "stepdistill.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert CONTRACT <= set(metrics)
    assert {"accuracy", "n"} <= set(metrics["test"]) and {"accuracy", "n"} <= set(metrics["valid"])
    assert metrics["test"]["n"] == 16 and metrics["n_train"] == 48
    # the run names the machine that trained it (the same seed gives other numbers on another CPU)
    (machine,) = metrics["train"]["machines"]
    assert machine["cpu"] and machine["threads"] >= 1 and machine["torch"] == torch.__version__
    assert isinstance(machine["isa"], list)  # the vector units (avx2, avx512_bf16, ...) bf16 kernels depend on
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {"id", "gold", "raw", "prediction", "correct"} <= set(rows[0])
    # the saved model is a plain HF directory
    import transformers

    auto = transformers.AutoModelForCausalLM if "causal" in config else transformers.AutoModelForSeq2SeqLM
    auto.from_pretrained(run / "model")
    # evaluate alone re-creates the same test metrics
    proc = _cli("evaluate", str(run))
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] == metrics["test"]["accuracy"]
    # never delete an existing run without --overwrite
    proc = _cli("train", f"configs/{config}", "-o", str(run), check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert (run / "model").is_dir()


@pytest.mark.slow
def test_evaluate_label_scoring_is_kept_beside_the_generated_results(tmp_path, data_dir):
    run = tmp_path / "run"
    _cli("run", "configs/tiny-causal.yaml", "-o", str(run), "--set", "data.task=cqa", "--set", "train.epochs=1")
    before = json.loads((run / "metrics.json").read_text())
    generated = (run / "predictions.jsonl").read_text()
    assert before["test"]["label_scoring"] == "generate"
    proc = _cli("evaluate", str(run), "--label-scoring", "score")
    assert "test (score): accuracy=" in proc.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"] == before["test"] and (run / "predictions.jsonl").read_text() == generated
    scored = metrics["test:score"]
    rows = [json.loads(x) for x in (run / "test_score_predictions.jsonl").read_text().splitlines()]
    assert scored["n"] == len(rows) == 16 and scored["label_scoring"] == "score"
    # scoring always names one of the row's choices: nothing fails to parse
    assert scored["parse_failures"] == 0 and all(r["prediction"] == r["raw"] for r in rows)
    assert scored["correct"] == sum(r["correct"] for r in rows)
    # the run's own setting goes to the usual place
    _cli("evaluate", str(run), "--label-scoring", "generate")
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] == before["test"]["accuracy"]
    # predict: the same option, one of the row's choices for every input
    rows = [json.loads(x) for x in (data_dir / "cqa" / "test.jsonl").read_text().splitlines()[:3]]
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"question": r["question"], "choices": r["choices"]}) + "\n" for r in rows))
    proc = _cli("predict", str(run), str(inputs), "--label-scoring", "score")
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(out) == 3 and all(o["label"] in r["choices"] for o, r in zip(out, rows))
    # an equation task has no candidates to score: a one-line error
    svamp = tmp_path / "svamp"
    _cli("train", "configs/tiny-causal.yaml", "-o", str(svamp), "--set", "train.epochs=1")
    for cmd in (["evaluate", str(svamp)], ["predict", str(svamp), str(inputs)]):
        proc = _cli(*cmd, "--label-scoring", "score", check=False)
        assert proc.returncode != 0 and "multiple-choice" in proc.stderr and "Traceback" not in proc.stderr, cmd


@pytest.mark.slow
@pytest.mark.parametrize("options", [[], ["student.prompt_layout=suffix"], ["train.mixed_precision=bf16"]],
                         ids=["default", "suffix-layout-shared-pass", "bf16"])
def test_training_loss_falls_in_a_real_run(tmp_path, data_dir, options):
    run = tmp_path / "run"
    sets = [x for o in options for x in ("--set", o)]
    _cli("train", "configs/tiny-causal.yaml", "-o", str(run), "--set", "train.epochs=4", "--set", "train.eval_every=100",
         *sets)
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.8 * losses[0], losses
    meta = json.loads((run / "model" / "stepdistill.json").read_text())
    assert meta["prompt_format"] == (2 if "student.prompt_layout=suffix" in options else 1)
    from stepdistill.student import Student

    student = Student.load(run)
    assert student.layout == ("suffix" if meta["prompt_format"] == 2 else "prefix")
    out = student.predict(["Tom has 3 apples and buys 4 more.\nHow many apples does he have?"], explain=True)
    assert set(out[0]) == {"label", "raw", "rationale"}


def _wait_for_checkpoint(run: Path, proc, min_step: int, timeout=300):
    state = run / "checkpoint" / "state.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if state.is_file():
            try:
                if json.loads(state.read_text())["state"]["step"] >= min_step:
                    return
            except (json.JSONDecodeError, KeyError):
                pass
        if proc.poll() is not None:
            raise AssertionError("training finished before it could be killed")
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path, data_dir):
    args = ["configs/tiny-causal.yaml", "--set", "train.epochs=2", "--set", "train.checkpoint_every=2",
            "--set", "train.eval_every=100"]
    ref = tmp_path / "ref"
    _cli("train", *args, "-o", str(ref))
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "stepdistill", "train", *args, "-o", str(run)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(run, proc, min_step=4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()
    again = _cli("train", *args, "-o", str(run), check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
    _cli("train", *args, "-o", str(run), "--resume")
    m_ref = json.loads((ref / "metrics.json").read_text())
    m_run = json.loads((run / "metrics.json").read_text())
    assert m_run["train"]["steps"] == m_ref["train"]["steps"] == 12
    assert m_run["train"]["machines"] == m_ref["train"]["machines"]  # resumed on the same machine: named once
    from safetensors.torch import load_file

    a, b = load_file(ref / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    # a finished run keeps no checkpoint (train.keep_checkpoint=false), and resuming it is a no-op
    assert not any((run / name).exists() for name in ("checkpoint", "checkpoint.old", "checkpoint.tmp"))
    before = (run / "model" / "model.safetensors").stat().st_mtime_ns
    _cli("train", *args, "-o", str(run), "--resume")
    assert (run / "model" / "model.safetensors").stat().st_mtime_ns == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_training_with_torchrun(tmp_path, data_dir):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "stepdistill", "train", "configs/tiny-causal.yaml", "-o",
           str(run), "--set", "train.max_steps=4", "--set", "train.eval_every=2"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["processes"] == 2 and metrics["train"]["steps"] == 4
    # global batch = 2 processes x 8 examples
    assert metrics["train"]["epochs"] == pytest.approx(4 / 3, abs=1e-3)
    assert (run / "model" / "model.safetensors").is_file()


def test_errors_are_one_line_without_traceback(capsys, tmp_path):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config file") and err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: {name: magic}\ntrain: {lr: fast}\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "train.lr: expected float" in err and "Traceback" not in err


def test_openmp_wait_policy_is_chosen_per_command(tmp_path, monkeypatch):
    """Passive OpenMP waits for torch commands; none forced for serve, whatever the engine (llama.cpp ran 2-3.5x
    slower with them, the torch engine's float16 decode 1.3x); a policy the user exported is kept."""
    missing = str(tmp_path / "missing-run")
    for argv, policy in ((["serve", missing, "--engine", "llamacpp"], None), (["serve", missing], None),
                         (["predict", missing, str(tmp_path / "in.jsonl")], "PASSIVE")):
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        assert main(argv) == 2
        assert os.environ.get("OMP_WAIT_POLICY") == policy, argv
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["predict", missing, str(tmp_path / "in.jsonl")]) == 2
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_malformed_data_reports_file_and_line(tmp_path, capsys):
    spec = tmp_path / "task.yaml"
    spec.write_text("name: t\ntype: classification\nlabels: [a, b]\ninput_template: '{text}'\n"
                    "files: {train: train.jsonl}\n")
    (tmp_path / "train.jsonl").write_text('{"id": "1", "text": "x", "label": "a"}\n{"id": "2", "text": \n')
    assert main(["train", "configs/tiny-causal.yaml", "--set", f"data.task={spec}", "-o", str(tmp_path / "r")]) == 2
    assert "train.jsonl:2: invalid JSON" in capsys.readouterr().err


def test_tasks_and_students_commands(capsys, data_dir):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "svamp" in out and "train inputs are not available" in out
    assert main(["students"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path, data_dir):
    args = ["configs/tiny-causal.yaml", "--set", "train.epochs=4", "--set", "train.eval_every=1000",
            "--set", "train.checkpoint_every=null"]
    run = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "stepdistill", "train", *args, "-o", str(run)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run / "train_log.jsonl"
    deadline = time.time() + 300
    while not (log.is_file() and log.read_text().strip()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "continue with --resume" in out + err
    step = json.loads((run / "checkpoint" / "state.json").read_text())["state"]["step"]
    assert 1 <= step < 24
    _cli("train", *args, "-o", str(run), "--resume", "--set", "train.keep_checkpoint=true")
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 24
    assert (run / "checkpoint" / "state.json").is_file()  # kept on request


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, data_dir):
    """train.compile=true really compiles the training step (dynamo records graphs) and gives the eager run's
    losses (steps 1 and 10) within float noise, on batches of changing length."""
    import torch._dynamo

    from stepdistill.config import load_config
    from stepdistill.student import train

    losses = {}
    for compiled in (False, True):
        cfg = load_config(REPO / "configs" / "tiny-causal.yaml", [
            f"output_dir={tmp_path / str(compiled)}", "train.max_steps=10", "data.valid_size=4",
            f"train.compile={str(compiled).lower()}", "student.prompt_layout=suffix"])
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        run = train.run(cfg, overwrite=True)
        log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
        losses[compiled] = [r["loss"] for r in log if "loss" in r]
        assert (torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0) == compiled
    assert len(losses[True]) == len(losses[False]) == 2  # logged at steps 1 and 10
    for a, b in zip(losses[True], losses[False]):
        assert abs(a - b) <= 1e-4 * abs(b), losses


@pytest.mark.slow
def test_auto_precision_takes_bf16_only_with_bf16_units_and_emulated_bf16_warns(tmp_path, data_dir, monkeypatch,
                                                                                 capsys):
    """On a CPU without bf16 units, autocast emulates bf16 and trains slower than fp32 (throughput.json,
    training_same_examples_icelake): auto falls back to fp32 there (the same losses as fp32), an explicit bf16 is
    kept with a warning, and metrics.json names the precision used. The CPU's flags are faked both ways."""
    from stepdistill.config import load_config
    from stepdistill.student import machine, train

    first = {}
    for isa, setting, used, warns in [([], "fp32", "fp32", False), (["avx512f"], "auto", "fp32", False),
                                      (["avx512_bf16", "avx512f"], "auto", "bf16", False),
                                      (["avx512f"], "bf16", "bf16", True), (["amx_bf16"], "bf16", "bf16", False)]:
        monkeypatch.setattr(machine, "cpu_isa", lambda isa=isa: isa)
        cfg = load_config(REPO / "configs" / "tiny-causal.yaml", [
            f"output_dir={tmp_path / (setting + '-' + '-'.join(isa))}", "train.max_steps=2", "data.valid_size=4",
            f"train.mixed_precision={setting}", "student.prompt_layout=suffix"])
        run = train.run(cfg, overwrite=True)
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["train"]["precision"] == used and metrics["train"]["machines"][0]["isa"] == isa
        assert ("autocast emulates bf16" in capsys.readouterr().err) == warns, (isa, setting)
        log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
        first.setdefault(used, []).append(next(r["loss"] for r in log if "loss" in r))
    assert len(set(first["fp32"])) == 1 and first["bf16"][0] != first["fp32"][0]


@pytest.mark.slow
def test_bf16_and_float32_runs_in_one_process(tmp_path, data_dir):
    """train.mixed_precision=bf16 really autocasts (the first loss moves a little, not a lot), and runs with
    different precisions can follow each other in one Python process (a notebook, quality.py)."""
    from stepdistill.config import load_config
    from stepdistill.student import train

    first = {}
    for precision in ("fp32", "bf16", "fp32"):
        cfg = load_config(REPO / "configs" / "tiny-causal.yaml", [
            f"output_dir={tmp_path / precision}", "train.max_steps=2", "data.valid_size=4",
            f"train.mixed_precision={precision}", "student.prompt_layout=suffix"])
        run = train.run(cfg, overwrite=True)
        log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
        first.setdefault(precision, []).append(next(r["loss"] for r in log if "loss" in r))
    assert first["fp32"][0] == first["fp32"][1]  # float32 is deterministic
    assert first["bf16"][0] != first["fp32"][0]
    assert abs(first["bf16"][0] - first["fp32"][0]) < 0.05 * first["fp32"][0]
