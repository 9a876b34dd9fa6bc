"""Serve stage: a trained student behind a JSONL command, an HTTP server, and a standalone export.

    stepdistill predict runs/tiny-causal-svamp-dsbs-s0 inputs.jsonl --explain
    stepdistill serve runs/tiny-causal-svamp-dsbs-s0 --host 127.0.0.1 --port 8000
    stepdistill export runs/tiny-causal-svamp-dsbs-s0 exported/tiny --onnx

Python: ``Student.load(run_dir).predict(inputs, explain=True)`` (see ``stepdistill.student``).
Modules: ``info`` (what a run directory holds), ``jsonl`` (the predict verb), ``server`` (FastAPI app
with a micro-batcher), ``export`` (HF directory + model card), ``onnx`` (label-only ONNX path).
fastapi/uvicorn and onnx/onnxruntime are imported only by the modules that need them.
"""

from stepdistill.serve.info import RunInfo, run_info

__all__ = ["RunInfo", "run_info"]
