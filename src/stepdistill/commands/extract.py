"""Ask a teacher LLM for a rationale and a label per input; resumable, exported as JSONL.

    stepdistill extract --task svamp --teacher openai --base-url http://127.0.0.1:8080/v1 --model m --limit 10
    stepdistill extract --task cqa --split test --teacher precomputed --input ../shared/data/cqa/test.jsonl
"""


def add_arguments(p):
    g = p.add_argument_group("what")
    g.add_argument("--task", required=True, help="built-in task name or a custom task YAML")
    g.add_argument("--data-dir", help="benchmark data folder (else $STEPDISTILL_DATA)")
    g.add_argument("--split", default="pool", help="pool (default: the whole training pool), train (the student's "
                   "training rows: the pool less validation), valid or test")
    g.add_argument("--limit", type=int, help="only the first N examples of the split (for a quick look; to train "
                   "on N rows use --train-size)")
    g.add_argument("--train-size", type=_size, help="exactly the rows a student with data.train_size=N trains on: "
                   "the same split and seeded subsample (a count, or a fraction <= 1); implies --split train")
    g.add_argument("--train-seed", type=int, help="the student's train.seed for --train-size (default: the "
                   "student's default)")
    g.add_argument("--exemplars", help="few-shot exemplars JSONL (default: the task's own)")
    g.add_argument("--rationalize", action="store_true", help="show the gold answer after each input and ask the "
                   "teacher to explain it (\"explain why the answer is X\"); rows record rationalized: true")
    t = p.add_argument_group("teacher")
    t.add_argument("--teacher", default="openai", help="backend: openai (default), transformers, precomputed; "
                   "see `stepdistill teachers`")
    t.add_argument("--model", help="served model name / local model (alias, HF dir, .gguf) / name for imports")
    t.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    t.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the API key")
    t.add_argument("--mode", default="chat", choices=("chat", "completion"), help="chat (default) or completion")
    t.add_argument("--temperature", type=float, default=0.0)
    t.add_argument("--max-tokens", type=int, default=192, help="token budget per answer (default 192)")
    t.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight (default 8)")
    t.add_argument("--timeout", type=float, default=120.0, help="openai: seconds per request (default 120)")
    t.add_argument("--max-retries", type=int, default=8, help="openai: retries per request (default 8)")
    t.add_argument("--batch-size", type=int, default=8, help="transformers: prompts per batch (default 8)")
    t.add_argument("--input", help="precomputed: JSONL of raw outputs")
    t.add_argument("--output-field", default="teacher_output", help="precomputed: field of the raw output")
    t.add_argument("--seed", type=int, default=0, help="sampling seed")
    t.add_argument("--teacher-id", help="name of the teacher in the store (default backend:model)")
    t.add_argument("--price-in", type=float, help="price per million prompt tokens (money spent and projected)")
    t.add_argument("--price-out", type=float, help="price per million completion tokens")
    t.add_argument("--max-cost", type=float, help="stop before the money spent on this store's answers could "
                   "pass this (needs the prices); rerun with a higher one to continue")
    o = p.add_argument_group("output")
    o.add_argument("--samples", type=int, default=1, help="rationales per input (self-consistency; needs "
                   "--temperature > 0)")
    o.add_argument("--filter", default="all", help="export policy: all (default), parsed, vote, gold")
    o.add_argument("--out", help="output folder (default runs/teacher/<task>)")
    o.add_argument("--store", help="SQLite store (default <out>/rationales.sqlite)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args) -> int:
    import os

    # before torch loads OpenMP: busy-waiting worker threads make CPU inference 5-20x slower when the
    # cores are shared with other processes
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from stepdistill.teacher.backends import TeacherSettings
    from stepdistill.teacher.extract import ExtractConfig, run

    settings = TeacherSettings(
        backend=args.teacher, model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
        mode=args.mode, temperature=args.temperature, max_tokens=args.max_tokens, concurrency=args.concurrency,
        timeout=args.timeout, max_retries=args.max_retries, batch_size=args.batch_size, input_path=args.input,
        output_field=args.output_field, seed=args.seed)
    rows = {"train_size": args.train_size} if args.train_size is not None else {}
    if args.train_seed is not None:
        rows["seed"] = args.train_seed
    split = "train" if args.train_size is not None and args.split == "pool" else args.split
    cfg = ExtractConfig(task=args.task, teacher=settings, data_dir=args.data_dir, split=split, limit=args.limit,
                        samples=args.samples, out=args.out, store=args.store, exemplars=args.exemplars,
                        filter=args.filter, teacher_id=args.teacher_id, rationalize=args.rationalize,
                        price_in=args.price_in, price_out=args.price_out, max_cost=args.max_cost, **rows)
    result = run(cfg, progress=not args.no_progress)
    print(format_summary(result.report))
    print(f"store: {result.store}\nexport: {result.export} ({result.report['exported']} rows; use it as "
          f"data.rationales)\nreport: {result.out_dir / 'report.json'}")
    if result.report["failed_this_run"]:
        print(f"{result.report['failed_this_run']} request(s) failed (first: {result.report['failures'][0]}); "
              "rerun the same command to retry only those")
        return 1
    if result.report["cost"]["stopped_by_budget"]:
        return 1
    return 0


def _size(text: str) -> int | float:
    """--train-size: a count (200) or a fraction (0.25), as data.train_size."""
    import argparse

    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a count or a fraction, got '{text}'") from None


def format_summary(r: dict) -> str:
    s = r["status"]
    lines = [
        f"{r['task']}: {r['rows']}/{r['examples'] * r['samples_per_example']} answers stored "
        f"({r['asked_this_run']} asked this run, {r['failed_this_run']} failed) in {r['seconds']} s",
        f"  status: ok {s['ok']}, unparsable {s['unparsable']}, truncated {s['truncated']}; "
        f"parse rate {r['parse_rate']}%",
        f"  teacher accuracy vs gold: {r['accuracy_vote']}% (vote), {r['accuracy_first_sample']}% (first sample)"
        + (f", {r['accuracy_official_parser_first_sample']}% (paper's parser)"
           if "accuracy_official_parser_first_sample" in r else ""),
        f"  agreement with vote: {r['agreement_with_vote']}%; tokens: {r['prompt_tokens']} prompt + "
        f"{r['completion_tokens']} completion",
    ]
    words = r.get("rationale_words") or {}
    if words.get("n"):
        lines.append(f"  rationale words: median {words['median']:g} (p10 {words['p10']:g}, p90 {words['p90']:g}, "
                     f"mean {words['mean']:g}) over {words['n']} parsed answers"
                     + ("; rationalized (the gold answer was in the prompt)" if r.get("rationalize") else ""))
    cost = r.get("cost") or {}
    if cost.get("projected_total") is not None:
        from stepdistill.teacher.cost import money

        lines.append(f"  cost: {money(cost['spent'])} spent ({money(cost['spent_this_run'])} this run), "
                     f"{money(cost['projected_total'])} projected for all"
                     + (f"; max_cost {cost['max_cost']:g}: {cost['not_asked_by_budget']} not asked"
                        if cost.get("stopped_by_budget") else ""))
    return "\n".join(lines)
