"""The qinyu-nano corpus: a closed spoken domain, synthesised offline, with a held-out split.

Built with the synthesis pipelines of ``qinyu.data.synth`` (the template text backend,
espeak-ng speech, the PSOLA singer), each run as its resumable job in a sub-folder of
the corpus, then merged into ``train.jsonl`` and ``heldout.jsonl``::

    OUT/conversation/   spoken QA (job: samples.jsonl, manifest.json, records/, wavs/)
    OUT/roleplay/       role-play in eight described voices (job)
    OUT/singing/        six public-domain songs, requested in natural language (job)
    OUT/voices/         three reference sentences per assistant-side voice + voices.json
    OUT/train.jsonl     chat, asr, tts, roleplay and singing samples (docs/data-format.md)
    OUT/heldout.jsonl   the held-out split (same format)
    OUT/heldout_meta.jsonl  per held-out item: what it tests and its reference answer
    OUT/nano.json       sizes, hours of audio, build time, the split rules and their check

What is in it (sizes at ``scale=1``; ``scale`` multiplies every train count and shrinks
the held-out split below 1, never below one item of each kind):

- **QA** (task ``chat``): arithmetic on 0..10 (``a + b``, ``a - b`` with ``a >= b``,
  answers spelled out; with ``counting``, counted on from ``a``: ``arithmetic_answer``),
  a small fact table (colours, animal sounds, capitals),
  greetings, and two-question follow-ups whose second question needs the first
  ("and plus two more?"). Every question is rewritten in a spoken register by the
  conversation pipeline and spoken by one of the user voices; the assistant answers in
  its voice. From the same audio: **ASR pairs** (each user utterance) and **TTS pairs**
  (each spoken answer).
- **Role-play** (task ``roleplay``): eight characters whose voices differ in gender,
  age, pitch, pace and texture, each voice described in words by one of 18 paraphrases
  (six sentence frames x three synonym sets), 8-15-turn scripts, one sample per
  character line.
- **Singing** (task ``singing``): six public-domain songs, whole or one named line,
  in the assistant's voice or a named singing voice, requested in natural language.

The held-out split (``SPLIT_RULES``; checked by ``check_split``) holds out operand
pairs, question/request phrasings, one of the six paraphrase frames, and four of the 24
user voices: none of them occurs in ``train.jsonl``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..data.synth.conversation import ConversationPipeline
from ..data.synth.job import Item, run_job
from ..data.synth.llm import LLMError, TemplateBackend
from ..data.synth.profiles import CHARACTERS_BY_KEY, FRAMES
from ..data.synth.roleplay import RoleplayPipeline
from ..data.synth.singing import SINGING_VOICES, SingingPipeline
from ..data.synth.songs import builtin_songs
from ..data.synth.sources import number_words
from ..data.synth.templates import REQUESTS, SCENARIOS
from ..data.synth.tts import EspeakTTS, Voice
from ..data.synth.voices import ASSISTANT_VOICES, USER_VOICES
from . import DEFAULT_CORPUS

AUDIO_TAG = "<|audio|>"
ASR_PROMPT = "Convert the speech to text.\n" + AUDIO_TAG  # as qinyu.layout (kept import-light)
TTS_PROMPT = "Convert the text to speech.\n{text}"
PIPELINES = ("conversation", "roleplay", "singing")
# an optional job made from the pipelines' output (``build_corpus(character_tts=True)``, off by
# default: measured in run O, docs/nano.md): every train QA reply read again in a role-play voice
CHARACTER_TTS = "character_tts"

# ======================================================================================
# the split rules
# ======================================================================================
MAX_OPERAND = 10


def heldout_sum(a: int, b: int) -> bool:
    """``a + b`` is held out iff, with lo <= hi the two operands, (lo + 2 hi) mod 7 == 3.
    Order does not matter (2 + 5 and 5 + 2 go together): 9 of the 66 unordered pairs."""
    lo, hi = sorted((a, b))
    return (lo + 2 * hi) % 7 == 3


def heldout_difference(a: int, b: int) -> bool:
    """``a - b`` (a >= b) is held out iff (a + 2 b) mod 7 == 4: 9 of the 66 pairs."""
    return (a + 2 * b) % 7 == 4


def heldout_pair(a: int, op: str, b: int) -> bool:
    return heldout_sum(a, b) if op == "+" else heldout_difference(a, b)


def user_voice_index(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def heldout_user_voice(name: str) -> bool:
    """User voices user-en-05, -11, -17 and -23 (index mod 6 == 5) are held out; each has
    an espeak-ng variant (formant set) no other user voice has."""
    return user_voice_index(name) % 6 == 5


N_PARAPHRASES = len(FRAMES) * 3  # profiles.describe_attributes: six frames x three synonym sets
HELDOUT_FRAME = len(FRAMES) - 1


def heldout_paraphrase(k: int) -> bool:
    """Description paraphrase k is held out iff it uses the last sentence frame (k mod 6 ==
    5: paraphrases 5, 11, 17, in all three synonym sets)."""
    return k % len(FRAMES) == HELDOUT_FRAME


SPLIT_RULES = [
    "operands 0..10; a + b is held out iff (lo + 2*hi) % 7 == 3 for lo <= hi its operands (both orders); "
    "a - b (a >= b) iff (a + 2*b) % 7 == 4; every sum 0..20 and difference 0..10 still occurs in train",
    "question phrasings: each question group has train templates and held-out templates (QUESTIONS, GREETINGS: "
    "the second list); song-request phrasings: the last template of each of REQUESTS[en, whole|part|voice]",
    "voice descriptions: of the 18 paraphrases per voice, those of the last sentence frame (k % 6 == 5) are "
    "held out",
    "user voices: user-en-05, -11, -17, -23 (index % 6 == 5) speak only held-out items; every held-out item is "
    "spoken by one of them",
    "held-out QA items test unseen operand pairs (in train phrasings) or unseen phrasings (of train facts and "
    "operands); follow-ups keep the corpus's first answer as history and are scored on the last turn",
]

# ======================================================================================
# the closed domain
# ======================================================================================
# group -> (train templates, held-out templates); {a} {b} {c} numbers in words, {x} a thing
QUESTIONS = {
    "add": (["What is {a} plus {b}?", "How much is {a} plus {b}?", "What do you get if you add {a} and {b}?",
             "Can you tell me what {a} plus {b} is?", "{a} plus {b}, what does that make?", "Please add {a} and {b}."],
            ["Could you work out {a} plus {b} for me?", "If you have {a} and get {b} more, how many is that?"]),
    "sub": (["What is {a} minus {b}?", "How much is {a} minus {b}?", "What do you get if you take {b} from {a}?",
             "{a} minus {b}, what does that make?"],
            ["Could you work out {a} minus {b} for me?", "If you have {a} and give away {b}, how many are left?"]),
    "colour": (["What colour is {x}?", "Which colour is {x}?", "Do you know what colour {x} is?"],
               ["Tell me the colour of {x}."]),
    "sound": (["What does {x} say?", "What sound does {x} make?", "How does {x} go?"],
              ["Which noise does {x} make?"]),
    "capital": (["What is the capital of {x}?", "What's the capital city of {x}?",
                 "Which city is the capital of {x}?"],
                ["Name the capital of {x}, please."]),
    "follow-add": (["And plus {c} more?", "And if you add {c} more?", "What if I add {c}?"],
                   ["Now add {c} to that."]),
    "follow-sub": (["And minus {c}?", "And if you take away {c}?"], ["Now take {c} away from that."]),
    "follow-fact": (["And what about {x}?", "And {x}?"], ["How about {x} then?"]),
}
# relation -> [(thing as asked, thing as answered, answer word)]
FACTS = {
    "colour": [("the sky", "The sky", "blue"), ("grass", "Grass", "green"), ("a banana", "A banana", "yellow"),
               ("snow", "Snow", "white"), ("coal", "Coal", "black"), ("a tomato", "A tomato", "red"),
               ("a carrot", "A carrot", "orange")],
    "sound": [("a cow", "A cow", "moo"), ("a dog", "A dog", "woof"), ("a cat", "A cat", "meow"),
              ("a duck", "A duck", "quack"), ("a sheep", "A sheep", "baa"), ("an owl", "An owl", "hoot"),
              ("a lion", "A lion", "roar")],
    "capital": [(c, c, city) for c, city in (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"),
                                             ("Egypt", "Cairo"), ("Spain", "Madrid"), ("Germany", "Berlin"),
                                             ("China", "Beijing"), ("Russia", "Moscow"))],
}


def fact_answer(relation: str, said: str, answer: str) -> str:
    if relation == "colour":
        return f"{said} is {answer}."
    if relation == "sound":
        return f"{said} says {answer}."
    return f"The capital of {said} is {answer}."


# intent -> (train phrasings, held-out phrasings, answer, the words a right reply contains)
GREETINGS = {
    "hello": (["Hello!", "Hi!", "Hello there!", "Hey!"], ["Hi there, assistant!"],
              "Hello! How can I help you today?", "hello"),
    "morning": (["Good morning!", "Morning!"], ["A very good morning to you!"],
                "Good morning! I hope you slept well.", "good morning"),
    "how": (["How are you?", "How are you doing?", "How's it going?"], ["Are you doing well today?"],
            "I am fine, thank you.", "fine"),
    "name": (["What is your name?", "What are you called?", "Who are you?"], ["Tell me your name, please."],
             "My name is Qinyu.", "qinyu"),
    "thanks": (["Thank you very much.", "Thanks a lot!", "Thank you!"], ["Many thanks for your help."],
               "You are welcome.", "welcome"),
    "night": (["Good night!", "Night night!"], ["I am off to bed now, good night."], "Good night, sleep well.",
              "sleep well"),
    "bye": (["Goodbye!", "Bye bye!", "See you later!"], ["I need to go now, bye."], "Goodbye! Have a nice day.",
            "goodbye"),
}

ROLEPLAY_VOICES = ("captain", "mira", "professor", "rose", "tommy", "vale", "oak", "nova")
NANO_SONGS = ("twinkle", "mary", "frere-jacques", "london-bridge", "row-your-boat", "ode-to-joy")
REQUEST_KINDS = ("whole", "part", "voice")
HELDOUT_ROLEPLAY_LINES = 3  # held-out role-play items keep their first three character lines
REFERENCE_SENTENCES = ["The quick brown fox jumps over the lazy dog.",
                       "I would like to tell you a short story about the sea.",
                       "Every morning the birds sing outside my window."]

USER_VOICES_BY_NAME = {v.name: v for v in USER_VOICES["en"]}
TRAIN_USER_VOICES = [v.name for v in USER_VOICES["en"] if not heldout_user_voice(v.name)]
HELDOUT_USER_VOICES = [v.name for v in USER_VOICES["en"] if heldout_user_voice(v.name)]
TRAIN_PARAPHRASES = [k for k in range(N_PARAPHRASES) if not heldout_paraphrase(k)]
HELDOUT_PARAPHRASES = [k for k in range(N_PARAPHRASES) if heldout_paraphrase(k)]


def phrasing_id(group: str, split: str, index: int) -> str:
    return f"{group}:{'h' if split == 'heldout' else 't'}{index}"


def heldout_phrasing(pid: str) -> bool:
    """Question phrasings 'group:hN' and song requests 'en-KIND-N' with N the last template."""
    if ":" in pid:
        return pid.split(":", 1)[1].startswith("h")
    _, kind, index = pid.rsplit("-", 2)
    return int(index) == len(REQUESTS[("en", kind)]) - 1


def _sentence(template: str, **fill) -> str:
    text = template.format(**fill)
    return text[:1].upper() + text[1:]


def _words(n: int) -> str:
    return number_words(n)


# ======================================================================================
# planning: which items each split holds
# ======================================================================================
@dataclass
class _Kind:
    """Items of one kind: ``make(r)`` lists repeat r (each repeat varies phrasing and voice);
    ``base`` is how many to take at scale 1."""

    name: str
    make: object
    base: int


def _select(kind: _Kind, count: int, seed: int) -> list[Item]:
    """The first ``count`` items of the repeats, each repeat shuffled (seeded by kind)."""
    out, r = [], 0
    while len(out) < count:
        batch = kind.make(r)
        if not batch:
            break
        random.Random(f"{seed}:{kind.name}:{r}").shuffle(batch)
        out += batch
        r += 1
    return out[:count]


def _count(base: int, scale: float) -> int:
    return max(1, int(round(base * scale)))


def _pick(options: list, key: str, seed: int):
    return options[random.Random(f"{seed}:{key}").randrange(len(options))]


def _user_voice(split: str, key: str, seed: int) -> str:
    return _pick(HELDOUT_USER_VOICES if split == "heldout" else TRAIN_USER_VOICES, key, seed)


def _dialogue(pairs: list[tuple[str, str]]) -> list[dict]:
    return [t for q, a in pairs for t in ({"role": "user", "text": q}, {"role": "assistant", "text": a})]


def _qa_item(item_id: str, pairs, split: str, sub: str, tests: list[str], answer: dict, seed: int, *,
             operands=(), phrasings=()) -> Item:
    nano = {"split": split, "kind": "qa", "sub": sub, "tests": tests, "answer": answer,
            "operands": [list(o) for o in operands], "phrasings": list(phrasings)}
    return Item(item_id, {"dialogue": _dialogue(pairs), "language": "en",
                          "user_voice": _user_voice(split, item_id, seed), "nano": nano})


def arithmetic_answer(a: int, op: str, b: int, counting: bool = False) -> str:
    """The reply to ``a + b`` or ``a - b``: the result ("Three plus four is seven."), or with
    ``counting`` counted on (or down) from ``a`` one number a step, then the result: "Three
    plus four: four, five, six, seven. Seven."; "Five plus zero is five.". A nano LM taught the
    results learns the train pairs as a lookup table and answers an unseen pair with a
    neighbour of its result (14 % of the held-out pairs right, ``bench/arithmetic.py``);
    counting asks only for the next number and when ``b`` steps are done, which every train
    pair teaches (100 % typed; run Z4, spoken: docs/nano.md, "Counting on")."""
    c = a + b if op == "+" else a - b
    head = _sentence("{a} {w} {b}", a=_words(a), w="plus" if op == "+" else "minus", b=_words(b))
    if b == 0 or not counting:
        return f"{head} is {_words(c)}."
    step = 1 if op == "+" else -1
    counted = ", ".join(_words(a + step * k) for k in range(1, b + 1))
    return f"{head}: {counted}. {_sentence(_words(c))}."


def arithmetic_sentences(a: int, op: str, b: int, template: str, counting: bool = False) -> tuple[str, str, int]:
    """(question in ``template``, reply (``arithmetic_answer``), result)."""
    c = a + b if op == "+" else a - b
    return _sentence(template, a=_words(a), b=_words(b)), arithmetic_answer(a, op, b, counting), c


def _pairs_of(op: str, heldout: bool) -> list[tuple[int, int]]:
    if op == "+":
        pairs = [(a, b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)]
    else:
        pairs = [(a, b) for a in range(MAX_OPERAND + 1) for b in range(a + 1)]
    return [(a, b) for a, b in pairs if heldout_pair(a, op, b) == heldout]


def _number_answer(c: int) -> dict:
    return {"number": c, "answer": _words(c)}


def conversation_plan(seed: int = 0, scale: float = 1.0, counting: bool = False) -> list[Item]:
    """Every QA item (train and held-out) at this scale, in a fixed order; ``counting``: sums
    and differences answered by counting on (``arithmetic_answer``)."""
    groups = {"+": "add", "-": "sub"}

    def arithmetic(op, split, phrasing_split, pairs_heldout, tag):
        group = groups[op]
        templates = QUESTIONS[group][1 if phrasing_split == "heldout" else 0]

        def make(r):
            items = []
            for a, b in _pairs_of(op, pairs_heldout):
                base = random.Random(f"{seed}:{group}:{a}:{b}:{tag}").randrange(len(templates))
                k = (base + r) % len(templates)
                q, ans, c = arithmetic_sentences(a, op, b, templates[k], counting)
                tests = (["unseen operand pair"] if pairs_heldout else []) + \
                        (["unseen question phrasing"] if phrasing_split == "heldout" else [])
                prefix = "ho-" if split == "heldout" else ""
                items.append(_qa_item(f"{prefix}qa-{group}-{tag}-{a}-{b}-r{r}", [(q, ans)], split, group,
                                      tests + (["unseen user voice"] if split == "heldout" else []),
                                      _number_answer(c), seed, operands=[(a, op, b)],
                                      phrasings=[phrasing_id(group, phrasing_split, k)]))
            return items
        return make

    def facts(split):
        def make(r):
            items = []
            for relation, rows in FACTS.items():
                train_t, held_t = QUESTIONS[relation]
                templates = held_t if split == "heldout" else train_t
                for i, (asked, said, answer) in enumerate(rows):
                    for k, t in enumerate(templates):
                        q = _sentence(t, x=asked)
                        tests = ["unseen question phrasing", "unseen user voice"] if split == "heldout" else []
                        items.append(_qa_item(f"{'ho-' if split == 'heldout' else ''}qa-fact-{relation}-{i}-p{k}-r{r}",
                                              [(q, fact_answer(relation, said, answer))], split, "fact", tests,
                                              {"answer": answer, "accept": [answer]}, seed,
                                              phrasings=[phrasing_id(relation, split, k)]))
            return items
        return make

    def greetings(split):
        def make(r):
            items = []
            for intent, (train_q, held_q, answer, key) in GREETINGS.items():
                for k, q in enumerate(held_q if split == "heldout" else train_q):
                    tests = ["unseen question phrasing", "unseen user voice"] if split == "heldout" else []
                    items.append(_qa_item(f"{'ho-' if split == 'heldout' else ''}qa-greet-{intent}-p{k}-r{r}",
                                          [(q, answer)], split, "greeting", tests, {"answer": key, "accept": [key]},
                                          seed, phrasings=[phrasing_id(f"greet-{intent}", split, k)]))
            return items
        return make

    def follow_arith(split, pairs_heldout, phrasing_split, tag):
        def make(r):
            items = []
            first_t = QUESTIONS["add"][0]
            for a, b in _pairs_of("+", pairs_heldout):
                rng = random.Random(f"{seed}:follow:{a}:{b}:{tag}:{r}")
                s = a + b
                op = "-" if s >= 3 and rng.random() < 0.4 else "+"
                # the follow-up's own sum or difference keeps the split's rule too
                options = [c for c in (1, 2, 3) if (op == "+" or s >= c) and not heldout_pair(s, op, c)]
                if not options:
                    op, options = "+", [c for c in (1, 2, 3) if not heldout_pair(s, "+", c)]
                c = rng.choice(options)
                group = "follow-add" if op == "+" else "follow-sub"
                templates = QUESTIONS[group][1 if phrasing_split == "heldout" else 0]
                k1, k2 = rng.randrange(len(first_t)), rng.randrange(len(templates))
                q1, a1, _ = arithmetic_sentences(a, "+", b, first_t[k1], counting)
                q2 = _sentence(templates[k2], c=_words(c))
                total = s + c if op == "+" else s - c
                a2 = f"Then it is {_words(total)}." if not counting else arithmetic_answer(s, op, c, counting)
                tests = (["unseen operand pair"] if pairs_heldout else []) + \
                        (["unseen question phrasing"] if phrasing_split == "heldout" else [])
                tests = ["needs the history"] + tests + (["unseen user voice"] if split == "heldout" else [])
                items.append(_qa_item(f"{'ho-' if split == 'heldout' else ''}qa-follow-{tag}-{a}-{b}-r{r}",
                                      [(q1, a1), (q2, a2)], split, "follow-arith", tests, _number_answer(total),
                                      seed, operands=[(a, "+", b), (s, op, c)],
                                      phrasings=[phrasing_id("add", "train", k1),
                                                 phrasing_id(group, phrasing_split, k2)]))
            return items
        return make

    def follow_fact(split):
        def make(r):
            items = []
            train_t, held_t = QUESTIONS["follow-fact"]
            templates = held_t if split == "heldout" else train_t
            for relation, rows in FACTS.items():
                for i, (asked_i, said_i, answer_i) in enumerate(rows):
                    for j, (asked_j, said_j, answer_j) in enumerate(rows):
                        if i == j:
                            continue
                        rng = random.Random(f"{seed}:follow-fact:{relation}:{i}:{j}:{r}")
                        k1 = rng.randrange(len(QUESTIONS[relation][0]))
                        k2 = rng.randrange(len(templates))
                        q1 = _sentence(QUESTIONS[relation][0][k1], x=asked_i)
                        q2 = _sentence(templates[k2], x=asked_j)
                        tests = ["needs the history"] + (["unseen question phrasing", "unseen user voice"]
                                                         if split == "heldout" else [])
                        items.append(_qa_item(
                            f"{'ho-' if split == 'heldout' else ''}qa-ffact-{relation}-{i}-{j}-r{r}",
                            [(q1, fact_answer(relation, said_i, answer_i)), (q2, fact_answer(relation, said_j, answer_j))],
                            split, "follow-fact", tests, {"answer": answer_j, "accept": [answer_j]}, seed,
                            phrasings=[phrasing_id(relation, "train", k1), phrasing_id("follow-fact", split, k2)]))
            return items
        return make

    train = [_Kind("add", arithmetic("+", "train", "train", False, "n"), 210),
             _Kind("sub", arithmetic("-", "train", "train", False, "n"), 114),
             _Kind("fact", facts("train"), 66),
             _Kind("greeting", greetings("train"), 40),
             _Kind("follow-arith", follow_arith("train", False, "train", "n"), 60),
             _Kind("follow-fact", follow_fact("train"), 30)]
    heldout = [_Kind("ho-add-numbers", arithmetic("+", "heldout", "train", True, "n"), 16),
               _Kind("ho-sub-numbers", arithmetic("-", "heldout", "train", True, "n"), 9),
               _Kind("ho-add-phrasing", arithmetic("+", "heldout", "heldout", False, "p"), 6),
               _Kind("ho-sub-phrasing", arithmetic("-", "heldout", "heldout", False, "p"), 4),
               _Kind("ho-fact", facts("heldout"), 22),
               _Kind("ho-greeting", greetings("heldout"), 7),
               _Kind("ho-follow-numbers", follow_arith("heldout", True, "train", "n"), 4),
               _Kind("ho-follow-phrasing", follow_arith("heldout", False, "heldout", "p"), 4),
               _Kind("ho-follow-fact", follow_fact("heldout"), 6)]
    return _plan(train, heldout, seed, scale)


def _plan(train: list[_Kind], heldout: list[_Kind], seed: int, scale: float) -> list[Item]:
    items = []
    for kind in train:
        items += _select(kind, _count(kind.base, scale), seed)
    for kind in heldout:  # the held-out split does not grow past scale 1
        items += _select(kind, _count(kind.base, min(scale, 1.0)), seed)
    return items


def roleplay_plan(seed: int = 0, scale: float = 1.0) -> list[Item]:
    scenarios = list(SCENARIOS)

    def make_for(split):
        def make(r):
            items = []
            for ci, key in enumerate(ROLEPLAY_VOICES):
                character = CHARACTERS_BY_KEY[key]
                # train: every scenario in every repeat; held-out: one scenario per voice and repeat
                chosen = scenarios if split == "train" else [scenarios[(ci + r) % len(scenarios)]]
                for scenario in chosen:
                    si = scenarios.index(scenario)
                    pool = HELDOUT_PARAPHRASES if split == "heldout" else TRAIN_PARAPHRASES
                    k = pool[(ci * len(scenarios) + si + r * 7) % len(pool)]
                    item_id = f"{'ho-' if split == 'heldout' else ''}rp-{key}-{scenario}-r{r}"
                    turns = random.Random(f"{seed}:{item_id}").randint(8, 15)
                    tests = ["unseen description paraphrase", "unseen user voice"] if split == "heldout" else []
                    items.append(Item(item_id, {
                        "character": character.to_dict(), "scenario": scenario, "turns": turns, "paraphrase": k,
                        "user_voice": _user_voice(split, item_id, seed),
                        "keep_lines": HELDOUT_ROLEPLAY_LINES if split == "heldout" else None,
                        "nano": {"split": split, "kind": "roleplay", "sub": key, "tests": tests, "paraphrase": k}}))
            return items
        return make

    return _plan([_Kind("roleplay", make_for("train"), 64)], [_Kind("ho-roleplay", make_for("heldout"), 16)],
                 seed, scale)


def nano_songs():
    songs = {s.key: s for s in builtin_songs()}
    return [songs[k] for k in NANO_SONGS]


def singing_plan(seed: int = 0, scale: float = 1.0) -> list[Item]:
    songs = nano_songs()
    voices = sorted(SINGING_VOICES)

    def request_phrasings(kind: str, split: str, key: str) -> list[int]:
        n = len(REQUESTS[("en", kind)])
        if split == "heldout":
            return [n - 1]
        return [random.Random(f"{seed}:{key}").randrange(n - 1)]  # one train template per item

    def item(song, split, part, voice, r, tests):
        kind = "voice" if voice else ("part" if part is not None else "whole")
        what = "whole" if part is None else f"part{part + 1}"
        item_id = f"{'ho-' if split == 'heldout' else ''}sing-{song.key}-{what}" + (f"-{voice}" if voice else "") + \
                  f"-r{r}"
        phr = request_phrasings(kind, split, item_id)
        return Item(item_id, {"song": song.to_dict(), "part": part, "voice": voice, "phrasings": phr,
                              "user_voice": _user_voice(split, item_id, seed),
                              "nano": {"split": split, "kind": "singing", "sub": kind, "tests": tests,
                                       "phrasings": [f"en-{kind}-{phr[0]}"]}})

    def train(r):
        items = []
        for i, song in enumerate(songs):
            items.append(item(song, "train", None, None, r, []))
            items.append(item(song, "train", None, voices[(2 * i + r) % len(voices)], r, []))
            for k in range(len(song.segments)):
                items.append(item(song, "train", k, None, r, []))
                items.append(item(song, "train", k, voices[(i + k + r) % len(voices)], r, []))
        return items

    def heldout(r):
        items = []
        tests = ["unseen request phrasing", "unseen user voice"]
        for i, song in enumerate(songs):  # one per song and repeat, the request kinds taking turns
            kind = REQUEST_KINDS[(i + r) % len(REQUEST_KINDS)]
            k = (i + r) % len(song.segments)
            if kind == "whole":
                items.append(item(song, "heldout", None, None, r, tests))
            elif kind == "part":
                items.append(item(song, "heldout", k, None, r, tests))
            else:
                items.append(item(song, "heldout", k if i % 2 else None, voices[(i + r) % len(voices)], r, tests))
        return items

    return _plan([_Kind("singing", train, 64)], [_Kind("ho-singing", heldout, 12)], seed, scale)


# ======================================================================================
# the pipelines, with the plan's voices and phrasings
# ======================================================================================
class NanoTemplates(TemplateBackend):
    """The template backend, with one addition: a song request may name the request
    templates it is to be phrased with (``"phrasings": [index, ...]`` of
    ``templates.REQUESTS``), so the held-out split can keep some phrasings to itself."""

    def complete(self, system: str, user: str, task: str | None = None, **kw) -> str:
        if task != "song_request":
            return super().complete(system, user, task, **kw)
        payload = json.loads(user)
        allowed = payload.get("phrasings")
        if not allowed:
            return super().complete(system, user, task, **kw)
        self.stats["requests"] += 1
        kind = "voice" if payload.get("voice") else ("part" if payload.get("part") else "whole")
        choices = REQUESTS[("en", kind)]
        k = allowed[random.Random(f"{self.seed}\0{user}").randrange(len(allowed))]
        if not 0 <= k < len(choices):
            raise LLMError(f"song request: phrasing {k} does not exist for {kind!r} requests (0..{len(choices) - 1})")
        title, part, voice = payload["title"], payload.get("part"), payload.get("voice")
        fill = {"title": title, "part": part, "voice": voice, "what": f"{part} of {title}" if part else title}
        return json.dumps({"request": choices[k].format(**fill), "phrasing": f"en-{kind}-{k}"}, ensure_ascii=False)


class NanoConversation(ConversationPipeline):
    """The conversation pipeline (filter, score, colloquial rewrite, TTS) over the planned
    QA dialogues, each spoken by the user voice its plan names."""

    def __init__(self, llm, tts, plan: list[Item]):
        super().__init__(llm, tts, dialogues=[])
        self.plan = plan

    def items(self) -> list[Item]:
        return self.plan

    def user_voice_for(self, item: Item) -> Voice:
        # the plan picks the voice, so the held-out split can keep some voices to itself
        return USER_VOICES_BY_NAME[item.spec["user_voice"]]

    def sample_meta(self, item: Item, meta: dict) -> dict:
        # the corpus calls the assistant's voice "voice" (as its TTS samples do), in the same place
        meta = {("voice" if k == "assistant_voice" else k): v for k, v in meta.items()}
        return {**meta, "nano": {**item.spec["nano"], "user_voices": [meta["user_voice"]]}}


class NanoRoleplay(RoleplayPipeline):
    """The role-play pipeline (paraphrased voice descriptions, 8-15-turn scripts with
    instruction tags, instruct TTS) with the plan's paraphrase and user voice per item."""

    def __init__(self, llm, tts, plan: list[Item]):
        super().__init__(llm, tts, characters=[CHARACTERS_BY_KEY[k] for k in ROLEPLAY_VOICES],
                         paraphrase_count=N_PARAPHRASES)
        self.plan = plan

    def items(self) -> list[Item]:
        return self.plan

    def user_voice_for(self, item: Item) -> Voice:
        return USER_VOICES_BY_NAME[item.spec["user_voice"]]

    def description_for(self, descriptions: list[str], item: Item) -> str:
        # the split holds paraphrase numbers out: wrapping round to another number would leak one
        k = item.spec["paraphrase"]
        if k >= len(descriptions):
            raise LLMError(f"paraphrase: {len(descriptions)} paraphrases, the plan needs number {k}")
        return descriptions[k]

    def sample_meta(self, item: Item, meta: dict) -> dict:
        # each character has its own voice, named like the character, right after it
        return {"character": meta["character"], "voice": meta["character"], **meta,
                "nano": {**item.spec["nano"], "user_voices": [meta["user_voice"]]}}

    def keep_samples(self, item: Item, samples: list[dict]) -> list[dict]:
        # the plan's keep_lines: held-out items keep only their first character lines
        keep = item.spec.get("keep_lines")
        return samples[:keep] if keep else samples


