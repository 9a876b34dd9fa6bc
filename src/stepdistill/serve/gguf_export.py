"""GGUF export of a causal student for llama.cpp (and Ollama), written with the ``gguf`` library.

    stepdistill export runs/svamp-smollm2 exported/svamp --gguf --quant q8_0
    llama-server -m exported/svamp/model-q8_0.gguf --port 8080     # then POST /v1/chat/completions

Covers the architectures of our causal aliases: Llama (SmolLM2), Qwen2 and Gemma, with byte-level BPE
tokenizers (llama.cpp's ``gpt2`` tokenizer model; the pre-tokenizer is read from ``tokenizer.json``).
The file carries the tokenizer (no BOS is added: the student was trained without one) and a chat
template that puts the **last user message** (the formatted task input) between the label view's
prefix and marker, as in training; the stepdistill prompt spec is stored as ``stepdistill.prompt``.
Caveat: llama.cpp tokenizes the whole templated prompt at once, while training tokenized prefix, input and
marker one by one; where a piece boundary falls inside a word (the ``prefix`` layout's ``"[label] "``
before the input) the tokens can differ. ``stepdistill serve --engine llamacpp`` feeds the exact ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from stepdistill.errors import StepdistillError

QUANTS = ("f16", "q8_0", "f32")
ARCHES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "GemmaForCausalLM": "gemma"}


def _pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenization (the regex that splits text before BPE)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [(s.get("type"), s.get("use_regex"), s.get("individual_digits")) for s in steps]
    if kinds == [("ByteLevel", True, None)]:
        return "gpt-2"
    if kinds == [("Digits", None, True), ("ByteLevel", True, None)]:
        return "smollm"
    if len(steps) == 2 and kinds[1][:2] == ("ByteLevel", False) and steps[0].get("type") == "Split" \
            and "\\p{N}" in json.dumps(steps[0]) and "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in json.dumps(steps[0]):
        return "qwen2"
    raise StepdistillError(f"GGUF export cannot name this tokenizer's pre-tokenizer for llama.cpp ({kinds}); "
                           "supported: byte-level BPE as in GPT-2, SmolLM and Qwen2")


def _vocab(tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) for the ``gpt2`` tokenizer model."""
    from gguf import TokenType

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    if data["model"]["type"] != "BPE":
        raise StepdistillError(f"GGUF export needs a BPE tokenizer, this one is {data['model']['type']}")
    by_id = {i: t for t, i in data["model"]["vocab"].items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(TokenType.CONTROL if added[i]["special"] else TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    return tokens, [int(t) for t in types], merges


def chat_template(spec: dict) -> str:
    """Jinja: the last user message between the label view's prefix and marker, nothing else."""
    before, after = spec["label_prefix"], spec["answer_marker"]
    return ("{%- set ns = namespace(text='') -%}{%- for m in messages -%}{%- if m['role'] == 'user' -%}"
            "{%- set ns.text = m['content'] -%}{%- endif -%}{%- endfor -%}"
            f"{{{{ {json.dumps(before)} + ns.text + {json.dumps(after)} }}}}")


def _permute(w, n_head: int):
    """HF's rotary layout of q/k rows -> llama.cpp's (as llama.cpp's convert_hf_to_gguf.py does for Llama)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(model, arch: str):
    """(gguf name, float32 numpy array) for every weight, in llama.cpp's layout."""
    import gguf

    cfg = model.config
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), cfg.num_hidden_layers)
    tied = getattr(cfg, "tie_word_embeddings", False)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise StepdistillError(f"GGUF export: no llama.cpp name for tensor {name} ({arch})")
        data = tensor.detach().float().cpu().numpy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            data = _permute(data, cfg.num_attention_heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            data = _permute(data, cfg.num_key_value_heads)
        if arch == "gemma" and name.endswith("norm.weight"):
            data = data + 1  # Gemma's RMSNorm scales by (1 + w); llama.cpp stores 1 + w
        yield new, data


def _hparams(writer, cfg, arch: str, tokenizer_json: dict, tokenizer, spec: dict, name: str) -> None:
    import gguf

    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if (rope.get("rope_type") or rope.get("type") or "default") != "default":
        raise StepdistillError(f"GGUF export: rope scaling {rope} is not covered")
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(theta)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    tokens, types, merges = _vocab(tokenizer, cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for add, tid in ((writer.add_eos_token_id, tokenizer.eos_token_id), (writer.add_pad_token_id,
                     tokenizer.pad_token_id), (writer.add_bos_token_id, tokenizer.bos_token_id)):
        if tid is not None:
            add(int(tid))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(chat_template(spec))
    writer.add_string("stepdistill.prompt", json.dumps(spec, sort_keys=True))
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[spec["gguf_quant"]])


def export_gguf(model, tokenizer, spec: dict, out: Path, quant: str = "f16", name: str = "stepdistill student") -> Path:
    """Write the causal ``model`` (HF, with ``tokenizer``) to ``out`` (a .gguf file) in ``quant``."""
    import gguf
    import numpy as np

    if quant not in QUANTS:
        raise StepdistillError(f"--quant must be one of {', '.join(QUANTS)}, got '{quant}'")
    if spec["family"] != "causal":
        raise StepdistillError("GGUF export covers causal students only (llama.cpp runs decoder-only models)")
    if spec["method"] == "single_task":
        raise StepdistillError("GGUF export covers label-first students; a single_task student writes its "
                               "rationale first (its chat template would need the rationale view)")
    arch = ARCHES.get((model.config.architectures or [type(model).__name__])[0], None) or ARCHES.get(
        type(model).__name__)
    if arch is None:
        raise StepdistillError(f"GGUF export covers {', '.join(ARCHES)}; this student is {type(model).__name__}")
    tokenizer_json = json.loads(tokenizer.backend_tokenizer.to_str())
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
             "f32": gguf.GGMLQuantizationType.F32}[quant]
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    _hparams(writer, model.config, arch, tokenizer_json, tokenizer, {**spec, "gguf_quant": quant}, name)
    for tname, data in _tensors(model, arch):
        if data.ndim < 2 or quant == "f32":
            writer.add_tensor(tname, data.astype(np.float32))
        elif quant == "q8_0" and data.shape[-1] % 32 == 0:
            writer.add_tensor(tname, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(tname, data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def card_section(gguf_name: str, spec: dict) -> str:
    """The model card's part on running the GGUF with llama.cpp's server and with Ollama."""
    example = spec["input_template"]
    return f"""
## Run with llama.cpp or Ollama

`{gguf_name}` holds the weights, the tokenizer and a chat template: the **last user message** is the
formatted input (the template above: `{example!r}`), wrapped as `{spec['label_prefix']!r} + input +
{spec['answer_marker']!r}`; no BOS token. Decode greedily; the first line of the answer is the label.

```bash
llama-server -m {gguf_name} --port 8080 --temp 0 --top-k 1
curl -s 127.0.0.1:8080/v1/chat/completions -d '{{"messages": [{{"role": "user", "content": "<formatted input>"}}], "max_tokens": {spec['max_new_tokens']}}}'

cat > Modelfile <<'EOF'
FROM ./{gguf_name}
TEMPLATE {'"' * 3}{spec['label_prefix']}{{{{ .Prompt }}}}{spec['answer_marker']}{'"' * 3}
PARAMETER temperature 0
PARAMETER top_k 1
PARAMETER num_predict {spec['max_new_tokens']}
EOF
ollama create student -f Modelfile && ollama run student "<formatted input>"
```
llama.cpp tokenizes the templated prompt as one string; where the prompt prefix ends inside a word
(the `prefix` layout's `"[label] "`), a label can differ from stepdistill's, which tokenizes the pieces
one by one (`stepdistill serve DIR --engine llamacpp` feeds those exact tokens to llama.cpp).
"""
