"""The template backend's answers: each LLM task of the pipelines, done by rule.

Each function takes the task's JSON input (what an LLM would be sent) and a seeded
``random.Random`` and returns what a good LLM would answer, in the same JSON shape, so
the pipelines cannot tell the backends apart. qinyu-nano's corpus is built this way: no
network, and the same seed gives the same corpus.

Tasks (input -> output):

- ``score``: {dialogue: [{role, text}]} -> {score: 1..10, reason}
- ``rewrite``: {dialogue, language} -> {dialogue}: the same turns in a spoken register
- ``paraphrase``: {attributes, count} -> {paraphrases: [...]}: voice descriptions
- ``roleplay_script``: {character, scenario, turns, tags} -> {turns: [{speaker, text, tag}]}
- ``song_request``: {title, part, voice, language} -> {request, phrasing}
"""

from __future__ import annotations

import re

from .profiles import paraphrases as _paraphrases

# --- score --------------------------------------------------------------------------------

_UNSPEAKABLE = re.compile(r"[`*#|{}<>=_\\\[\]]|https?://|www\.")


def score(payload: dict, rng) -> dict:
    """How suitable a text dialogue is for speech: short turns, nothing unspeakable."""
    turns = payload.get("dialogue") or []
    if len(turns) < 2:
        return {"score": 1, "reason": "fewer than two turns"}
    points, reasons = 8, []
    for t in turns:
        text = str(t.get("text", "")).strip()
        if not text:
            return {"score": 1, "reason": "an empty turn"}
        length = len(text) / 2 if re.search(r"[\u3400-\u9fff]", text) else len(text.split())
        if _UNSPEAKABLE.search(text):
            points, reasons = points - 4, reasons + ["markup, code or a link cannot be spoken"]
        if t.get("role") == "assistant" and length > 60:
            points, reasons = points - 3, reasons + ["an answer too long to listen to"]
        elif t.get("role") == "assistant" and length > 35:
            points, reasons = points - 1, reasons + ["a long answer"]
    if len({str(t.get("text")) for t in turns}) < len(turns):
        points, reasons = points - 2, reasons + ["repeated turns"]
    points = max(1, min(10, points + rng.choice((0, 0, 1))))  # a little spread, like a human rater
    return {"score": points, "reason": "; ".join(dict.fromkeys(reasons)) or "short, natural, speakable"}


# --- colloquial rewrite ------------------------------------------------------------------

_CONTRACTIONS = [("I am", "I'm"), ("it is", "it's"), ("do not", "don't"), ("does not", "doesn't"),
                 ("cannot", "can't"), ("can not", "can't"), ("you are", "you're"), ("that is", "that's"),
                 ("what is", "what's"), ("there is", "there's"), ("I will", "I'll"), ("we are", "we're"),
                 ("they are", "they're"), ("is not", "isn't"), ("are not", "aren't"), ("I would", "I'd"),
                 ("let us", "let's"), ("I have", "I've"), ("where is", "where's"), ("how is", "how's")]
USER_FILLERS = {"en": ["Um, ", "So, ", "Hey, ", "Okay, ", "Hmm, ", "Oh, "],
                 "zh": ["嗯，", "那个，", "请问，", "哎，"]}
_ASSISTANT_FILLERS = {"en": ["Well, ", "Sure! ", "Oh, ", "Okay, ", "Right, "],
                      "zh": ["好的，", "嗯，", "哦，"]}


def _contract(text: str) -> str:
    for full, short in _CONTRACTIONS:
        text = re.sub(rf"\b{full}\b", short, text)
        # sentence-initial forms keep their capital: "It is" -> "It's"
        text = re.sub(rf"\b{full[0].upper() + full[1:]}\b", short[0].upper() + short[1:], text)
    return text


def _decapitalise(text: str) -> str:
    return text[0].lower() + text[1:] if text[:1].isupper() and not text.startswith(("I ", "I'")) else text


