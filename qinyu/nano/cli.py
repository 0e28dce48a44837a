"""``qinyu speedrun``, ``qinyu data nano-corpus`` and ``qinyu eval nano``.

    qinyu speedrun [--out DIR] [--from STEP] [--stop-after STEP] [--ship DIR] [--quiet]
    qinyu data nano-corpus [--out DIR] [--scale S] [--seed N] [--character-tts] [--counting] [--quiet]
    qinyu eval nano --model DIR [--corpus DIR] --report OUT.md [--limit N] [--timbre DIR]
                    [--max-steps N] [--batch N] [--device D] [--save-audio] [--quiet]

Exit status: 0 when everything was made / evaluated, 1 when corpus items failed (re-run
to fill the gaps), 2 on bad arguments or missing files.
"""

from __future__ import annotations

import sys

from . import DEFAULT_CORPUS


def add_speedrun_parser(sub) -> None:
    from .speedrun import STEPS

    p = sub.add_parser("speedrun", help="qinyu-nano from nothing: corpus, codec, tokenizer, CAM++, text-to-timbre, "
                                        "SLM stages 0/1/2, evaluation (`make speedrun`; resumable; docs/nano.md)")
    p.add_argument("--out", default="runs/nano", help="run folder (default runs/nano)")
    p.add_argument("--corpus", help="an existing nano corpus folder to use (default OUT/corpus, built by the run)")
    p.add_argument("--from", dest="start_from", choices=STEPS, help="redo this step and every later one")
    p.add_argument("--stop-after", choices=STEPS, help="stop after this step")
    p.add_argument("--eval-limit", type=int, help="evaluate only the first N held-out items of each kind")
    p.add_argument("--ship", metavar="DIR", help="when the run is complete, copy its checkpoint (with report.md) "
                   "to DIR (e.g. checkpoints/qinyu-nano)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (step lines only)")
    p.set_defaults(func=cmd_speedrun)


def cmd_speedrun(args) -> int:
    import shutil
    from pathlib import Path

    from .speedrun import STEPS, Speedrun, SpeedrunConfig, SpeedrunError

    if args.eval_limit is not None and args.eval_limit < 1:
        print(f"error: --eval-limit must be >= 1, got {args.eval_limit}", file=sys.stderr)
        return 2
    if args.corpus and not (Path(args.corpus) / "train.jsonl").is_file():
        print(f"error: {args.corpus} is not a nano corpus (no train.jsonl); leave --corpus out to build one",
              file=sys.stderr)
        return 2
    run = Speedrun(args.out, SpeedrunConfig(eval_limit=args.eval_limit), corpus=args.corpus,
                   progress=not args.quiet)
    try:
        summary = run.run(start_from=args.start_from, stop_after=args.stop_after)
    except (SpeedrunError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"speedrun: {summary['total_seconds'] / 60:.1f} min; " +
          ", ".join(f"{k} {v:.0f} s" for k, v in summary["steps"].items()))
    if args.ship:
        if not all(run.done(s) for s in STEPS):
            print("error: --ship needs a complete run (every step done)", file=sys.stderr)
            return 1
        target = Path(args.ship)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(run.checkpoint, target)
        print(f"shipped {run.checkpoint} -> {target}")
    report = run.checkpoint / "report.md"
    if report.is_file():
        print(f"report: {report}")
    return 0


def add_corpus_parser(dsub) -> None:
    """``nano-corpus`` under ``qinyu data``."""
    p = dsub.add_parser("nano-corpus", help="synthesise the qinyu-nano corpus (QA, ASR/TTS pairs, role-play, "
                                            "singing) with its held-out split; resumable (docs/nano.md)")
    p.add_argument("--out", default=DEFAULT_CORPUS, help=f"corpus folder (default {DEFAULT_CORPUS})")
    p.add_argument("--scale", type=float, default=1.0, help="size: multiplies the train items (default 1.0: about "
                   "2,500 samples, 1.8 h of audio); below 1 also shrinks the held-out split")
    p.add_argument("--seed", type=int, default=0, help="seed of the plan and of the template backend")
    p.add_argument("--character-tts", action="store_true", help="also read every train QA reply in one of the "
                   "role-play voices, as TTS pairs in that voice (docs/nano.md; off in the speedrun)")
    p.add_argument("--counting", action="store_true", help="answer sums and differences by counting on from the "
                   "first operand (\"Three plus two: four, five. Five.\"; docs/nano.md, off in the speedrun)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_nano_corpus)


def add_eval_nano_parser(esub) -> None:
    """``nano`` under ``qinyu eval``."""
    p = esub.add_parser("nano", help="evaluate a checkpoint on the nano corpus's held-out split (QA accuracy, ASR "
                                     "CER, intelligibility, voice match, singing pitch) and write a report")
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"nano corpus folder (default {DEFAULT_CORPUS})")
    p.add_argument("--report", required=True, help="markdown report to write (plots and items in <stem>_files/, "
                   "the numbers also in <stem>.json)")
    p.add_argument("--limit", type=int, help="only the first N held-out items of each kind (qa, asr, roleplay, "
                   "singing)")
    p.add_argument("--timbre", help="text-to-timbre folder for role-play voices (default: MODEL/timbre if present)")
    p.add_argument("--max-steps", type=int, default=1536, help="decode-step cap per reply (default 1536; each "
                   "reply's budget follows its reference's length)")
    p.add_argument("--batch", type=int, default=8, help="replies decoded together (default 8)")
    p.add_argument("--device", default="auto", help="device of the model: auto (cuda when available; default), cpu, "
                   "cuda, cuda:1, ...")
    p.add_argument("--save-audio", action="store_true", help="also write every generated reply as a wav")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval_nano)


def cmd_nano_corpus(args) -> int:
    from .corpus import build_corpus

    try:
        summary = build_corpus(args.out, seed=args.seed, scale=args.scale, progress=not args.quiet,
                               character_tts=args.character_tts, counting=args.counting)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.quiet:
        print(summary.line())
    for pipeline, item_id, error in summary.failures[:20]:
        print(f"  failed {pipeline}/{item_id}: {error}", file=sys.stderr)
    for problem in summary.problems[:20]:
        print(f"  problem: {problem}", file=sys.stderr)
    if summary.failures:
        print(f"{len(summary.failures)} item(s) failed; run the same command again to fill the gaps", file=sys.stderr)
    return 0 if summary.ok else 1


def cmd_eval_nano(args) -> int:
    from pathlib import Path

    from .evaluate import NanoEvalError, evaluate_nano

    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    if args.max_steps < 1 or args.batch < 1:
        print("error: --max-steps and --batch must be >= 1", file=sys.stderr)
        return 2
    try:
        report = evaluate_nano(args.model, args.corpus, args.report, limit=args.limit, timbre=args.timbre,
                               max_steps=args.max_steps, batch=args.batch, device=args.device,
                               progress=not args.quiet, save_audio=args.save_audio)
    except (NanoEvalError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(Path(args.report).read_text(encoding="utf-8"))
    print(f"report: {args.report} ({report['seconds']} s)", file=sys.stderr)
    return 0
