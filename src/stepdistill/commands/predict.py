"""Predict labels (and rationales with --explain) for JSONL inputs with a trained student.

    stepdistill predict runs/tiny-causal-svamp-dsbs-s0 inputs.jsonl --explain -o predictions.jsonl
    echo '{"id": 1, "body": "Tom has 3 apples and buys 4 more.", "question": "How many apples?"}' \
        | stepdistill predict runs/tiny-causal-svamp-dsbs-s0 -

Each input line is an object of the task's fields (put through the task's template; for a task whose template
has {text}, {"text": "..."} is that field), or a JSON string holding an already formatted input, used as is (the
same rule as serve and Student.predict); an object's optional "id" is copied through. Output: one JSON object per input line (id, label, raw, rationale).
"""


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN", help="a run directory (or its model/ directory)")
    p.add_argument("input", nargs="?", default="-", help="JSONL file, or - for stdin (default)")
    p.add_argument("-o", "--output", default="-", help="output JSONL file (default: stdout)")
    p.add_argument("--explain", action="store_true", help="also generate a rationale (dsbs/single_task students)")
    p.add_argument("--batch-size", type=int, default=16, help="inputs per generation batch (default 16)")
    p.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="a malformed line: stop (default; exit 2 naming FILE:LINE, nothing written) or skip "
                        "(report it on stderr, write an error record in its place, go on)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--label-scoring", choices=("generate", "score"),
                   help="generate the label, or score each candidate label in one forward and take the best "
                        "(classification and multiple-choice tasks); default: the student's own setting")


def main(args) -> int:
    import os
    import sys
    from pathlib import Path

    from stepdistill.errors import StepdistillError, make_dir
    from stepdistill.serve.jsonl import predict_jsonl
    from stepdistill.student import Student

    if args.batch_size < 1:
        raise StepdistillError("--batch-size must be at least 1")
    if args.input != "-" and not Path(args.input).is_file():
        raise StepdistillError(f"{args.input}: no such file")
    if args.output != "-":
        make_dir(Path(args.output).parent, "-o")  # before the model loads
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    student = Student.load(args.run_dir)
    if args.explain and not student.can_explain:
        raise StepdistillError(f"--explain needs a dsbs or single_task student; {args.run_dir} was trained with "
                               f"method '{student.method}'")
    student.label_scoring(args.label_scoring)  # an option that does not apply fails before any input is read
    source = "<stdin>" if args.input == "-" else args.input

    def predict_to(fout):
        return predict_jsonl(student, fin, fout, source=source, explain=args.explain, batch_size=args.batch_size,
                             on_error=args.on_error, scoring=args.label_scoring,
                             warn=lambda msg: print(f"skipped {msg}", file=sys.stderr))

    stdin = getattr(sys.stdin, "buffer", sys.stdin)
    fin = stdin if args.input == "-" else open(args.input, "rb")  # decoded line by line: a bad byte is file:line
    try:
        if args.output == "-":
            summary = predict_to(sys.stdout)
        else:  # written beside, then renamed: a stopped run leaves no partial file
            tmp = Path(args.output).with_name(Path(args.output).name + ".tmp")
            try:
                with open(tmp, "w", encoding="utf-8") as fout:
                    summary = predict_to(fout)
                os.replace(tmp, args.output)
            finally:
                tmp.unlink(missing_ok=True)
    finally:
        if fin is not stdin:
            fin.close()
    print(f"predicted {summary.predicted} input(s), skipped {summary.skipped} malformed line(s) in "
          f"{summary.seconds} s" + ("" if args.output == "-" else f" -> {args.output}"), file=sys.stderr)
    return 0
