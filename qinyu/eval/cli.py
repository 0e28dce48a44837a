"""``qinyu eval``: run a benchmark on a checkpoint, and compare runs.

    qinyu eval run BENCH --model DIR --data DIR --out DIR [--limit N] [--batch N]
                   [--judge-url URL --judge-model NAME [--judge-key KEY]] [--judge-prompts FILE]
                   [--asr SPEC ...]
                   [--normaliser NAME] [--judge-text] [--reward-model DIR] [--subset NAME ...]
    qinyu eval report DIR [DIR ...] [--out FILE]

A run resumes: items finished in ``--out`` are not generated again. What each benchmark
needs (data layout, scorers, judge prompt files): docs/eval.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .runners import BENCHMARKS


def add_eval_parser(sub) -> None:
    """Add the ``eval`` command group to ``qinyu``'s subparsers."""
    ev = sub.add_parser("eval", help="benchmarks: run one on a checkpoint (generate, score, report); compare runs")
    esub = ev.add_subparsers(dest="eval_command", metavar="COMMAND", required=True)

    p = esub.add_parser("run", help="generate the model's replies on a benchmark, score them, write a report")
    p.add_argument("bench", choices=BENCHMARKS, help="benchmark")
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--data", required=True, help="local copy of the benchmark data, in its published layout")
    p.add_argument("--out", required=True, help="output folder (replies, audio, items.jsonl, report.json/.md); "
                   "a second run resumes there")
    p.add_argument("--limit", type=int, help="only the first N items (asr, charactereval: of the data; seedtts: "
                   "per list; uro: per dataset; c3: per reference file)")
    p.add_argument("--batch", type=int, default=8, help="requests decoded together (default 8)")
    p.add_argument("--max-steps", type=int, default=1024, help="decode-step budget per reply (default 1024)")
    p.add_argument("--judge-url", help="OpenAI-compatible endpoint of the LLM judge (c3, uro), e.g. "
                   "https://api.openai.com/v1")
    p.add_argument("--judge-model", help="judge model name (C3: gpt-4o / deepseek-r1; URO: gpt-4o-mini)")
    p.add_argument("--judge-key", default=os.environ.get("OPENAI_API_KEY"),
                   help="API key of the judge (default: $OPENAI_API_KEY)")
    p.add_argument("--judge-retries", type=int, help="retries per judge request (default: the benchmark's)")
    p.add_argument("--judge-timeout", type=float, help="seconds per judge request (default 60)")
    p.add_argument("--judge-prompts", metavar="FILE", help="the benchmark's own judge prompts, not shipped with "
                   "qinyu (c3: prompts.json from github.com/step-out/C3, unchanged; uro: a JSON file filled from "
                   "URO-Bench's metrics/mark_gpt.py); see docs/eval.md")
    p.add_argument("--asr", action="append", metavar="[LANG=]SPEC",
                   help="recogniser for 'ASR of the reply' (seedtts, uro): whisper:DIR, paraformer:DIR, or slm (the "
                   "model's own ASR prompt; offline, not the protocol's); LANG= (en, zh) for one language only; "
                   "repeatable")
    p.add_argument("--normaliser", help="text normaliser for WER/CER (asr: default wenet; seedtts: default "
                   "seedtts-en/seedtts-zh)")
    p.add_argument("--judge-text", action="store_true", help="uro: judge the text reply instead of an ASR "
                   "transcript of the speech reply")
    p.add_argument("--reward-model", metavar="DIR", help="charactereval: a local morecry/BaichuanCharRM folder")
    p.add_argument("--subset", action="append", help="only this subset (seedtts: en, zh, zh-hardcase; c3: english, "
                   "chinese; uro: a dataset name); repeatable")
    p.add_argument("--device", default="auto", help="device of the model and the recognisers: auto (cuda when "
                   "available), cpu, cuda, cuda:1, ...")
    p.add_argument("--label", help="name of this run in reports (default: the checkpoint folder's name)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval_run)

    p = esub.add_parser("report", help="side-by-side table of one or more runs (with the paper's quoted rows)")
    p.add_argument("dirs", nargs="+", help="output folders of `qinyu eval run`")
    p.add_argument("--out", help="also write the table to this file")
    p.set_defaults(func=cmd_eval_report)

    from ..nano.cli import add_eval_nano_parser  # `qinyu eval nano` (the nano corpus's held-out split)

    add_eval_nano_parser(esub)


def options_from_args(args):
    """RunOptions from parsed arguments; bad combinations are errors naming the flag."""
    from .runners.base import JudgeConfig, RunOptions, RunnerError, parse_asr_specs

    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise RunnerError(f"--model {model}: not a checkpoint folder (no config.json)")
    if bool(args.judge_url) != bool(args.judge_model):
        raise RunnerError("--judge-url and --judge-model go together (the endpoint and the judge model's name)")
    if args.judge_text and args.bench != "uro":
        raise RunnerError("--judge-text applies to uro only (c3 always judges the text reply)")
    if args.judge_prompts and args.bench not in ("c3", "uro"):
        raise RunnerError("--judge-prompts applies to c3 and uro only (the benchmarks judged by an LLM)")
    if args.judge_prompts and not Path(args.judge_prompts).is_file():
        raise RunnerError(f"--judge-prompts {args.judge_prompts}: file not found")
    if args.reward_model and args.bench != "charactereval":
        raise RunnerError("--reward-model applies to charactereval only")
    if args.normaliser:
        from .normalize import get_normaliser

        try:
            get_normaliser(args.normaliser)
        except ValueError as e:
            raise RunnerError(f"--normaliser: {e}") from None
    if args.max_steps < 1:
        raise RunnerError(f"--max-steps must be >= 1, got {args.max_steps}")
    parse_asr_specs(args.asr)  # fails early on a malformed spec
    judge = JudgeConfig(args.judge_url, args.judge_model, args.judge_key, args.judge_retries,
                        args.judge_timeout) if args.judge_url else None
    return RunOptions(model=model, data=Path(args.data), out=Path(args.out), limit=args.limit, batch=args.batch,
                      max_steps=args.max_steps, judge=judge, asr=args.asr, normaliser=args.normaliser,
                      judge_text=args.judge_text, reward_model=args.reward_model, subsets=args.subset,
                      judge_prompts=Path(args.judge_prompts) if args.judge_prompts else None,
                      progress=not args.quiet, label=args.label, device=args.device)


def cmd_eval_run(args) -> int:
    from .judge import JudgeError, ScorerMissing
    from .runners import run_benchmark
    from .runners.base import RunnerError

    try:
        report = run_benchmark(args.bench, options_from_args(args))
    except ScorerMissing as e:
        print(f"error: a required scorer is missing: {e}", file=sys.stderr)
        return 2
    except (RunnerError, JudgeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"{report['generated']} item(s) generated, {report['reused']} reused from {out}; "
          f"{report['items_failed']} of {report['items']} failed; report: {out / 'report.md'}", file=sys.stderr)
    return 0


def cmd_eval_report(args) -> int:
    from .report import compare

    try:
        text = compare(args.dirs)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0