class NanoSinging(SingingPipeline):
    """The singing pipeline (request phrasing, spoken request, PSOLA singing, pitch
    check) with the plan's request templates and user voice per item."""

    def __init__(self, llm, tts, plan: list[Item]):
        super().__init__(llm, tts, songs=nano_songs())
        self.plan = plan

    def items(self) -> list[Item]:
        return self.plan

    def user_voice_for(self, item: Item, language: str) -> Voice:
        return USER_VOICES_BY_NAME[item.spec["user_voice"]]

    def request_extra(self, item: Item) -> dict:
        # NanoTemplates phrases the request with one of these templates only
        return {"phrasings": item.spec["phrasings"]}

    def sample_meta(self, item: Item, meta: dict) -> dict:
        # the part's number ("segment", None for the whole song) goes right after its name
        out = {}
        for k, v in meta.items():
            out[k] = v
            if k == "part":
                out["segment"] = item.spec["part"]
        out["nano"] = {**item.spec["nano"], "phrasings": [meta["phrasing"]], "user_voices": [meta["user_voice"]]}
        return out


class NanoCharacterTTS:
    """TTS pairs in the role-play voices: every train QA reply (made by the conversation job)
    read again, plainly, by one of the eight characters (drawn from the reply's sample id, so an
    item keeps its voice at every scale), about 65 replies per voice.

    Why: each character's own train speech is its ~45 role-play lines, each said in that voice
    only, so what a line says and which voice says it go together; the same reply texts are also
    TTS pairs in the assistant's voice. Read by another voice, a text tells the LM nothing about
    the voice: only the voice vector does (docs/nano.md, "Role-play voices")."""

    name = CHARACTER_TTS

    def __init__(self, tts, conversation: Path):
        self.tts = tts
        self.conversation = Path(conversation)  # the conversation job's folder

    def config(self) -> dict:
        return {"tts": self.tts.describe(), "voices": list(ROLEPLAY_VOICES)}

    def replies(self) -> list[tuple[str, str]]:
        """(sample id, reply text) of every train QA sample the conversation job made."""
        path = self.conversation / "samples.jsonl"
        return sorted((s["id"], s["messages"][-1]["content"].replace(AUDIO_TAG, "").strip())
                      for s in (read_jsonl(path) if path.is_file() else [])
                      if s["meta"]["nano"]["split"] == "train" and s["meta"]["nano"]["kind"] == "qa")

    def items(self) -> list[Item]:
        voices = [(source, text, _pick(ROLEPLAY_VOICES, source, 0)) for source, text in self.replies()]
        return [Item(f"{source}-{voice}", {"source": source, "text": text, "voice": voice})
                for source, text, voice in voices]

    def make(self, item: Item, out) -> list[dict]:
        text, voice = item.spec["text"], item.spec["voice"]
        wav, sr = self.tts.synthesize(text, CHARACTERS_BY_KEY[voice].voice())
        return [{"id": item.id, "task": "tts",
                 "messages": [{"role": "user", "content": TTS_PROMPT.format(text=text)},
                              {"role": "assistant", "content": text + AUDIO_TAG}],
                 "audios": [out.save_wav("speech", wav, sr)],
                 "meta": {"voice": voice, "transcripts": [text],
                          "nano": {"split": "train", "kind": CHARACTER_TTS, "source": item.spec["source"],
                                   "user_voices": []}}}]


