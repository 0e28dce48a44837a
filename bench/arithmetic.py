"""Arithmetic benchmark: does the qinyu-nano LM add and subtract operand pairs it never saw?

The nano corpus holds out 9 sums and 9 differences of operands 0..10 (both orders of each
sum; ``qinyu.nano.corpus.heldout_pair``). The speedrun teaches arithmetic from the rest: the
spoken QA and ``arith_text`` (``qinyu.nano.speedrun.text_arithmetic``: every train pair in every
train question template, typed, answered as the corpus answers). This benchmark trains a fresh
nano LM (the `nano` preset, a BPE of the arithmetic text with the number words 0..20 whole, as
the speedrun's) on typed arithmetic alone, each path with its own answers, and reads the answers
back for every pair, train and held-out.

Paths, each trained from the same initial weights on the same schedule:
  one sentence  the baseline: answered with the result ("Three plus four is seven."), as the
                corpus answers by default
  to 20         + the sums and differences of operands up to 20 (results up to 20) that are not
                pairs of operands 0..10: more of the number line, none of the held-out pairs
  to 20 + order + "Which is more/bigger/less/smaller, <a> or <b>?" for every a != b in 0..20
  count on      arith_text as the speedrun makes it with ``corpus_counting``: counted on (or
                down) from the first operand, one number a step, then the result: "Three plus
                four: four, five, six, seven. Seven." (``qinyu.nano.corpus.arithmetic_answer``)
  count + tally the same with each step counted: "Three plus four: four is one, five is two, six
                is three, seven is four. Seven." (the stop is then "the tally reached b")

Prints, per path, the train and held-out accuracy, the held-out items' mean distance from the
right number, and the held-out accuracy's difference from the baseline's. Two probes: the next
token after "<a> <op> <b> is" (the paths that answer in one sentence), and the greedy reply to the
question alone scored as the evaluation scores it (the last number said; every path).

Usage: python bench/arithmetic.py [--steps 600] [--out DIR] [--paths NAME ...]
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
from qinyu.nano.corpus import MAX_OPERAND, QUESTIONS, arithmetic_answer, arithmetic_sentences, heldout_pair
from qinyu.nano.evaluate import answer_correct, numbers_in
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


def tallied_answer(a: int, op: str, b: int) -> str:
    """The corpus's counted answer (``arithmetic_answer``) with each step's tally said after it."""
    counted = arithmetic_answer(a, op, b, counting=True)
    if b == 0:
        return counted
    head, rest = counted.split(": ", 1)
    numbers, result = rest.rsplit(". ", 1)
    tallied = ", ".join(f"{n} is {number_words(k)}" for k, n in enumerate(numbers.split(", "), start=1))
    return f"{head}: {tallied}. {result}"


def answered(answer) -> list[dict]:
    """``arith_text``'s rows with ``answer(a, op, b)`` as the reply."""
    rows = []
    for r in text_arithmetic():
        _, group, a, b, _ = r["id"].rsplit("-", 4)
        reply = answer(int(a), "+" if group == "add" else "-", int(b))
        rows.append({**r, "messages": [r["messages"][0], {"role": "assistant", "content": reply}]})
    return rows


def reply_probe(model, tokenizer, max_tokens: int = 64) -> dict:
    """Greedy replies to the typed questions, scored by the last number said: every held-out
    pair in every train template, the train pairs in the first template."""
    results = {"train": [], "heldout": [], "distance": [], "examples": []}
    end = tokenizer.token_to_id("<|im_end|>")
    for op, group in (("+", "add"), ("-", "sub")):
        for a in range(MAX_OPERAND + 1):
            for b in range(MAX_OPERAND + 1):
                held = heldout_pair(a, op, b)
                if op == "-" and b > a:
                    continue
                for template in QUESTIONS[group][0] if held else QUESTIONS[group][0][:1]:
                    question, _, c = arithmetic_sentences(a, op, b, template)
                    ids = render([{"role": "user", "content": question}], tokenizer, model.layout,
                                 add_generation_prompt=True).input_ids
                    out = []
                    with torch.no_grad():
                        while len(out) < max_tokens:
                            token = int(model(torch.tensor([ids + out]), logits_to_keep=1).logits[0, -1].argmax())
                            if token == end:
                                break
                            out.append(token)
                    reply = tokenizer.decode(out)
                    said = numbers_in(reply)
                    right = answer_correct(reply, {"number": c})
                    results["heldout" if held else "train"].append(right)
                    if held:
                        results["distance"].append(abs(said[-1] - c) if said else None)
                        if len(results["examples"]) < 3 and not right:
                            results["examples"].append(f"{question} -> {reply}")
    return results


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
    ap.add_argument("--paths", nargs="*", default=None,
                    help="paths to run besides the baseline, 'one sentence' (default: all)")
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="qinyu-arith-"))
    base = text_arithmetic()
    paths = {"one sentence": base, "to 20": base + to_twenty(), "to 20 + order": base + to_twenty() + order(),
             "count on": text_arithmetic(counting=True), "count + tally": answered(tallied_answer)}
    if args.paths:
        unknown = set(args.paths) - set(paths)
        if unknown:
            ap.error(f"unknown path(s) {sorted(unknown)}; paths: {list(paths)}")
        paths = {name: paths[name] for name in paths if name in args.paths or name == "one sentence"}
    texts = [m["content"] for rows in paths.values() for r in rows for m in r["messages"]]
    tokenizer = bpe_tokenizer(texts, 512, whole_words=sorted({number_words(n) for n in range(21)}))
    init = new_checkpoint(work / "init", preset="nano", seed=0, tokenizer=tokenizer)
    print(f"{torch.get_num_threads()} threads; nano preset LM, {args.steps} steps of 4 packs of 256 tokens per path, "
          f"lr 2e-3, bf16")
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
        token = None if name.startswith("count") else probe(model, tokenizer)
        reply = reply_probe(model, tokenizer)
        tokens = sum(len(render(r["messages"], tokenizer, model.layout).input_ids) for r in rows)
        table.append((name, len(rows), tokens, seconds, token, reply))
        print(f"{name}: {seconds:.0f} s; held-out replies missed, e.g.: {' | '.join(reply['examples']) or '-'}",
              flush=True)

    def rate(xs):
        return sum(xs) / len(xs)

    base_acc = rate(table[0][5]["heldout"])
    print(f"\n{'':<15}{'rows':>6}{'tokens':>8}{'train s':>9}  {'next token: train / held-out':>29}  "
          f"{'reply: train / held-out':>24}{'vs baseline':>13}{'mean miss':>11}")
    for name, n, tokens, seconds, token, reply in table:
        nxt = f"{rate(token['train']):.1%} / {rate(token['heldout']):.1%}" if token else "-"
        near = [d for d in reply["distance"] if d is not None]
        acc = rate(reply["heldout"])
        print(f"{name:<15}{n:>6}{tokens:>8}{seconds:>9.0f}  {nxt:>29}  "
              f"{rate(reply['train']):>11.1%} / {acc:>8.1%}{acc - base_acc:>+12.1%}"
              f"{sum(near) / max(1, len(near)):>11.2f}")
    print(f"held-out: {len(table[0][5]['heldout'])} questions (the 18 held-out pairs, both orders of the sums, in "
          f"every train template); train replies: every train pair in the first template; reply: the greedy "
          f"reply's last number, as the evaluation scores it; mean miss: its mean distance from the right number")


if __name__ == "__main__":
    main()
