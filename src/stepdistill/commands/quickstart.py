"""Offline demo of the whole pipeline: a local teacher writes rationales, two students train
(standard fine-tuning and distilling step-by-step), and a table compares them.

    stepdistill quickstart            # about 8 minutes on 2 idle CPU cores (README); results in runs/quickstart
"""


def add_arguments(p):
    p.add_argument("--out", default="runs/quickstart", help="run folder (default runs/quickstart)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    p.add_argument("--teacher", default="transformers", help="teacher backend (default transformers)")
    p.add_argument("--teacher-model", default="smollm2-135m", help="teacher model (default smollm2-135m)")
    p.add_argument("--base-url", help="use an OpenAI-compatible server as the teacher (sets --teacher openai)")
    p.add_argument("--student", default="smollm2-135m", help="student alias or path (default smollm2-135m)")
    p.add_argument("--train-size", type=int, default=64, help="student training rows (default 64)")
    p.add_argument("--test-size", type=int, help="cap on the 48 test rows")
    p.add_argument("--epochs", type=float, default=2, help="student epochs (default 2)")


def main(args) -> int:
    import os

    # before torch loads OpenMP: busy-waiting worker threads make CPU inference 5-20x slower when the
    # cores are shared with other processes
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from stepdistill.teacher.backends import TeacherSettings
    from stepdistill.teacher.quickstart import QuickstartConfig, run

    backend = "openai" if args.base_url else args.teacher
    teacher = TeacherSettings(backend=backend, model=args.teacher_model, base_url=args.base_url, mode="completion",
                              max_tokens=48, batch_size=8)
    cfg = QuickstartConfig(out=args.out, teacher=teacher, student=args.student, train_size=args.train_size,
                           test_size=args.test_size, epochs=args.epochs, overwrite=args.overwrite)
    results = run(cfg)
    print()
    print(results["table"])
    print(f"\n{results['seconds']['total_s']:.0f} s in all; details in {args.out}/results.json "
          f"(teacher: {args.out}/teacher, students: {args.out}/standard, {args.out}/dsbs)")
    return 0
