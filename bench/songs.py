"""Song-request benchmark for qinyu-nano runs: which song each held-out singing reply sings,
from the reply texts an evaluation already wrote (``checkpoint/report_files/items.jsonl``),
the first run named being the baseline. No model is run.

A reply is matched to the song whose lyrics (the words of the train split's singing answers,
by song) hold the largest share of its words. A reply with under half its words in any song's
lyrics counts as "not a song" (a request answered as a question, "A tomato is red.", or
garbled); otherwise as the right song or another song. The singing note accuracy of the
evaluation needs the right song first: a reply that sings another song's notes is off the
target's notes.

Usage: python bench/songs.py RUN_DIR [RUN_DIR ...] [--show]
  (RUN_DIR: a speedrun folder with checkpoint/report_files/items.jsonl and corpus/)
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path


def words(text: str) -> set[str]:
    return set(re.findall(r"[^\W\d_]+", text.lower()))


def song_lyrics(corpus: Path) -> dict[str, set[str]]:
    """song -> the words of every train singing answer of it."""
    lyrics: dict[str, set[str]] = {}
    with open(corpus / "train.jsonl", encoding="utf-8") as f:
        for line in f:
            sample = json.loads(line)
            if sample["task"] == "singing":
                lyrics.setdefault(sample["meta"]["song"], set()).update(words(sample["messages"][-1]["content"]))
    if not lyrics:
        raise SystemExit(f"{corpus}: the train split has no singing sample")
    return lyrics


def classify(reply: str, song: str, lyrics: dict[str, set[str]]) -> str:
    said = words(reply)
    share = {s: len(said & v) / max(1, len(said)) for s, v in lyrics.items()}
    best = max(share, key=share.get)
    if share[best] < 0.5:
        return "not a song"
    return "right song" if best == song else "another song"


def run(run_dir: Path, lyrics: dict[str, set[str]], show: bool) -> Counter:
    items = run_dir / "checkpoint" / "report_files" / "items.jsonl"
    counts: Counter = Counter()
    with open(items, encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            if item["kind"] != "singing":
                continue
            verdict = classify(item["text"], item["reference"]["song"], lyrics) if "text" in item else "failed"
            counts[verdict] += 1
            if show:
                print(f"  {item['reference']['request'][:56]:56s} -> {item.get('text', '')[:40]:40s} [{verdict}]")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--show", action="store_true", help="print every request, reply and verdict")
    args = parser.parse_args()
    for run_dir in args.runs:
        if not (run_dir / "checkpoint" / "report_files" / "items.jsonl").is_file() or not (run_dir / "corpus").is_dir():
            raise SystemExit(f"{run_dir}: not an evaluated speedrun folder (needs checkpoint/report_files/items.jsonl "
                             "and corpus/)")
    lyrics = song_lyrics(args.runs[0] / "corpus")
    baseline = None
    print(f"{'run':40s} {'requests':>8s} {'right song':>10s} {'another':>8s} {'not a song':>10s} {'right / baseline':>16s}")
    for run_dir in args.runs:
        counts = run(run_dir, lyrics, args.show)
        total = sum(counts.values())
        baseline = counts["right song"] if baseline is None else baseline
        ratio = f"{counts['right song'] / baseline:.2f}x" if baseline else "-"
        print(f"{str(run_dir)[-40:]:40s} {total:8d} {counts['right song']:10d} {counts['another song']:8d} "
              f"{counts['not a song']:10d} {ratio:>16s}")


if __name__ == "__main__":
    main()
