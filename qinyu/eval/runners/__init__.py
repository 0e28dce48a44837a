"""Benchmark runners: load a published data layout, generate the model's replies
through the engine (batched, resumable), score them and return report rows.

Each module has ``run(run: Run) -> list[dict]`` (score rows, see ``base.score_row``)."""

BENCHMARKS = ("asr", "seedtts", "c3", "uro", "charactereval")


def runner(bench: str):
    """The ``run`` function of a benchmark module, imported on demand."""
    import importlib

    if bench not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {bench!r}; known: {', '.join(BENCHMARKS)}")
    return importlib.import_module(f"{__name__}.{bench}").run


def run_benchmark(bench: str, options) -> dict:
    """Run one benchmark end to end (generate, score) and write ``items.jsonl``,
    ``report.json`` and ``report.md`` in ``options.out``; returns the report dict."""
    import json
    from pathlib import Path

    from ..report import write_report
    from .base import Run, write_jsonl

    r = Run(bench, options)
    rows = runner(bench)(r)
    write_jsonl(r.out / "items.jsonl", r.items)
    failures = [{"key": i["key"], "reason": i.get("reason") or "failed"} for i in r.items if i["status"] != "ok"]
    judged_on = None
    if bench == "uro":
        judged_on = "the text reply (--judge-text)" if options.judge_text else "an ASR transcript of the speech reply"
    elif bench == "c3":
        judged_on = "the text reply (as C3)"
    meta = {"benchmark": bench, "model": str(Path(options.model).resolve()), "label": options.label,
            "data": str(Path(options.data).resolve()), "judged_on": judged_on,
            "options": {"limit": options.limit, "batch": options.batch, "max_steps": options.max_steps,
                        "asr": options.asr, "normaliser": options.normaliser, "subsets": options.subsets,
                        "judge": None if options.judge is None else getattr(options.judge, "model", None)},
            "generated": r.generated, "reused": r.reused, "items": len(r.items), "items_failed": len(failures),
            "notes": r.notes, "failures": failures}
    write_report(r.out, rows, meta)
    return json.loads((r.out / "report.json").read_text(encoding="utf-8"))