# ======================================================================================
# the build
# ======================================================================================
@dataclass
class CorpusSummary:
    out: Path
    seed: int
    scale: float
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)      # split -> task/kind -> samples
    hours: dict = field(default_factory=dict)       # split -> hours of audio (distinct files)
    failures: list = field(default_factory=list)    # (pipeline, item id, error)
    problems: list = field(default_factory=list)    # check_file problems, split-rule violations

    @property
    def ok(self) -> bool:
        return not self.failures and not self.problems

    def line(self) -> str:
        train, held = self.counts.get("train", {}), self.counts.get("heldout", {})
        return (f"nano corpus {self.out}: train {sum(train.values())} samples "
                f"({', '.join(f'{k} {v}' for k, v in sorted(train.items()))}), held-out {sum(held.values())} "
                f"({', '.join(f'{k} {v}' for k, v in sorted(held.items()))}); audio {self.hours.get('total', 0):.2f} h "
                f"(train {self.hours.get('train', 0):.2f} h, held-out {self.hours.get('heldout', 0):.2f} h); "
                f"{len(self.failures)} failed item(s); {self.seconds:.0f} s")


def plans(seed: int = 0, scale: float = 1.0, counting: bool = False) -> dict[str, list[Item]]:
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return {"conversation": conversation_plan(seed, scale, counting), "roleplay": roleplay_plan(seed, scale),
            "singing": singing_plan(seed, scale)}


