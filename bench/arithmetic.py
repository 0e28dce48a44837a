"""Arithmetic benchmark: does the qinyu-nano LM add and subtract operand pairs it never saw?

The nano corpus holds out 9 sums and 9 differences of operands 0..10 (both orders of each
sum; ``qinyu.nano.corpus.heldout_pair``). The speedrun teaches arithmetic from the rest: the
spoken QA and ``arith_text`` (``qinyu.nano.speedrun.text_arithmetic``: every train pair in every
train question template, typed, answered in the corpus's sentence "Three plus seven is ten.").
This benchmark trains a fresh nano LM (the `nano` preset, a BPE of the arithmetic text with the
number words 0..20 whole, as the speedrun's) on typed arithmetic alone, and reads back the answer:
the model's most likely token after "<a> plus <b> is" (the question typed, the reply's own
words before the number given), for every pair in every train template, train and held-out.

Paths, each trained from the same initial weights on the same schedule:
  baseline      arith_text as the speedrun makes it
  to 20         + the sums and differences of operands up to 20 (results up to 20) that are not
                pairs of operands 0..10: more of the number line, none of the held-out pairs
  to 20 + order + "Which is more/bigger/less/smaller, <a> or <b>?" for every a != b in 0..20

Prints, per path, the train and held-out accuracy, the held-out items' mean distance from the
right number, and the held-out accuracy's difference from the baseline's.

Usage: python bench/arithmetic.py [--steps 600] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from qinyu.layout import bpe_tokenizer, render
from qinyu.model import QinYuForConditionalGeneration
from qinyu.model.presets import new_checkpoint
from qinyu.data.synth.sources import number_words
from qinyu.nano.corpus import MAX_OPERAND, QUESTIONS, arithmetic_sentences, heldout_pair
from qinyu.nano.speedrun import text_arithmetic
from qinyu.train.recipe import Recipe
from qinyu.train.trainer import train

ORDER = ["Which is more, {a} or {b}?", "Which number is bigger, {a} or {b}?", "Which is less, {a} or {b}?",
         "Which number is smaller, {a} or {b}?"]


def row(row_id: str, question: str, answer: str) -> dict:
    return {"id": row_id, "task": "chat", "audio": [], "voice": None,
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def to_twenty(top: int = 20) -> list[dict]:
    """Sums and differences with results up to ``top`` and an operand above 10, none held out."""
    rows = []
    for op, group in (("+", "add"), ("-", "sub")):
        for a in range(top + 1):
            for b in range(top + 1):
                if (a <= MAX_OPERAND and b <= MAX_OPERAND) or heldout_pair(a, op, b) \
                        or (op == "+" and a + b > top) or (op == "-" and b > a):
                    continue
                for k, template in enumerate(QUESTIONS[group][0]):
                    question, answer, _ = arithmetic_sentences(a, op, b, template)
                    rows.append(row(f"to20-{group}-{a}-{b}-t{k}", question, answer))
    return rows


def order(top: int = 20) -> list[dict]:
    """Which of two numbers 0..``top`` is more or less: the number line, no sum or difference."""
    rows = []
    for a in range(top + 1):
        for b in range(top + 1):
            for k, template in enumerate(ORDER if a != b else []):
                question = template.format(a=number_words(a), b=number_words(b))
                rows.append(row(f"order-{a}-{b}-t{k}", question, number_words(max(a, b) if k < 2 else min(a, b))
                                .capitalize() + "."))
    return rows


def probe(model, tokenizer) -> dict:
    """Per pair of 0..10 (and template): is the most likely token after "... is" the answer?"""
    results = {"train": [], "heldout": [], "distance": []}
    number_of = {tokenizer.token_to_id("Ġ" + number_words(n)): n for n in range(21)}
    for op, group in (("+", "add"), ("-", "sub")):
        for a in range(MAX_OPERAND + 1):
            for b in range(MAX_OPERAND + 1):
                if op == "-" and b > a:
                    continue
                for template in QUESTIONS[group][0]:
                    question, answer, c = arithmetic_sentences(a, op, b, template)
                    seq = render([{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                                 tokenizer, model.layout)
                    target = tokenizer.token_to_id("Ġ" + number_words(c))
                    position = max(i for i, t in enumerate(seq.input_ids) if t == target)  # the answer: the last number
                    with torch.no_grad():
                        logits = model(torch.tensor([seq.input_ids[:position]]), logits_to_keep=1).logits[0, -1]
                    guess = int(logits.argmax())
                    held = heldout_pair(a, op, b)
                    results["heldout" if held else "train"].append(guess == target)
                    if held:
                        results["distance"].append(abs(number_of[guess] - c) if guess in number_of else None)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600, help="training steps of 4 packs of 256 tokens per path")
    ap.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="qinyu-arith-"))
    base = text_arithmetic()
    paths = {"baseline": base, "to 20": base + to_twenty(), "to 20 + order": base + to_twenty() + order()}
    texts = [m["content"] for rows in paths.values() for r in rows for m in r["messages"]]
    tokenizer = bpe_tokenizer(texts, 512, whole_words=sorted({number_words(n) for n in range(21)}))
    init = new_checkpoint(work / "init", preset="nano", seed=0, tokenizer=tokenizer)
    print(f"{torch.get_num_threads()} threads; nano preset LM, {args.steps} steps of 4 packs of 256 tokens per path, "
          f"lr 2e-3, bf16; probe: the answer token after '<a> <op> <b> is' in every train template")
    table = []
    for name, rows in paths.items():
        folder = work / name.replace(" ", "_").replace("+", "and")
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "data.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        recipe = Recipe(name=name, stage="pretrain", out=str(folder), data=[{"path": str(data)}], init=str(init),
                        steps=args.steps, batch_size=4, max_length=256, lr=2e-3, dtype="bf16", log_every=50)
        start = time.perf_counter()
        train(recipe, progress=False)
        seconds = time.perf_counter() - start
        model = QinYuForConditionalGeneration.from_pretrained(folder / "final", dtype=torch.float32).eval()
        result = probe(model, tokenizer)
        near = [d for d in result["distance"] if d is not None]
        table.append((name, len(rows), seconds, result, sum(near) / max(1, len(near))))
    base_acc = sum(table[0][3]["heldout"]) / len(table[0][3]["heldout"])
    print(f"{'':<15}{'rows':>6}{'train s':>9}{'train pairs':>13}{'held-out':>10}{'vs baseline':>13}{'mean miss':>11}")
    for name, n, seconds, result, miss in table:
        tr, ho = result["train"], result["heldout"]
        acc = sum(ho) / len(ho)
        print(f"{name:<15}{n:>6}{seconds:>9.0f}{sum(tr) / len(tr):>12.1%} {acc:>9.1%}{acc - base_acc:>+12.1%}"
              f"{miss:>11.2f}")
    print(f"held-out: {len(table[0][3]['heldout'])} questions (the 18 held-out pairs, both orders of the sums, in "
          f"every train template); mean miss: the held-out answers' mean distance from the right number")


if __name__ == "__main__":
    main()
