"""The role-play pipeline: characters with described voices, multi-turn scripts, instruct TTS.

For each (character, scenario):
1. the voice description: the LLM paraphrases the character's four voice attributes
   (gender, age, pitch, pace; plus texture) in several wordings, and the item takes one
   of them in turn, so every wording is used and a split can hold wordings out;
2. the script: the LLM writes 8-15 turns between a user and the character, each
   character line with an instruction tag (cheerfully, whispering, ...);
3. speech: user lines in a user voice; character lines with the instruct TTS, told the
   voice description and the line's tag (espeak-ng realises both through its controls).

Each character line becomes one sample: the system prompt names the character and
describes the role and voice, earlier turns are history (user audio, character text),
and the line itself is the spoken reply. ``meta`` keeps the attributes, the description
used, the tags and each audio's transcript.
"""

from __future__ import annotations

import json
import random

from .job import Item
from .llm import LLMError, parse_json_reply
from .profiles import CHARACTERS, Character
from .templates import SCENARIOS, TAGS
from .tts import Voice
from .voices import user_voice

PARAPHRASE_PROMPT = """You write descriptions of a speaking voice for a voice-design dataset.
The input is JSON: {"attributes": {"gender", "age", "pitch", "pace", "texture"}, "count": n}.
Write n different one-sentence descriptions of that voice, each mentioning every attribute, in varied wording and
sentence structure. The first one plainly states the attributes.
Answer with JSON only: {"paraphrases": ["...", ...]}."""

SCRIPT_PROMPT = """You write role-play scripts for a spoken dialogue dataset.
The input is JSON: {"character": {"name", "persona", "place", "hobby", "saying"}, "scenario": ..., "turns": n,
"tags": [...]}.
Write exactly n short spoken lines alternating between "user" and "character", ending with the character (if n is
odd, the character speaks first). The character stays in role. Give every character line one instruction tag from
"tags" saying how to speak it; user lines have the tag "".
Answer with JSON only: {"turns": [{"speaker": "user" | "character", "text": ..., "tag": ...}, ...]}."""