def build_corpus(out=DEFAULT_CORPUS, seed: int = 0, scale: float = 1.0, progress: bool = True,
                 character_tts: bool = False, counting: bool = False) -> CorpusSummary:
    """Synthesise (or finish) the nano corpus in ``out`` and write the split files.

    Resumable: each pipeline is a job (``qinyu.data.synth.job``), so finished items keep
    their audio and a re-run makes only what is missing or failed. Items that fail are
    listed in the summary (and in each job's manifest.json); the split files hold
    everything that was made."""
    from ..data.schema import check_file

    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = CorpusSummary(out, seed, scale)
    llm, tts = NanoTemplates(seed=seed), EspeakTTS()
    plan = plans(seed, scale, counting)
    pipelines = {"conversation": NanoConversation(llm, tts, plan["conversation"]),
                 "roleplay": NanoRoleplay(llm, tts, plan["roleplay"]),
                 "singing": NanoSinging(llm, tts, plan["singing"])}
    if character_tts:  # last: it reads the replies the conversation job made
        pipelines[CHARACTER_TTS] = NanoCharacterTTS(tts, out / "conversation")
    for name, pipeline in pipelines.items():
        job = run_job(pipeline, out / name, progress=progress)
        summary.failures += [(name, item_id, error) for item_id, error in job.failures]
        summary.problems += [f"{name}/samples.jsonl {p}" for p in job.problems]
        manifest = json.loads((out / name / "manifest.json").read_text(encoding="utf-8"))
        seen = {i for _, i, _ in summary.failures}
        summary.failures += [(name, f["id"], f["error"]) for f in manifest.get("failed", []) if f["id"] not in seen]
    voices = write_reference_voices(out, tts)
    train, heldout, meta = merge(out, character_tts=character_tts)
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", heldout), ("heldout_meta.jsonl", meta)):
        write_jsonl(out / name, rows)
    for name in ("train.jsonl", "heldout.jsonl"):
        count, problems = check_file(out / name)
        summary.problems += [f"{name} {p}" for p in problems]
    summary.problems += check_split(out)
    summary.counts = {"train": _tally(train), "heldout": _tally(meta, key="kind")}
    summary.hours = {"train": audio_hours(out, train), "heldout": audio_hours(out, heldout)}
    summary.hours["total"] = audio_hours(out, train + heldout, extra=[c for v in voices.values() for c in v["clips"]])
    summary.seconds = time.time() - start
    _write_json(out / "nano.json", {
        "seed": seed, "scale": scale, "counting": counting, "seconds": round(summary.seconds, 1),
        "counts": summary.counts,
        "hours": {k: round(v, 4) for k, v in summary.hours.items()}, "split_rules": SPLIT_RULES,
        "user_voices": {"train": TRAIN_USER_VOICES, "heldout": HELDOUT_USER_VOICES},
        "roleplay_voices": list(ROLEPLAY_VOICES), "songs": list(NANO_SONGS),
        "failed": [{"pipeline": p, "id": i, "error": e} for p, i, e in summary.failures],
        "problems": summary.problems[:100]})
    if progress:
        print(summary.line(), file=sys.stderr)
    return summary


