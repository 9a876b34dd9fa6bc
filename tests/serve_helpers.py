"""Helpers for the serve-stage tests: untrained-but-lively student directories (no training, no data),
a tiny trained run, and a uvicorn server on a free loopback port in a thread."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["Tom has 3 apples and buys 4 more.\nHow many apples does he have?",
         "A bus has 40 seats and 12 are empty.\nHow many people are on the bus?", "x",
         "Sara had 5 pens. She gave 2 away.\nHow many are left?"]


def lively_model_dir(root: Path, family: str = "causal", method: str = "dsbs", std: float = 0.3,
                     layout: str = "prefix") -> Path:
    """A tiny random student with large weights, saved like a trained one: its greedy outputs differ from
    input to input (a freshly initialised tiny model answers the same token everywhere)."""
    import torch

    from stepdistill.config import load_config
    from stepdistill.student.models import tiny_random_llama, tiny_random_t5
    from stepdistill.student.train import save_student, student_meta
    from stepdistill.tasks import get_task

    cfg = load_config(REPO / "configs" / f"tiny-{family if family == 'causal' else 'seq2seq'}.yaml",
                      [f"method.name={method}", "student.max_rationale_tokens=24", f"student.prompt_layout={layout}"])
    model, tok = (tiny_random_llama if family == "causal" else tiny_random_t5)(seed=1)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, std)
    out = root / f"lively-{family}-{method}-{layout}" / "model"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_student(model, tok, out, student_meta(cfg, get_task(cfg.data.task)))
    return out


def tiny_run(root: Path, config: str = "tiny-causal.yaml") -> Path:
    """A real (tiny) run directory from the pipeline: config.yaml, model/, metrics.json, predictions.jsonl."""
    from stepdistill import pipeline
    from stepdistill.config import load_config

    cfg = load_config(REPO / "configs" / config, [f"output_dir={root / 'run'}", "train.epochs=1",
                                                  "data.train_size=16", "data.valid_size=8", "data.test_size=8"])
    return pipeline.run(cfg, overwrite=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """``with ThreadServer(app) as url:`` serves ``app`` with uvicorn on a free loopback port."""

    def __init__(self, app, settings=None):
        import uvicorn

        from stepdistill.serve.server import ServeSettings, uvicorn_config

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(app, settings or ServeSettings(), log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def bpe_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer (GPT-2 style, so llama.cpp reads it as 'gpt2'), trained in-process."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = TEXTS * 20 + ["[label] [rationale] Answer: Rationale: So the answer is 7 ( 3 + 4 ) apples pens seats"] * 20
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>")


def lively_bpe_dir(root: Path, arch: str = "llama", method: str = "dsbs", layout: str = "suffix",
                   std: float = 0.3) -> Path:
    """Like ``lively_model_dir``, for a Llama, Qwen2 or Gemma student with a BPE tokenizer llama.cpp can read."""
    import torch
    import transformers

    from stepdistill.config import load_config
    from stepdistill.student.train import save_student, student_meta
    from stepdistill.tasks import get_task

    cfg = load_config(REPO / "configs" / "tiny-causal.yaml",
                      [f"method.name={method}", "student.max_rationale_tokens=24", f"student.prompt_layout={layout}"])
    tok = bpe_tokenizer()
    kinds = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
             "gemma": ("GemmaConfig", "GemmaForCausalLM")}
    config_cls, model_cls = (getattr(transformers, n) for n in kinds[arch])
    config = config_cls(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
                        **({"head_dim": 16} if arch == "gemma" else {}))
    torch.manual_seed(0)
    model = model_cls(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, std)
    out = root / f"lively-bpe-{arch}-{method}-{layout}" / "model"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_student(model, tok, out, student_meta(cfg, get_task(cfg.data.task)))
    return out