class RoleplayPipeline:
    name = "roleplay"

    def __init__(self, llm, tts, characters: list[Character] | None = None, scenarios: list[str] | None = None,
                 paraphrase_count: int = 6, min_turns: int = 8, max_turns: int = 15):
        if not 2 <= min_turns <= max_turns:
            raise ValueError(f"turns must satisfy 2 <= min_turns <= max_turns, got {min_turns}..{max_turns}")
        self.llm = llm
        self.tts = tts
        self.characters = list(characters or CHARACTERS)
        self.scenarios = list(scenarios or SCENARIOS)
        self.paraphrase_count = paraphrase_count
        self.min_turns, self.max_turns = min_turns, max_turns

    def config(self) -> dict:
        return {"llm": self.llm.describe(), "tts": self.tts.describe(), "paraphrases": self.paraphrase_count}

    def stats(self) -> dict:
        return dict(self.llm.stats)

    def items(self) -> list[Item]:
        items = []
        for c in self.characters:
            for scenario in self.scenarios:
                item_id = f"rp-{c.key}-{scenario}"
                turns = random.Random(item_id).randint(self.min_turns, self.max_turns)
                # wordings rotate over all items, so each one is used about equally often
                items.append(Item(item_id, {"character": c.to_dict(), "scenario": scenario, "turns": turns,
                                            "paraphrase": len(items) % self.paraphrase_count}))
        return items

    def descriptions(self, character: Character) -> list[str]:
        payload = json.dumps({"attributes": character.attributes(), "count": self.paraphrase_count})
        value = parse_json_reply(self.llm.complete(PARAPHRASE_PROMPT, payload, task="paraphrase"), "paraphrase")
        found = value.get("paraphrases") if isinstance(value, dict) else value
        if not isinstance(found, list) or not found or not all(isinstance(p, str) and p.strip() for p in found):
            raise LLMError(f"paraphrase: expected {{\"paraphrases\": [text, ...]}}, got {str(value)[:200]}")
        return [p.strip() for p in found]

    def script(self, character: Character, scenario: str, turns: int) -> list[dict]:
        payload = json.dumps({"character": {k: getattr(character, k) for k in ("name", "persona", "place", "hobby",
                                                                               "saying")},
                              "scenario": scenario, "turns": turns, "tags": TAGS}, ensure_ascii=False)
        value = parse_json_reply(self.llm.complete(SCRIPT_PROMPT, payload, task="roleplay_script"), "script")
        lines = value.get("turns") if isinstance(value, dict) else value
        if not isinstance(lines, list):
            raise LLMError(f"script: expected {{\"turns\": [...]}}, got {str(value)[:200]}")
        problems = []
        if not self.min_turns <= len(lines) <= self.max_turns:
            problems.append(f"{len(lines)} turns, expected {self.min_turns}..{self.max_turns}")
        for i, line in enumerate(lines):
            if not isinstance(line, dict) or line.get("speaker") not in ("user", "character") \
                    or not str(line.get("text") or "").strip():
                problems.append(f"turn {i + 1} needs speaker user|character and text")
        if lines and isinstance(lines[-1], dict) and lines[-1].get("speaker") != "character":
            problems.append("the script must end with the character")
        if problems:
            raise LLMError("script: " + "; ".join(problems[:5]))
        return [{"speaker": ln["speaker"], "text": str(ln["text"]).strip(), "tag": str(ln.get("tag") or "")}
                for ln in lines]

    # hooks: a subclass that plans its items (the nano corpus) overrides these instead of make()
    def user_voice_for(self, item: Item) -> Voice:
        """The voice of the user's lines: one of many, picked by the item's id."""
        return user_voice("en", item.id)

    def description_for(self, descriptions: list[str], item: Item) -> str:
        """The item's wording of the voice; the LLM may give fewer than asked, so it wraps round."""
        return descriptions[item.spec["paraphrase"] % len(descriptions)]

    def sample_meta(self, item: Item, meta: dict) -> dict:
        """The ``meta`` a sample is written with; a subclass may add its own bookkeeping."""
        return meta

    def keep_samples(self, item: Item, samples: list[dict]) -> list[dict]:
        """The samples (one per answered character line) the item keeps: all of them."""
        return samples

    def make(self, item: Item, out) -> list[dict]:
        spec = item.spec
        character = Character(**spec["character"])
        descriptions = self.descriptions(character)
        description = self.description_for(descriptions, item)
        lines = self.script(character, spec["scenario"], spec["turns"])
        user = self.user_voice_for(item)
        voice = character.voice()
        system = (f"Your Name: {character.name}\nYour Role Description: You are {character.persona}, at home at "
                  f"{character.place}, and you love {character.hobby}. Your voice: {description}")
        audio = []  # (path, transcript) per line
        for i, line in enumerate(lines):
            if line["speaker"] == "user":
                wav, sr = self.tts.synthesize(line["text"], user)
            else:
                tag = f" Speak {line['tag']}." if line["tag"] else ""
                wav, sr = self.tts.synthesize(line["text"], voice, instruction=f"{description}{tag}")
            audio.append(out.save_wav(f"{i:02d}-{line['speaker']}", wav, sr))
        samples = []
        for j, line in enumerate(lines):
            if line["speaker"] != "character" or not any(ln["speaker"] == "user" for ln in lines[:j]):
                continue  # a greeting before the user says anything has no context to answer
            messages = [{"role": "system", "content": system}]
            audios, transcripts = [], []
            for i in range(j + 1):
                if lines[i]["speaker"] == "user":
                    messages.append({"role": "user", "content": "<|audio|>"})
                    audios.append(audio[i])
                    transcripts.append(lines[i]["text"])
                elif i == j:
                    messages.append({"role": "assistant", "content": lines[i]["text"] + "<|audio|>"})
                    audios.append(audio[i])
                    transcripts.append(lines[i]["text"])
                else:
                    messages.append({"role": "assistant", "content": lines[i]["text"]})
            samples.append({"id": f"{item.id}-{j:02d}", "task": "roleplay", "messages": messages, "audios": audios,
                            "meta": self.sample_meta(item, {
                                "character": character.key, "attributes": character.attributes(),
                                "description": description, "paraphrase": spec["paraphrase"],
                                "scenario": spec["scenario"], "tag": line["tag"], "turn": j,
                                "script_turns": len(lines), "user_voice": user.name, "transcripts": transcripts})})
        if not samples:
            raise LLMError("script: no character line follows a user line")
        return self.keep_samples(item, samples)
