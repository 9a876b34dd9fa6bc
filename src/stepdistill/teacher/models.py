"""Local teacher models for the transformers backend: an alias (``smollm2-135m``), a HF directory, a
``.gguf`` file or a hub name. Loading goes through the student stage's loader, so both stages share one
cache of dequantised GGUF models under ``~/.cache/stepdistill``.
"""

from __future__ import annotations


def load_causal_lm(name: str):
    """(model, tokenizer) in eval mode with left padding, ready for batched generation."""
    from stepdistill.student.models import load_pretrained

    model, tokenizer = load_pretrained("causal", name)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