def rewrite(payload: dict, rng) -> dict:
    """Written dialogue -> spoken style: contractions, a filler now and then, no markup."""
    lang = payload.get("language", "en")
    lang = lang if lang in USER_FILLERS else "en"
    out = []
    for t in payload.get("dialogue") or []:
        text = re.sub(r"\s+", " ", re.sub(r"[*_#`]", "", str(t.get("text", "")))).strip()
        if lang == "en":
            text = _contract(text)
        fillers = USER_FILLERS if t.get("role") == "user" else _ASSISTANT_FILLERS
        if rng.random() < (0.5 if t.get("role") == "user" else 0.3):
            filler = rng.choice(fillers[lang])
            text = filler + (_decapitalise(text) if lang == "en" else text)
        out.append({"role": t.get("role"), "text": text})
    return {"dialogue": out}


# --- voice-description paraphrases --------------------------------------------------------


def paraphrase(payload: dict, rng) -> dict:
    return {"paraphrases": _paraphrases(payload["attributes"], int(payload.get("count", 4)))}


# --- role-play scripts --------------------------------------------------------------------

# (user lines, character lines) per topic; {name} {persona} {place} {hobby} {saying} filled in
_TOPICS = {
    "name": (["What's your name?", "Who are you, if I may ask?", "Sorry, I didn't catch your name."],
             ["I'm {name}, {persona}.", "People call me {name}. I'm {persona}.", "The name's {name}. I'm {persona}."]),
    "place": (["Where do you spend your days?", "Where can I usually find you?", "Where do you like to be?"],
              ["Mostly at {place}. It feels like home to me.", "You'll find me at {place}, nearly every day.",
               "At {place}, of course. I know every corner of it."]),
    "hobby": (["What do you love doing?", "What do you do for fun?", "What makes you happy?"],
              ["I love {hobby}. The hours just fly by.", "{Hobby}, without a doubt. I could do it all day.",
               "Oh, {hobby}! Nothing else comes close."]),
    "advice": (["Can you give me some advice?", "I'm feeling a bit lost today. Any advice?",
                "What would you tell someone who's having a hard day?"],
               ["Well, as I always say: {saying}", "Take a deep breath first. {saying}",
                "Go slowly and be kind to yourself. {saying}"]),
    "story": (["Tell me something that happened to you recently.", "Do you have a story for me?",
               "What was the best moment of your week?"],
              ["Just yesterday, at {place}, I was {hobby} and completely lost track of time.",
               "Last week a stranger came to {place} and asked me about {hobby}. We talked for hours.",
               "The best moment? Sitting at {place} at sunset, {hobby}."]),
    "weather": (["How's the weather where you are?", "Is it cold at {place} today?"],
                ["At {place}? It changes every hour, but I like it that way.",
                 "Bright and breezy today. Perfect for {hobby}."]),
    "best": (["What's the best part of your life?", "Do you like being {persona}?"],
             ["The best part is meeting people like you, and {hobby}, of course.",
              "I wouldn't trade it for anything. Being {persona} suits me."]),
    "help": (["Could you help me with something?", "Can I ask you for a favour?"],
             ["Of course. Tell me what you need, and I'll do my best.",
              "Certainly. That's what friends are for."]),
    "food": (["What's your favourite food?", "What did you have for breakfast?"],
             ["A warm bowl of soup, every time.", "Bread and honey. Simple things are the best."]),
    "dream": (["What's your biggest dream?", "What do you hope for?"],
              ["To keep {hobby} for as long as I live.", "To see {place} full of happy faces one day."]),
    "secret": (["Can you tell me a secret?", "What's something nobody knows about you?"],
               ["Come closer. I've never told anyone how much I love {hobby}.",
                "Between you and me, I still get nervous every morning at {place}."]),
}
_CLOSING = (["I have to go now. Goodbye!", "It was lovely talking to you. Bye!", "Thank you, I should go now."],
            ["Goodbye, friend! Come back to {place} any time.", "Take care. And remember: {saying}",
             "It was my pleasure. See you soon!"])
_GREETING = ["Oh, hello there! Welcome.", "Well, hello! I didn't see you come in.", "Hi! Nice to see a new face."]
SCENARIOS = {"first-meeting": "name", "asking-advice": "advice", "a-story": "story", "a-visit": "place"}
TAGS = ["cheerfully", "calmly", "warmly", "excitedly", "proudly", "seriously", "with surprise", "whispering",
        "sadly", "nervously"]