def write_reference_voices(out: Path, tts) -> dict:
    """``voices/NAME/k.wav``: the reference sentences in each assistant-side voice (the
    eight role-play voices, the assistant's, the six singing voices), plain (no
    instruction), and ``voices/voices.json`` describing them. Existing clips are kept."""
    from ..audio.io import save_audio
    from ..data.synth.profiles import describe

    table = {}
    entries = [(k, CHARACTERS_BY_KEY[k].voice(), "roleplay", describe(CHARACTERS_BY_KEY[k], 0),
                CHARACTERS_BY_KEY[k].attributes()) for k in ROLEPLAY_VOICES]
    entries.append(("assistant-en", ASSISTANT_VOICES["en"], "assistant", ASSISTANT_VOICES["en"].description, None))
    entries += [(name, v, "singing", words, None) for name, (v, words, _) in sorted(SINGING_VOICES.items())]
    for name, voice, role, description, attributes in entries:
        clips = []
        for k, text in enumerate(REFERENCE_SENTENCES):
            path = out / "voices" / name / f"{k}.wav"
            if not path.is_file():
                wav, sr = tts.synthesize(text, voice)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{k}.tmp.wav")
                save_audio(tmp, wav, sr)
                tmp.replace(path)
            clips.append(path.relative_to(out).as_posix())
        table[name] = {"role": role, "description": description, "attributes": attributes,
                       "espeak": voice.to_dict(), "clips": clips, "texts": REFERENCE_SENTENCES}
    _write_json(out / "voices" / "voices.json", table)
    return table


