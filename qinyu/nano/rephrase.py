"""More train phrasings of the nano domain's questions and song requests.

The corpus asks each thing in a few fixed phrasings (``corpus.QUESTIONS``, ``GREETINGS``,
``templates.REQUESTS``), as a template backend without an LLM does. The paper's pipeline
has an LLM rewrite every question, so its model hears each thing asked in many ways; a
nano model trained on a few frames answers from the frame and not from what is asked
(docs/nano.md, "Hearing with a SAN-M encoder"). ``QUESTION_REPHRASINGS``,
``GREETING_REPHRASINGS`` and ``REQUEST_REPHRASINGS`` are further train phrasings, written
as an LLM rewrite would, that the speedrun's re-spoken questions (``encoder_rephrase_share``)
and typed questions (``rephrased_text``) say instead of the sample's own. They stay train
phrasings: ``check_rephrasings`` lists every word trigram they share with a held-out
phrasing that no corpus train phrasing already has (the tests require none), so the
held-out split asks in frames no more familiar than before.
"""

from __future__ import annotations

import functools
import random
import re

from ..data.synth.templates import REQUESTS, USER_FILLERS

# group -> further train templates; {a} {b} numbers in words, {x} a thing as asked
QUESTION_REPHRASINGS = {
    "add": ["What's the sum of {a} and {b}?", "{a} plus {b} is what?", "Do you know what {a} plus {b} is?",
            "Put {a} and {b} together. What do you get?", "I need {a} plus {b}.", "Quick one: {a} plus {b}?",
            "Can you add {a} and {b} for me?", "How many do {a} and {b} make together?",
            "Tell me what {a} plus {b} makes.", "What do you get with {a} and {b} more?"],
    "sub": ["Subtract {b} from {a}.", "What's {a} take away {b}?", "{a} minus {b} is what?",
            "Do you know what {a} minus {b} is?", "What is left when you subtract {b} from {a}?",
            "Quick one: {a} minus {b}?", "Tell me what {a} minus {b} makes.",
            "Start with {a}, then {b} go. What is left?"],
    "colour": ["{x} is what colour?", "What colour does {x} have?", "I want to know what colour {x} is.",
               "What colour would {x} be?", "Say what colour {x} is.", "When you look at {x}, what colour is it?"],
    "sound": ["What noise comes from {x}?", "Do you know what {x} says?", "{x} says what?",
              "What does {x} sound like?", "How does {x} sound?", "Can you make the sound {x} makes?"],
    "capital": ["Do you know the capital of {x}?", "What city is the capital of {x}?", "{x} has which capital?",
                "I want to know the capital of {x}.", "Which capital does {x} have?",
                "In {x}, what is the capital city?"],
    # the second question of a follow-up; {c} a number, {x} a thing
    "follow-add": ["Plus {c} more?", "Then add {c}?", "What about {c} more?", "And {c} more on top?"],
    "follow-sub": ["Then minus {c}?", "And {c} less?", "What if {c} go away?", "Minus {c} now?"],
    "follow-fact": ["What about {x}?", "And for {x}?", "Same question for {x}.", "{x} too?"],
}
GREETING_REPHRASINGS = {
    "hello": ["Hey there!", "Hello, nice to meet you.", "Hi, hello!", "Greetings!"],
    "morning": ["Good morning, how was your night?", "Morning, everyone!", "Top of the morning!"],
    "how": ["How have you been?", "Are you okay?", "How do you feel?", "How are things?"],
    "name": ["What's your name?", "Do you have a name?", "May I know your name?", "What should I call you?"],
    "thanks": ["Thanks!", "Thank you so much.", "I really appreciate it, thanks.", "Cheers, thank you."],
    "night": ["Sleep tight, good night!", "Time for bed, good night!", "Good night, see you tomorrow."],
    "bye": ["Bye!", "See you!", "Goodbye for now.", "I have to leave, goodbye.", "Talk to you later, bye!"],
}
# kind -> further English song requests; {title}, {part}, {what} (a part of a title, or a title), {voice}
REQUEST_REPHRASINGS = {
    "whole": ["I want to hear {title}.", "Can I hear you sing {title}?", "Do you know {title}? Sing it for me.",
              "Sing {title}, please!", "Give me a song: {title}."],
    "part": ["Sing only {part} of {title}.", "Can I hear {part} of {title}?", "Just {part} of {title} for me.",
             "I'd like {part} of {title}, sung for me."],
    "voice": ["Sing {what} using {voice}.", "Let me hear {what} in {voice}.", "I want {what}, sung in {voice}.",
              "Use {voice} and sing {what}."],
}

_FACT_ID = re.compile(r"^qa-fact-([a-z]+)-(\d+)-")
_FOLLOW_FACT_ID = re.compile(r"^qa-ffact-([a-z]+)-(\d+)-(\d+)-")


def _say(template: str, rng: random.Random, **fill) -> str:
    """A template filled in, with a filler in front half the time (a slot or "I" at the start
    keeps its capital: "Hmm, Spain has which capital?")."""
    if rng.random() < 0.5:
        lower = template[:1] != "{" and not template.startswith("I ")
        template = rng.choice(USER_FILLERS["en"]) + (template[0].lower() + template[1:] if lower else template)
    text = template.format(**fill)
    return text[:1].upper() + text[1:]


