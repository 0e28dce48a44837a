"""Reports: ``report.json`` + ``report.md`` per run, and side-by-side tables across runs.

Every number carries how it was made: the normaliser, the aggregation, the judge and the
scorer (recogniser, reward model), and how many items it covers (``n``) and could not be
scored (``failed``). The paper's published numbers appear only as reference rows marked
"quoted (paper)", and only those checked in the benchmark facts
(``shared/reference/benchmark-facts.md``); they are never mixed into computed values.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

COLUMNS = ("model", "benchmark", "subset", "metric", "value", "n", "failed", "normaliser", "aggregation", "judge",
           "scorer", "quoted")


def _quoted(benchmark, subset, metric, value, model, source, note=None) -> dict:
    return {"model": model, "benchmark": benchmark, "subset": subset, "metric": metric, "value": value, "n": None,
            "failed": None, "normaliser": None, "aggregation": "as published", "judge": None, "scorer": None,
            "quoted": True, "source": source, **({"note": note} if note else {})}


# The paper's numbers quoted in benchmark-facts.md (rows whose arithmetic the facts check).
PAPER_ROWS = [
    *[_quoted("charactereval", None, m, v, "Qwen2.5-Omni", "VITA-QinYu paper, Table 2",
              "in-house role-play set: not comparable to the public CharacterEval test set")
      for m, v in (("CST", 50.24), ("CNV", 73.52), ("ATR", 55.12), ("SS", 38.90), ("Avg.", 54.45))],
    *[_quoted("c3", "english", m, v, "VITA-QinYu-8B", "VITA-QinYu paper, Table 4")
      for m, v in (("Phono acc. (%)", 41.38), ("Semantic acc. (%)", 21.57), ("Omission acc. (%)", 17.84),
                   ("Coref acc. (%)", 64.15), ("MultiTurn acc. (%)", 75.29), ("Overall (%)", 44.05))],
    _quoted("uro", "en", "Understanding", 58.68, "Freeze-Omni", "VITA-QinYu paper, Table 5 (Basic track)"),
    _quoted("uro", "zh", "Understanding", 28.15, "Freeze-Omni", "VITA-QinYu paper, Table 5 (Basic track, Aug-2025 "
                                                                "rebuilt ZH sets)"),
]


def quoted_rows(benchmarks) -> list[dict]:
    wanted = set(benchmarks)
    return [dict(r) for r in PAPER_ROWS if r["benchmark"] in wanted]


# --------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------
def write_report(out_dir, scores: list[dict], meta: dict | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` in ``out_dir``; returns their paths.

    ``scores`` are the run's rows (``benchmark, metric, value, n, failed, normaliser,
    aggregation, judge, scorer, quoted`` and any extra fields); ``meta`` describes the run
    (model, data, options, failures, notes)."""
    from .runners.base import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    meta.setdefault("created", time.strftime("%Y-%m-%d %H:%M:%S"))
    label = meta.get("label") or (Path(meta["model"]).name if meta.get("model") else out.name)
    meta["label"] = label
    for row in scores:
        missing = [c for c in ("benchmark", "metric", "value", "n", "failed", "normaliser", "aggregation", "judge",
                               "scorer", "quoted") if c not in row]
        if missing:
            raise ValueError(f"score row {row.get('metric')!r} lacks {', '.join(missing)}")
    computed = [{"model": label, **row} for row in scores]
    quoted = quoted_rows({row["benchmark"] for row in scores})
    report = {**meta, "scores": computed, "quoted": quoted}
    json_path, md_path = out / "report.json", out / "report.md"
    atomic_write_json(json_path, report)
    atomic_write_text(md_path, render_markdown(report))
    return json_path, md_path