# topics that pull their own tone; the rest draw from the character's usual tones
_TOPIC_TAGS = {"secret": "whispering", "advice": "warmly", "story": "excitedly", "help": "calmly", "closing": "warmly"}


def roleplay_script(payload: dict, rng) -> dict:
    """A user <-> character script of ``turns`` lines (8..15), ending on the character."""
    ch = payload["character"]
    turns = int(payload.get("turns", 10))
    tags = list(payload.get("tags") or TAGS)
    fill = {"name": ch["name"], "persona": ch["persona"], "place": ch["place"], "hobby": ch["hobby"],
            "Hobby": ch["hobby"][:1].upper() + ch["hobby"][1:], "saying": ch["saying"]}
    opener = SCENARIOS.get(payload.get("scenario"), "name")
    middle = [t for t in _TOPICS if t != opener]
    rng.shuffle(middle)
    lines = []

    def tag_for(topic):
        t = _TOPIC_TAGS.get(topic)
        return t if t in tags else rng.choice(tags)

    if turns % 2 == 1:  # an odd count: the character greets first, so the script still ends on them
        lines.append({"speaker": "character", "text": rng.choice(_GREETING), "tag": "cheerfully"
                      if "cheerfully" in tags else rng.choice(tags)})
    exchanges = turns // 2
    topics = [opener] + middle[:exchanges - 2] + ["closing"] if exchanges >= 2 else ["closing"] * exchanges
    for topic in topics:
        users, replies = _CLOSING if topic == "closing" else _TOPICS[topic]
        lines.append({"speaker": "user", "text": rng.choice(users).format(**fill), "tag": ""})
        lines.append({"speaker": "character", "text": rng.choice(replies).format(**fill), "tag": tag_for(topic)})
    return {"turns": lines}


# --- song requests ------------------------------------------------------------------------

REQUESTS = {
    ("en", "whole"): ["Can you sing {title} for me?", "Please sing {title}.", "I'd love to hear you sing {title}.",
                      "Sing me {title}, please.", "Could you sing the song {title}?", "Would you sing {title} for me?",
                      "How about singing {title}?", "Let's hear {title}. Can you sing it?"],
    ("en", "part"): ["Can you sing {part} of {title}?", "Please sing just {part} of {title}.",
                     "Sing {part} of {title} for me.", "I only want {part} of {title}. Can you sing it?",
                     "Could you sing {part} from {title}?", "How does {part} of {title} go? Sing it, please."],
    ("en", "voice"): ["Can you sing {what} in {voice}?", "Please sing {what} with {voice}.",
                      "Sing {what} for me in {voice}.", "I'd like to hear {what} sung in {voice}.",
                      "Could you do {what} in {voice}?"],
    ("zh", "whole"): ["你能唱一下{title}吗？", "请唱{title}。", "给我唱{title}吧。", "我想听你唱{title}。",
                      "唱一首{title}好吗？"],
    ("zh", "part"): ["你能唱{title}的{part}吗？", "请只唱{title}的{part}。", "给我唱一下{title}的{part}。",
                     "{title}的{part}怎么唱？唱给我听听。"],
    ("zh", "voice"): ["你能用{voice}唱{what}吗？", "请用{voice}给我唱{what}。", "用{voice}唱一下{what}吧。"],
}


def song_request(payload: dict, rng) -> dict:
    """A natural request for a song, a named part of it, or either in a given voice."""
    lang = "zh" if payload.get("language") == "zh" else "en"
    title, part, voice = payload["title"], payload.get("part"), payload.get("voice")
    if voice:
        what = (f"{title}的{part}" if lang == "zh" else f"{part} of {title}") if part else title
        kind, fill = "voice", {"what": what, "voice": voice}
    else:
        kind, fill = ("part" if part else "whole"), {"title": title, "part": part}
    choices = REQUESTS[(lang, kind)]
    k = rng.randrange(len(choices))
    return {"request": choices[k].format(**fill), "phrasing": f"{lang}-{kind}-{k}"}


TASKS = {"score": score, "rewrite": rewrite, "paraphrase": paraphrase, "roleplay_script": roleplay_script,
         "song_request": song_request}
