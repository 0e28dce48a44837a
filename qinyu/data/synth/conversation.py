"""The conversation pipeline: text dialogues -> spoken dialogues (the paper's recipe).

For each source dialogue:
1. filter: drop what cannot be spoken (markup, code, links, over-long turns, broken
   turn order), by rule, before any LLM call is spent on it;
2. score: the LLM rates how natural and speakable it is (1..10); below ``min_score`` the
   dialogue is dropped;
3. colloquial rewrite: the LLM turns written prose into how people talk;
4. TTS: every user turn is spoken by one of many user voices (chosen per dialogue), the
   final assistant reply by the assistant's voice.

The sample has the user's turns as audio, earlier assistant turns as text (history keeps
text only, as in the reference) and the last reply as ``text<|audio|>``. ``meta`` keeps
the score, the voices and each audio's transcript (so ASR/TTS pairs can be cut from it).
"""

from __future__ import annotations

import json
import re

from .job import Item, Skip
from .llm import LLMError, parse_json_reply
from .tts import Voice
from .voices import ASSISTANT_VOICES, user_voice

SCORE_PROMPT = """You rate text dialogues for a corpus of spoken conversations between a user and a voice assistant.
The input is JSON: {"dialogue": [{"role": "user" | "assistant", "text": ...}, ...]}.
Give 10 to a short, natural exchange that sounds fine read aloud; give 1 to anything that cannot be spoken
(code, tables, links, lists, very long answers) or that is wrong or unhelpful.
Answer with JSON only: {"score": <integer 1-10>, "reason": "<a few words>"}."""

REWRITE_PROMPT = """You rewrite text dialogues into natural spoken language, as people really talk.
The input is JSON: {"dialogue": [{"role": "user" | "assistant", "text": ...}, ...], "language": "en" | "zh"}.
Keep the number of turns, their roles, their order and their meaning. Use contractions and a casual register,
an occasional filler word, short sentences, numbers written as words, and no markup, lists or emoji.
Write in the dialogue's language.
Answer with JSON only: {"dialogue": [{"role": ..., "text": ...}, ...]}."""

_UNSPEAKABLE = re.compile(r"```|[`*#|{}<>=\\\[\]]|https?://|www\.")


def speakable(dialogue: list[dict], max_words: int = 60, max_turns: int = 8) -> str | None:
    """Why the dialogue cannot become speech, or None when it can."""
    if not dialogue:
        return "no turns"
    if len(dialogue) > max_turns:
        return f"{len(dialogue)} turns (at most {max_turns})"
    for i, t in enumerate(dialogue):
        expected = "user" if i % 2 == 0 else "assistant"
        if t.get("role") != expected:
            return f"turn {i + 1} is {t.get('role')!r}, expected {expected!r} (user and assistant alternate)"
        text = str(t.get("text") or "").strip()
        if not text:
            return f"turn {i + 1} is empty"
        if _UNSPEAKABLE.search(text):
            return f"turn {i + 1} holds markup, code or a link"
        words = len(text) / 2 if re.search(r"[\u3400-\u9fff]", text) else len(text.split())
        if words > max_words:
            return f"turn {i + 1} has about {int(words)} words (at most {max_words})"
    if dialogue[-1]["role"] != "assistant":
        return "the last turn is not the assistant's"
    return None


class ConversationPipeline:
    name = "conversation"

    def __init__(self, llm, tts, dialogues: list[dict] | None = None, min_score: int = 6, max_words: int = 60):
        from .sources import builtin_dialogues

        self.llm = llm
        self.tts = tts
        self.dialogues = builtin_dialogues() if dialogues is None else dialogues
        self.min_score = min_score
        self.max_words = max_words

    def config(self) -> dict:
        return {"llm": self.llm.describe(), "tts": self.tts.describe(), "min_score": self.min_score,
                "max_words": self.max_words}

    def stats(self) -> dict:
        return dict(self.llm.stats)

    def items(self) -> list[Item]:
        return [Item(f"conv-{d['id']}", {"dialogue": d["dialogue"], "language": d.get("language", "en")})
                for d in self.dialogues]

    def score(self, dialogue: list[dict]) -> tuple[int, str]:
        reply = self.llm.complete(SCORE_PROMPT, json.dumps({"dialogue": dialogue}, ensure_ascii=False), task="score",
                                  temperature=0.0)
        value = parse_json_reply(reply, "score")
        try:
            return int(value["score"]), str(value.get("reason", ""))
        except (KeyError, TypeError, ValueError):
            raise LLMError(f"score: expected {{\"score\": 1..10}}, got {reply[:200]!r}") from None

    def rewrite(self, dialogue: list[dict], language: str) -> list[dict]:
        payload = json.dumps({"dialogue": dialogue, "language": language}, ensure_ascii=False)
        value = parse_json_reply(self.llm.complete(REWRITE_PROMPT, payload, task="rewrite"), "rewrite")
        turns = value.get("dialogue") if isinstance(value, dict) else value
        if (not isinstance(turns, list) or len(turns) != len(dialogue)
                or any(not isinstance(t, dict) or t.get("role") != d["role"] or not str(t.get("text") or "").strip()
                       for t, d in zip(turns, dialogue))):
            raise LLMError(f"rewrite: the reply must keep the {len(dialogue)} turns and their roles, got "
                           f"{json.dumps(turns, ensure_ascii=False)[:200]}")
        return [{"role": t["role"], "text": str(t["text"]).strip()} for t in turns]

    # hooks: a subclass that plans its items (the nano corpus) overrides these instead of make()
    def user_voice_for(self, item: Item) -> Voice:
        """The voice of the user's turns: one of many, picked by the item's id."""
        return user_voice(item.spec["language"], item.id)

    def sample_meta(self, item: Item, meta: dict) -> dict:
        """The ``meta`` the sample is written with; a subclass may add its own bookkeeping."""
        return meta

    def make(self, item: Item, out) -> list[dict]:
        dialogue, language = item.spec["dialogue"], item.spec["language"]
        reason = speakable(dialogue, self.max_words)
        if reason:
            raise Skip(f"filtered: {reason}")
        score, why = self.score(dialogue)
        if score < self.min_score:
            raise Skip(f"score {score} < {self.min_score}: {why}")
        spoken = self.rewrite(dialogue, language)
        user = self.user_voice_for(item)
        assistant = ASSISTANT_VOICES.get(language, ASSISTANT_VOICES["en"])
        messages, audios, transcripts = [], [], []
        for i, turn in enumerate(spoken):
            last = i == len(spoken) - 1
            if turn["role"] == "user":
                wav, sr = self.tts.synthesize(turn["text"], user)
                audios.append(out.save_wav(f"user{i:02d}", wav, sr))
                transcripts.append(turn["text"])
                messages.append({"role": "user", "content": "<|audio|>"})
            elif last:
                wav, sr = self.tts.synthesize(turn["text"], assistant)
                audios.append(out.save_wav("reply", wav, sr))
                transcripts.append(turn["text"])
                messages.append({"role": "assistant", "content": turn["text"] + "<|audio|>"})
            else:
                messages.append({"role": "assistant", "content": turn["text"]})
        return [{"id": item.id, "task": "chat", "messages": messages, "audios": audios,
                 "meta": self.sample_meta(item, {"language": language, "score": score, "user_voice": user.name,
                                                 "assistant_voice": assistant.name, "transcripts": transcripts,
                                                 "written": [t["text"] for t in dialogue]})}]
