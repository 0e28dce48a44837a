"""Text dialogues the conversation pipeline turns into speech.

The paper starts from existing text dialogue corpora; qinyu does too: any JSONL file of
``{"id"?, "language"?, "dialogue": [{"role", "text"}]}`` (OpenAI-style ``messages`` with
``content`` are accepted). Without one, the built-in closed-domain set is used:
arithmetic, a small fact table, greetings, follow-ups that need the previous turn, a
few Mandarin questions, and two written-style items the filter is there to drop.
"""

from __future__ import annotations

import json
from pathlib import Path

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ZH_DIGITS = "零一二三四五六七八九"


def number_words(n: int) -> str:
    """0..999 in English words (spoken data says numbers the way people say them)."""
    if not 0 <= n <= 999:
        raise ValueError(f"number_words covers 0..999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    rest = n % 100
    return _ONES[n // 100] + " hundred" + (" and " + number_words(rest) if rest else "")


def number_hanzi(n: int) -> str:
    """0..99 in Chinese numerals."""
    if not 0 <= n <= 99:
        raise ValueError(f"number_hanzi covers 0..99, got {n}")
    if n < 10:
        return _ZH_DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else _ZH_DIGITS[tens]) + "十" + (_ZH_DIGITS[ones] if ones else "")


FACTS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
    ("What color is the sky?", "The sky is blue."),
    ("What color is grass?", "Grass is green."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("How many months are in a year?", "There are twelve months in a year."),
    ("What is the largest planet?", "The largest planet is Jupiter."),
    ("What do bees make?", "Bees make honey."),
    ("Which animal says moo?", "A cow says moo."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("At what temperature does water freeze?", "Water freezes at zero degrees Celsius."),
]
GREETINGS = [
    ("Hello!", "Hello! How can I help you today?"),
    ("Good morning!", "Good morning! I hope you slept well."),
    ("How are you?", "I am fine, thank you. How are you?"),
    ("What is your name?", "My name is Qinyu."),
    ("Thank you very much.", "You are welcome."),
    ("Good night!", "Good night, sleep well."),
    ("Can you help me?", "Of course. What do you need?"),
    ("Nice to meet you.", "Nice to meet you too."),
]
FOLLOW_UPS = [
    [("What is the capital of France?", "The capital of France is Paris."),
     ("And what about Italy?", "The capital of Italy is Rome.")],
    [("How many legs does a spider have?", "A spider has eight legs."),
     ("And a dog?", "A dog has four legs.")],
    [("What color is the sky?", "The sky is blue."), ("And at night?", "At night the sky is dark.")],
    [("How many days are in a week?", "There are seven days in a week."),
     ("And in two weeks?", "Two weeks have fourteen days.")],
]
MANDARIN = [
    ("你好！", "你好！很高兴见到你。"),
    ("法国的首都是哪里？", "法国的首都是巴黎。"),
    ("一个星期有几天？", "一个星期有七天。"),
    ("天空是什么颜色的？", "天空是蓝色的。"),
    ("谢谢你。", "不客气。"),
]
WRITTEN_STYLE = [  # what the filter drops: nobody speaks markup or links
    [("Show me a Python loop.", "```python\nfor i in range(3):\n    print(i)\n```")],
    [("Where can I read more?", "See https://example.org/docs for the full | table | of values.")],
]


def _pairs(pairs) -> list[dict]:
    return [t for q, a in pairs for t in ({"role": "user", "text": q}, {"role": "assistant", "text": a})]


def builtin_dialogues() -> list[dict]:
    """The built-in source: about a hundred short dialogues, in a fixed order."""
    out = []

    def add(kind, k, turns, language="en"):
        out.append({"id": f"{kind}-{k:03d}", "language": language, "dialogue": turns})

    k = 0
    for a in range(1, 10):
        for b in (2, 5, 7):
            w = number_words
            add("add", k, _pairs([(f"What is {w(a)} plus {w(b)}?", f"{w(a)} plus {w(b)} is {w(a + b)}.".capitalize())]))
            k += 1
    for k, (a, b) in enumerate([(9, 3), (8, 5), (7, 2), (10, 4), (6, 6), (12, 7), (15, 9), (11, 1)]):
        add("sub", k, _pairs([(f"What is {number_words(a)} minus {number_words(b)}?",
                               f"{number_words(a)} minus {number_words(b)} is {number_words(a - b)}.".capitalize())]))
    for k, (a, b) in enumerate([(2, 3), (4, 5), (3, 3), (6, 2), (7, 4), (5, 5)]):
        add("mul", k, _pairs([(f"What is {number_words(a)} times {number_words(b)}?",
                               f"{number_words(a)} times {number_words(b)} is {number_words(a * b)}.".capitalize())]))
    for k, (a, b, c) in enumerate([(3, 4, 2), (5, 1, 3), (2, 6, 4), (8, 1, 1)]):
        w = number_words
        add("chain", k, _pairs([(f"What is {w(a)} plus {w(b)}?", f"{w(a)} plus {w(b)} is {w(a + b)}.".capitalize()),
                                (f"And if you add {w(c)} more?", f"Then it is {w(a + b + c)}.")]))
    for k, qa in enumerate(FACTS):
        add("fact", k, _pairs([qa]))
    for k, qa in enumerate(GREETINGS):
        add("greet", k, _pairs([qa]))
    for k, pairs in enumerate(FOLLOW_UPS):
        add("follow", k, _pairs(pairs))
    for k, (a, b) in enumerate([(3, 4), (2, 5), (6, 1)]):
        add("zh-add", k, _pairs([(f"{number_hanzi(a)}加{number_hanzi(b)}等于几？",
                                  f"{number_hanzi(a)}加{number_hanzi(b)}等于{number_hanzi(a + b)}。")]), "zh")
    for k, qa in enumerate(MANDARIN):
        add("zh-chat", k, _pairs([qa]), "zh")
    for k, pairs in enumerate(WRITTEN_STYLE):
        add("written", k, _pairs(pairs))
    return out


def read_dialogues(path) -> list[dict]:
    """Dialogues from a JSONL file; a bad line raises ValueError naming the line."""
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                turns = obj.get("dialogue") or obj.get("messages")
                dialogue = [{"role": t["role"], "text": t.get("text", t.get("content"))} for t in turns]
            except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
                raise ValueError(f"{path}: line {n}: expected {{\"dialogue\": [{{\"role\", \"text\"}}]}}") from None
            roles = {t["role"] for t in dialogue}
            if not dialogue or not roles <= {"user", "assistant"} or not all(isinstance(t["text"], str)
                                                                            for t in dialogue):
                raise ValueError(f"{path}: line {n}: roles must be user/assistant and every turn needs text")
            out.append({"id": str(obj.get("id") or f"{path.stem}-{n:06d}"), "language": obj.get("language", "en"),
                        "dialogue": dialogue})
    return out
