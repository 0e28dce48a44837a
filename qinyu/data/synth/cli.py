"""``qinyu data synth {conversation,roleplay,singing}``: run a synthesis pipeline as a job.

Registered by ``qinyu.cli`` under ``qinyu data``::

    qinyu data synth singing --out corpus/singing                   # offline: templates + espeak-ng
    qinyu data synth conversation --out corpus/chat --backend openai \\
        --llm-url http://localhost:8000/v1 --llm-model Qwen3-8B --shard 0/4
    qinyu data synth roleplay --out corpus/rp --tts http --tts-url http://localhost:9000/tts

Exit status: 0 when every item of the shard is made (or deliberately skipped) and
samples.jsonl passes the schema check, 1 when items failed (re-run to fill the gaps),
2 when the job could not start.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_synth_parser(sub) -> argparse.ArgumentParser:
    """Add ``synth`` (with one sub-command per pipeline) to the ``qinyu data`` sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="output folder (wavs, samples.jsonl, manifest.json)")
    common.add_argument("--backend", choices=("template", "openai"), default="template",
                        help="text backend: offline templates (default) or an OpenAI-compatible LLM")
    common.add_argument("--llm-url", help="chat-completions base URL, e.g. http://localhost:8000/v1")
    common.add_argument("--llm-model", help="model name the LLM server knows")
    common.add_argument("--llm-key-env", default="OPENAI_API_KEY",
                        help="environment variable holding the API key (default OPENAI_API_KEY; never stored)")
    common.add_argument("--llm-rate", type=float, default=None, help="at most this many LLM requests per second")
    common.add_argument("--llm-retries", type=int, default=3, help="retries on connection errors, 429 and 5xx")
    common.add_argument("--llm-cache", help="LLM answer cache folder (default OUT/llm-cache)")
    common.add_argument("--tts", choices=("espeak", "http"), default="espeak",
                        help="speech backend: espeak-ng (default) or an HTTP instruct-TTS server")
    common.add_argument("--tts-url", help="instruct-TTS URL taking POST {text, instruction} and returning a wav")
    common.add_argument("--shard", default=None, help="i/n: make only items k with k mod n == i (default 0/1)")
    common.add_argument("--limit", type=int, default=None, help="only the first N planned items")
    common.add_argument("--seed", type=int, default=0, help="template backend seed")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    synth = sub.add_parser("synth", help="synthesise training data: conversation, role-play or singing "
                                         "(resumable, sharded; see docs/synthesis.md)")
    pipelines = synth.add_subparsers(dest="synth_pipeline", metavar="PIPELINE", required=True)
    p = pipelines.add_parser("conversation", parents=[common],
                             help="text dialogues -> filter, score, colloquial rewrite, TTS with varied user voices")
    p.add_argument("--source", help="JSONL of text dialogues {\"dialogue\": [{role, text}]} (default: built-in set)")
    p.add_argument("--min-score", type=int, default=6, help="drop dialogues the LLM scores below this (1..10)")
    p.set_defaults(func=cmd_synth)
    p = pipelines.add_parser("roleplay", parents=[common],
                             help="characters with described voices -> 8-15 turn scripts -> instruct TTS")
    p.set_defaults(func=cmd_synth)
    p = pipelines.add_parser("singing", parents=[common],
                             help="songs (note lists or MIDI with lyrics) -> spoken requests and sung answers")
    p.add_argument("--songs", nargs="+", help="song files (.json note lists, .mid/.midi with lyrics) "
                                              "(default: the built-in public-domain songs)")
    p.set_defaults(func=cmd_synth)
    return synth


def build_pipeline(args):
    """The pipeline object the arguments describe."""
    from pathlib import Path

    from .llm import make_llm
    from .tts import make_tts

    cache = args.llm_cache or str(Path(args.out) / "llm-cache")
    llm_kw = {} if args.backend == "template" else {"rate_per_s": args.llm_rate, "retries": args.llm_retries,
                                                    "cache_dir": cache}
    llm = make_llm(args.backend, url=args.llm_url, model=args.llm_model,
                   api_key=os.environ.get(args.llm_key_env) if args.llm_key_env else None, seed=args.seed, **llm_kw)
    tts = make_tts(args.tts, url=args.tts_url)
    if args.synth_pipeline == "conversation":
        from .conversation import ConversationPipeline
        from .sources import read_dialogues

        dialogues = read_dialogues(args.source) if args.source else None
        return ConversationPipeline(llm, tts, dialogues=dialogues, min_score=args.min_score)
    if args.synth_pipeline == "roleplay":
        from .roleplay import RoleplayPipeline

        return RoleplayPipeline(llm, tts)
    from .singing import SingingPipeline

    return SingingPipeline(llm, tts, songs=args.songs)


def cmd_synth(args) -> int:
    from .job import JobError, parse_shard, run_job
    from .llm import LLMError
    from .tts import TTSError

    try:
        shard = parse_shard(args.shard)
        pipeline = build_pipeline(args)
        summary = run_job(pipeline, args.out, shard=shard, limit=args.limit, progress=not args.quiet)
    except (JobError, LLMError, TTSError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.line())
    for item_id, error in summary.failures[:20]:
        print(f"  failed {item_id}: {error}", file=sys.stderr)
    if len(summary.failures) > 20:
        print(f"  ... and {len(summary.failures) - 20} more (see {args.out}/manifest.json)", file=sys.stderr)
    for problem in summary.problems[:20]:
        print(f"  samples.jsonl {problem}", file=sys.stderr)
    if summary.failed:
        print(f"{summary.failed} item(s) failed; run the same command again to fill the gaps", file=sys.stderr)
    return 0 if summary.ok else 1
