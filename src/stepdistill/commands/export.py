"""Export a trained student as a standalone Hugging Face directory (safetensors, tokenizer, config,
model card) that loads with plain transformers; --onnx adds an ONNX graph with a KV cache for greedy decoding,
--gguf a GGUF file for llama.cpp / Ollama (causal students: Llama, Qwen2, Gemma).

    stepdistill export runs/tiny-causal-svamp-dsbs-s0 exported/tiny-svamp --onnx
    stepdistill export runs/svamp-smollm2 exported/svamp --gguf --quant q8_0
"""


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN", help="a run directory (or its model/ directory)")
    p.add_argument("out", metavar="OUT", help="directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--onnx", action="store_true", help="also write onnx/model.onnx for greedy decoding with a KV "
                   "cache (causal students; needs: pip install onnx onnxruntime) and check it against PyTorch")
    p.add_argument("--gguf", action="store_true", help="also write model-QUANT.gguf for llama.cpp / Ollama "
                   "(causal Llama, Qwen2, Gemma students), with the tokenizer and a chat template of the prompt")
    p.add_argument("--quant", default="f16", choices=("f16", "q8_0", "f32"), help="GGUF weights (default f16)")


def main(args) -> int:
    from stepdistill.serve.export import export

    result = export(args.run_dir, args.out, overwrite=args.overwrite, onnx=args.onnx,
                    gguf=args.quant if args.gguf else None)
    print(f"exported {len(result.files)} files to {result.out} (prompt sha256 {result.prompt_hash[:16]})")
    if result.onnx:
        print(f"onnx: {result.onnx}")
    if result.gguf:
        print(f"gguf: {result.gguf}  (llama-server -m {result.gguf}; stepdistill serve {result.out} --engine llamacpp)")
    print(f"load it with: AutoModel*.from_pretrained({str(result.out)!r}); see {result.out / 'README.md'}")
    return 0