def _user_audio(sample: dict) -> list[tuple[str, str]]:
    """(path, transcript) of each user audio of a pipeline sample, in order."""
    from ..data.schema import audio_roles

    roles = audio_roles(sample["messages"])
    texts = sample["meta"].get("transcripts", [])
    return [(a, t) for a, t, r in zip(sample["audios"], texts, roles) if r == "user"]


def _asr(sample_id: str, path: str, text: str, nano: dict) -> dict:
    return {"id": sample_id, "task": "asr",
            "messages": [{"role": "user", "content": ASR_PROMPT}, {"role": "assistant", "content": text}],
            "audios": [path], "meta": {"transcripts": [text], "nano": nano}}


def merge(out, character_tts: bool = False) -> tuple[list[dict], list[dict], list[dict]]:
    """(train samples, held-out samples, held-out meta) from the three jobs' samples.

    Audio paths become relative to ``out``. Derived samples: an ASR pair for every user
    utterance (train: all pipelines; held-out: QA questions and song requests) and a TTS
    pair for every spoken QA answer (train); with ``character_tts``, the character TTS job's samples
    as they are."""
    out = Path(out)
    train, heldout, meta = [], [], []
    asr_done = set()
    for name in (*PIPELINES, CHARACTER_TTS) if character_tts else PIPELINES:
        path = out / name / "samples.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            s = json.loads(line)
            s["audios"] = [f"{name}/{a}" for a in s["audios"]]
            nano = s["meta"]["nano"]
            split, kind = nano["split"], nano["kind"]
            (heldout if split == "heldout" else train).append(s)
            reply = s["messages"][-1]["content"].replace(AUDIO_TAG, "").strip()
            if split == "heldout":
                meta.append(_heldout_meta(s, reply))
            users = _user_audio(s)
            for j, (audio, text) in enumerate(users):
                if audio in asr_done or (split == "heldout" and kind == "roleplay"):
                    continue
                asr_done.add(audio)
                operands, phrasings = nano.get("operands", [])[j:j + 1], nano.get("phrasings", [])[j:j + 1]
                tests = ["speech recognition"] + (["unseen user voice"] if split == "heldout" else []) + \
                        (["unseen operand pair"] if any(heldout_pair(*o) for o in operands) else []) + \
                        (["unseen phrasing"] if any(p and heldout_phrasing(p) for p in phrasings) else [])
                derived = {"split": split, "kind": "asr", "source": s["id"], "user_voices": nano["user_voices"],
                           "operands": operands, "phrasings": phrasings, "tests": tests if split == "heldout" else []}
                sample = _asr(f"{s['id']}-asr{j}", audio, text, derived)
                if split == "heldout":
                    heldout.append(sample)
                    meta.append({"id": sample["id"], "kind": "asr", "sub": kind, "source": s["id"],
                                 "tests": tests,
                                 "reference": {"text": text, "audio": audio}})
                else:
                    train.append(sample)
            if kind == "qa" and split == "train":
                train.append({"id": f"{s['id']}-tts", "task": "tts",
                              "messages": [{"role": "user", "content": TTS_PROMPT.format(text=reply)},
                                           {"role": "assistant", "content": reply + AUDIO_TAG}],
                              "audios": [s["audios"][-1]],
                              "meta": {"voice": s["meta"]["voice"], "transcripts": [reply],
                                       "nano": {"split": "train", "kind": "tts", "source": s["id"],
                                                "user_voices": []}}})
    return train, heldout, meta


