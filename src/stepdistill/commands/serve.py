"""Serve a trained student over HTTP (FastAPI + uvicorn): POST /predict, GET /health, GET /info.

    stepdistill serve runs/tiny-causal-svamp-dsbs-s0 --host 127.0.0.1 --port 8000
    curl -s 127.0.0.1:8000/predict \
        -d '{"input": {"body": "Tom has 3 apples and buys 4.", "question": "How many?"}, "explain": true}'

OpenAI-compatible routes: POST /v1/chat/completions, /v1/completions, GET /v1/models (see
stepdistill.serve.openai_api). Concurrent requests are micro-batched (--max-batch, --max-wait-ms). Requests
over the limits are answered 413; malformed ones 400/422; with --api-key (or $STEPDISTILL_API_KEY) every
route but /health needs `Authorization: Bearer KEY` (401). Binds to loopback unless --host says otherwise.
"""


def add_arguments(p):
    from stepdistill.serve.server import ServeSettings

    d = ServeSettings()
    p.add_argument("run_dir", metavar="RUN", help="a run directory (or its model/ directory)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help=f"default {d.max_body_bytes}")
    p.add_argument("--max-inputs", type=int, default=d.max_inputs,
                   help=f"inputs per request (default {d.max_inputs})")
    p.add_argument("--max-input-chars", type=int, default=d.max_input_chars,
                   help=f"characters per formatted input (default {d.max_input_chars})")
    p.add_argument("--max-batch", type=int, default=d.max_batch,
                   help=f"inputs per micro-batch (default {d.max_batch})")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help=f"wait for more requests before running a batch (default {d.max_wait_ms})")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help=f"inputs waiting before 503 (default {d.max_queue})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"generation batch size (default {d.batch_size})")
    p.add_argument("--request-timeout-s", type=float, default=d.request_timeout_s,
                   help=f"close/408 a client still sending its request after this (default {d.request_timeout_s:g})")
    p.add_argument("--rate-limit", type=float, default=d.rate_limit, help="requests/s per client address, "
                   "429 with Retry-After beyond (default 0: off)")
    p.add_argument("--rate-burst", type=int, default=d.rate_burst,
                   help=f"requests a client may send at once under --rate-limit (default {d.rate_burst})")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every route but /health (default: "
                   "$STEPDISTILL_API_KEY; prefer the variable: a flag shows in the process list)")
    p.add_argument("--engine", default="torch", help="what runs the model: torch (default), llamacpp (a GGUF "
                   "from `stepdistill export --gguf`), onnx (an export with --onnx)")
    p.add_argument("--precision", default="auto",
                   choices=("auto", "float32", "bfloat16", "float16", "float16-decode"),
                   help="torch engine (default auto: bfloat16 where the CPU/GPU has bf16 units, else float32; "
                   "float16-decode: float32 math with a float16 copy of the weights for decoding steps, without "
                   "drafts)")
    p.add_argument("--no-drafts", dest="drafts", action="store_false",
                   help="torch and onnx engines: decode one token per forward (default: a lone request checks up to "
                   "4 tokens a forward, drafted from the answers given so far; the same tokens either way)")
    p.add_argument("--model-name", help="model id on /v1/models (default: TASK-METHOD-student)")
    p.add_argument("--threads", type=int, help="CPU threads of the engine (1 is often fastest for small students on a "
                   "busy or small CPU)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))


def omp_wait_policy(args) -> str | None:
    """None: OpenMP's own default (threads spin briefly between ops) for every engine. llama.cpp, which syncs its
    threads after every op, ran 2-3.5x slower with passive waits; the torch engine's float16 decode steps ran
    1.25 req/s with the default against 0.94 with passive waits (float32: the same either way;
    benchmarks/results/serve_load_torch.json)."""
    return None


def main(args) -> int:
    from stepdistill.serve.server import ServeSettings, serve

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = ServeSettings(max_body_bytes=args.max_body_bytes, max_inputs=args.max_inputs,
                             max_input_chars=args.max_input_chars, max_batch=args.max_batch,
                             max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, batch_size=args.batch_size,
                             request_timeout_s=args.request_timeout_s, rate_limit=args.rate_limit,
                             rate_burst=args.rate_burst)
    serve(args.run_dir, host=args.host, port=args.port, settings=settings, log_level=args.log_level,
          engine=args.engine, api_key=args.api_key, model_name=args.model_name, threads=args.threads,
          precision=args.precision, drafts=args.drafts)
    return 0