def rephrase(sample: dict, rng: random.Random) -> list[str] | None:
    """The user turns of a spoken QA or singing sample, each asked in one of the rephrasings
    above, or None when the sample is not one whose slots are known (role-play, ASR)."""
    from ..data.synth.sources import number_words as words
    from .corpus import FACTS

    meta = sample.get("meta") or {}
    nano = meta.get("nano") or {}
    sub, operands = nano.get("sub"), nano.get("operands") or []
    if sample.get("task") == "singing":
        title, voice = meta.get("title"), meta.get("voice_words")
        part = meta.get("part") if meta.get("segment") is not None else None  # None: the whole song
        if not title:
            return None
        if voice:
            return [_say(rng.choice(REQUEST_REPHRASINGS["voice"]), rng,
                         what=f"{part} of {title}" if part else title, voice=voice)]
        return [_say(rng.choice(REQUEST_REPHRASINGS["part" if part else "whole"]), rng, title=title, part=part)]
    if sub in ("add", "sub", "follow-arith"):
        (a, op, b), *follow = operands
        turns = [_say(rng.choice(QUESTION_REPHRASINGS["add" if op == "+" else "sub"]), rng, a=words(a), b=words(b))]
        for _, op, c in follow:
            turns.append(_say(rng.choice(QUESTION_REPHRASINGS["follow-add" if op == "+" else "follow-sub"]), rng,
                              c=words(c)))
        return turns
    if sub == "fact" and (match := _FACT_ID.match(sample.get("id", ""))):
        relation, i = match.group(1), int(match.group(2))
        return [_say(rng.choice(QUESTION_REPHRASINGS[relation]), rng, x=FACTS[relation][i][0])]
    if sub == "follow-fact" and (match := _FOLLOW_FACT_ID.match(sample.get("id", ""))):
        relation, i, j = match.group(1), int(match.group(2)), int(match.group(3))
        return [_say(rng.choice(QUESTION_REPHRASINGS[relation]), rng, x=FACTS[relation][i][0]),
                _say(rng.choice(QUESTION_REPHRASINGS["follow-fact"]), rng, x=FACTS[relation][j][0])]
    if sub == "greeting":
        intent = (nano.get("phrasings") or [""])[0].split(":")[0].removeprefix("greet-")
        if intent in GREETING_REPHRASINGS:
            return [_say(rng.choice(GREETING_REPHRASINGS[intent]), rng)]
    return None


# --- the check against the held-out phrasings -------------------------------------------------


def _trigrams(template: str) -> set[tuple[str, ...]]:
    """Word trigrams of a template, every slot as one token "{}"."""
    words = re.sub(r"\{[a-z]+\}", " {} ", template.lower())
    tokens = [re.sub(r"[^a-z'{}]", "", t) for t in words.split()]
    tokens = [t for t in tokens if t]
    return {tuple(tokens[i:i + 3]) for i in range(len(tokens) - 2)}


def _corpus_phrasings() -> tuple[list[str], list[str]]:
    """(train, held-out) phrasings of the corpus: questions, greetings and English requests."""
    from .corpus import GREETINGS, QUESTIONS, heldout_phrasing

    train = [t for tr, _ in QUESTIONS.values() for t in tr] + [t for tr, *_ in GREETINGS.values() for t in tr]
    held = [t for _, h in QUESTIONS.values() for t in h] + [t for _, h, *_ in GREETINGS.values() for t in h]
    for kind in ("whole", "part", "voice"):  # the corpus's own rule says which request phrasings are held out
        for k, template in enumerate(REQUESTS[("en", kind)]):
            (held if heldout_phrasing(f"en-{kind}-{k}") else train).append(template)
    return train, held


@functools.cache
def _heldout_only_trigrams() -> dict[str, frozenset[tuple[str, ...]]]:
    """Each held-out phrasing of the corpus -> its word trigrams that no corpus train phrasing has."""
    train, held = _corpus_phrasings()
    known = set().union(*(_trigrams(t) for t in train))
    return {t: frozenset(_trigrams(t) - known) for t in held}


def says_heldout_trigram(text: str) -> bool:
    """Whether ``text`` says a word trigram of a held-out phrasing that no train phrasing has
    (a slot, "{}", matches any word): made-up train utterances (``spliced_sentences``) must
    not teach the held-out phrasings' words in their order."""
    said = _trigrams(text)
    return any(all(h in ("{}", w) for h, w in zip(gram, words))
               for grams in _heldout_only_trigrams().values() for gram in grams for words in said)


def all_rephrasings() -> list[str]:
    return [t for group in (QUESTION_REPHRASINGS, GREETING_REPHRASINGS, REQUEST_REPHRASINGS)
            for templates in group.values() for t in templates]


def check_rephrasings() -> list[str]:
    """Every rephrasing that is a held-out phrasing or shares a word trigram with one that no
    corpus train phrasing has (an empty list when there is none)."""
    held_grams = _heldout_only_trigrams()
    held_lower = {t.lower() for t in held_grams}
    problems = []
    for template in all_rephrasings():
        if template.lower() in held_lower:
            problems.append(f"{template!r} is a held-out phrasing")
            continue
        for h, grams in held_grams.items():
            shared = _trigrams(template) & grams
            if shared:
                problems.append(f"{template!r} shares {sorted(' '.join(g) for g in shared)} with held-out {h!r}")
    return problems