def _heldout_meta(s: dict, reply: str) -> dict:
    nano, m = s["meta"]["nano"], s["meta"]
    row = {"id": s["id"], "kind": nano["kind"], "sub": nano.get("sub"), "tests": nano.get("tests", [])}
    if nano["kind"] == "qa":
        users = _user_audio(s)
        row["reference"] = {**nano["answer"], "reply": reply, "reply_audio": s["audios"][-1],
                            "question": users[-1][1] if users else None, "operands": nano.get("operands", [])}
    elif nano["kind"] == "roleplay":
        row["reference"] = {"voice": m["character"], "description": m["description"], "paraphrase": m["paraphrase"],
                            "text": reply, "audio": s["audios"][-1]}
    else:
        row["reference"] = {"song": m["song"], "title": m["title"], "part": m["part"], "segment": m["segment"],
                            "voice": m["voice"], "notes": m["notes"], "lyrics": reply, "audio": s["audios"][-1],
                            "request": m["request"]}
    return row


def _tally(rows: list[dict], key: str = "task") -> dict:
    out: dict[str, int] = {}
    for r in rows:
        out[r[key]] = out.get(r[key], 0) + 1
    return out


def audio_hours(out: Path, samples: list[dict], extra: list[str] = ()) -> float:
    import soundfile as sf

    paths = {a for s in samples for a in s.get("audios", [])} | set(extra)
    seconds = 0.0
    for p in paths:
        info = sf.info(str(Path(out) / p))
        seconds += info.frames / info.samplerate
    return seconds / 3600.0


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# ======================================================================================
# the split check
# ======================================================================================
def check_split(out) -> list[str]:
    """Every way ``train.jsonl`` breaks the held-out rules (an empty list when it keeps them):
    a held-out operand pair, question or request phrasing, description paraphrase (by
    number or by text) or user voice in a train sample; the question of a held-out item
    that tests an unseen phrasing heard, word for word, in train; a held-out item not
    spoken by a held-out user voice or missing what it claims to test."""
    out = Path(out)
    train, heldout = read_jsonl(out / "train.jsonl"), read_jsonl(out / "heldout.jsonl")
    problems = []
    train_descriptions, train_questions = set(), set()
    for s in train:
        nano, sid = s["meta"]["nano"], s["id"]
        for a, op, b in nano.get("operands", []):
            if heldout_pair(a, op, b):
                problems.append(f"train {sid}: held-out operand pair {a} {op} {b}")
        for pid in nano.get("phrasings", []):
            if pid and heldout_phrasing(pid):
                problems.append(f"train {sid}: held-out phrasing {pid}")
        if nano.get("paraphrase") is not None and heldout_paraphrase(nano["paraphrase"]):
            problems.append(f"train {sid}: held-out paraphrase {nano['paraphrase']}")
        for v in nano.get("user_voices", []):
            if heldout_user_voice(v):
                problems.append(f"train {sid}: held-out user voice {v}")
        if s["task"] == "roleplay":
            train_descriptions.add(s["meta"]["description"])
        if s["task"] != "asr":
            train_questions.update(t for _, t in _user_audio(s))
    for s in heldout:
        nano, sid = s["meta"]["nano"], s["id"]
        voices = nano.get("user_voices", [])
        if not voices or not all(heldout_user_voice(v) for v in voices):
            problems.append(f"held-out {sid}: user voice(s) {voices} are not held-out voices")
        tests = nano.get("tests", [])
        if "unseen operand pair" in tests and not any(heldout_pair(*o) for o in nano.get("operands", [])):
            problems.append(f"held-out {sid}: tests an unseen operand pair but has none")
        if "unseen question phrasing" in tests or "unseen request phrasing" in tests:
            if not any(heldout_phrasing(p) for p in nano.get("phrasings", []) if p):
                problems.append(f"held-out {sid}: tests an unseen phrasing but has none")
        if s["task"] == "roleplay":
            if not heldout_paraphrase(nano["paraphrase"]) or s["meta"]["description"] in train_descriptions:
                problems.append(f"held-out {sid}: its description is seen in train")
        if s["task"] == "chat" and "unseen question phrasing" in tests:
            question = _user_audio(s)[-1][1]
            if question in train_questions:
                problems.append(f"held-out {sid}: its question {question!r} is heard in train")
    return problems