def render_markdown(report: dict) -> str:
    rows = report["scores"] + report.get("quoted", [])
    lines = [f"# qinyu eval: {report.get('benchmark', '')} — {report['label']}", ""]
    for key in ("model", "data", "created", "judged_on", "generated", "reused", "items", "items_failed"):
        if report.get(key) is not None:
            lines.append(f"- **{key.replace('_', ' ')}**: {report[key]}")
    lines += ["", table(rows), ""]
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    failures = report.get("failures") or []
    if failures:
        lines += [f"## Failed items ({len(failures)})", "",
                  "Counted in the `failed` column of their scores; never scored as right.", ""]
        lines += [f"- `{f['key']}`: {f['reason']}" for f in failures[:200]]
        if len(failures) > 200:
            lines.append(f"- … {len(failures) - 200} more in items.jsonl")
        lines.append("")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    """A markdown table with every field of the rows (the standard columns first)."""
    extra = []
    for row in rows:
        extra += [k for k in row if k not in COLUMNS and k not in extra]
    columns = list(COLUMNS) + extra
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_cell(c, row.get(c)) for c in columns) + " |")
    return "\n".join(out)


def _cell(column: str, value) -> str:
    if column == "quoted":
        return "quoted (paper)" if value else "computed"
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------------------
# several runs side by side
# --------------------------------------------------------------------------------------
def load_report(directory) -> dict:
    path = Path(directory) / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"no report.json in {directory} (run `qinyu eval run` there first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


PROTOCOL = ("normaliser", "aggregation", "judge", "scorer")


def compare(dirs) -> str:
    """One markdown table per benchmark: a row per (subset, metric), a column per run and
    per quoted paper model; the protocol column says how the numbers were made and flags
    runs whose protocol differs (their numbers are not directly comparable)."""
    reports = [load_report(d) for d in dirs]
    labels = _unique([r.get("label") or Path(d).name for r, d in zip(reports, dirs)])
    sections = []
    for bench in _unique_keep([row["benchmark"] for r in reports for row in r["scores"]]):
        keys, cells, protocol = [], {}, {}
        for label, rep in zip(labels, reports):
            for row in rep["scores"]:
                if row["benchmark"] != bench:
                    continue
                key = (row.get("subset"), row["metric"])
                if key not in keys:
                    keys.append(key)
                cells[key, label] = _value(row)
                protocol.setdefault(key, {})[label] = tuple(row.get(p) for p in PROTOCOL)
        quoted = quoted_rows([bench])
        paper_cols = _unique_keep([f"{q['model']} (quoted, paper)" for q in quoted])
        for q in quoted:
            key = (q.get("subset"), q["metric"])
            if key not in keys:
                keys.append(key)
            cells[key, f"{q['model']} (quoted, paper)"] = f"{q['value']:.2f}"
        columns = ["subset", "metric", *labels, *paper_cols, "protocol (normaliser; aggregation; judge; scorer)"]
        lines = [f"## {bench}", "", "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        for key in keys:
            lines.append("| " + " | ".join([_cell("subset", key[0]), _cell("metric", key[1]),
                                           *[cells.get((key, c), "—") for c in [*labels, *paper_cols]],
                                           _protocol(protocol.get(key, {}))]) + " |")
        notes = _unique_keep([q["note"] for q in quoted if q.get("note")] +
                             [f"{q['model']}: {q['source']}" for q in quoted])
        if notes:
            lines += [""] + [f"- quoted: {n}" for n in notes]
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _value(row: dict) -> str:
    if row.get("value") is None:
        return "—" + (f" ({row['failed']} failed)" if row.get("failed") else "")
    text = f"{row['value']:.2f}"
    return text + (f" ({row['failed']} failed)" if row.get("failed") else "")


def _protocol(by_label: dict) -> str:
    if not by_label:
        return "as published"
    distinct = _unique_keep(list(by_label.values()))
    fmt = lambda p: "; ".join("—" if v is None else str(v) for v in p).replace("|", "\\|")  # noqa: E731
    if len(distinct) == 1:
        return fmt(distinct[0])
    return "DIFFERS: " + " / ".join(f"{label}: {fmt(p)}" for label, p in by_label.items())


def _unique_keep(values: list) -> list:
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _unique(labels: list[str]) -> list[str]:
    """Distinct column names for runs that share a label (e.g. two runs of one model)."""
    out, seen = [], {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out
