"""Predict labels on a split with a trained run and score them (updates RUN/metrics.json).

    stepdistill evaluate runs/svamp-dsbs-gold-s42 --split test
    stepdistill evaluate runs/cqa-dsbs-gold-s42 --label-scoring score   # kept beside the generated results
"""


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN", help="a run directory written by `stepdistill train`")
    p.add_argument("--split", default="test", choices=["test", "valid", "train"])
    p.add_argument("--data-dir", help="benchmark data folder (else the run's data.data_dir, else $STEPDISTILL_DATA)")
    p.add_argument("--batch-size", type=int, help="prediction batch size")
    p.add_argument("--label-scoring", choices=["generate", "score"],
                   help="how to pick the label (default: the run's eval.label_scoring); score = one forward "
                        "scores each candidate (classification and multiple-choice tasks). A setting other than "
                        "the run's own is stored beside it (metrics.json key SPLIT:score, "
                        "SPLIT_score_predictions.jsonl)")


def main(args) -> int:
    from stepdistill import evaluate

    m = evaluate.run(args.run_dir, args.split, data_dir=args.data_dir, batch_size=args.batch_size,
                     scoring=args.label_scoring)
    r = m.get(f"{args.split}:{args.label_scoring}") or m[args.split]
    line = (f"{args.split} ({r['label_scoring']}): accuracy={r['accuracy']:.4f} n={r['n']} "
            f"parse_failures={r['parse_failures']}")
    if r.get("teacher", {}).get("accuracy") is not None:
        line += f" teacher_accuracy={r['teacher']['accuracy']:.4f}"
    print(line)
    return 0
