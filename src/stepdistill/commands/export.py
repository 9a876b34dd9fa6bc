"""Export a trained student as a standalone Hugging Face directory (safetensors, tokenizer, config,
model card) that loads with plain transformers; --onnx adds an ONNX graph of the label-only path.

    stepdistill export runs/tiny-causal-svamp-dsbs-s0 exported/tiny-svamp --onnx
"""


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN", help="a run directory (or its model/ directory)")
    p.add_argument("out", metavar="OUT", help="directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--onnx", action="store_true", help="also write onnx/model.onnx for label-only prediction "
                   "(causal students; needs: pip install onnx onnxruntime) and check it against PyTorch")


def main(args) -> int:
    from stepdistill.serve.export import export

    result = export(args.run_dir, args.out, overwrite=args.overwrite, onnx=args.onnx)
    print(f"exported {len(result.files)} files to {result.out} (prompt sha256 {result.prompt_hash[:16]})")
    if result.onnx:
        print(f"onnx: {result.onnx}")
    print(f"load it with: AutoModel*.from_pretrained({str(result.out)!r}); see {result.out / 'README.md'}")
    return 0
