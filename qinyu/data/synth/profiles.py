"""Role-play character profiles: who the character is and how their voice sounds.

A voice is set by four attributes, as in the paper: gender, age, pitch and pace, plus a
texture word (clear, rough, breathy, bright) that picks the espeak-ng variant. The same
attributes are said in words, in several paraphrases, because the model must learn to
pick a voice from any wording of its description, and a held-out split needs wordings
the model never saw. The attributes also set espeak-ng's controls, so the voice really
sounds like its description.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .tts import Voice

GENDERS = ("male", "female")
AGES = ("child", "young", "middle-aged", "elderly")
PITCHES = ("low", "medium", "high")
PACES = ("slow", "moderate", "fast")
TEXTURES = ("clear", "rough", "breathy", "bright")


@dataclass(frozen=True)
class Character:
    key: str            # file-safe id
    name: str
    persona: str        # "a retired sea captain"
    place: str          # where they spend their days
    hobby: str          # what they love doing (a gerund phrase)
    saying: str         # a line they often say
    gender: str
    age: str
    pitch: str
    pace: str
    texture: str
    accent: str = "en-us"

    def __post_init__(self):
        for field, allowed in (("gender", GENDERS), ("age", AGES), ("pitch", PITCHES), ("pace", PACES),
                               ("texture", TEXTURES)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"character {self.key!r}: {field} {getattr(self, field)!r} is not one of {allowed}")

    def attributes(self) -> dict:
        return {"gender": self.gender, "age": self.age, "pitch": self.pitch, "pace": self.pace,
                "texture": self.texture}

    def to_dict(self) -> dict:
        return asdict(self)

    def voice(self) -> Voice:
        """espeak-ng controls that realise the four attributes and the texture."""
        base = {"child": 80, "young": 48, "middle-aged": 42, "elderly": 36}[self.age]
        if self.gender == "female" and self.age != "child":
            base += 18
        pitch = base + {"low": -14, "medium": 0, "high": 14}[self.pitch]
        speed = {"slow": 125, "moderate": 158, "fast": 195}[self.pace] - (10 if self.age == "elderly" else 0)
        return Voice(name=self.key, language="en", espeak=self.accent,
                     variant=variant(self.gender, self.age, self.texture), pitch=max(0, min(99, pitch)),
                     speed=speed, description=describe(self, 0))


def variant(gender: str, age: str, texture: str) -> str:
    """The espeak-ng variant (formant set) for a voice: it is what sets timbre apart."""
    if age == "elderly" and texture == "rough":
        return "m1" if gender == "male" else "f1"            # espeak-ng's aged formant sets
    if age == "elderly" and texture == "breathy":
        return "grandpa" if gender == "male" else "grandma"
    if age == "child" and texture == "bright":
        return "Annie"
    if age == "child" and texture == "clear":
        return "m5" if gender == "male" else "f5"
    return {("male", "clear"): "m3", ("male", "rough"): "m7", ("male", "breathy"): "m2", ("male", "bright"): "m5",
            ("female", "clear"): "f2", ("female", "rough"): "f4", ("female", "breathy"): "f3",
            ("female", "bright"): "f5"}[(gender, texture)]


CHARACTERS = [
    Character("captain", "Captain Hale", "a retired sea captain", "the harbour", "carving little wooden boats",
              "Steady as she goes.", "male", "elderly", "low", "slow", "rough", "en-gb-scotland"),
    Character("mira", "Mira", "a street musician", "the old town square", "writing songs about the weather",
              "Every day has its own tune!", "female", "young", "high", "fast", "bright"),
    Character("professor", "Professor Lin", "a science teacher", "the school laboratory", "watching the stars",
              "Let us find out together.", "male", "middle-aged", "medium", "moderate", "clear"),
    Character("rose", "Grandma Rose", "a village baker", "her little bakery", "baking bread before sunrise",
              "Nothing beats warm bread, dear.", "female", "elderly", "medium", "slow", "breathy"),
    Character("tommy", "Tommy", "a curious eight year old boy", "the park by the river", "collecting shiny stones",
              "Guess what I found!", "male", "child", "high", "fast", "clear"),
    Character("vale", "Detective Vale", "a city detective", "the rainy city streets", "solving puzzles",
              "The details never lie.", "female", "middle-aged", "low", "moderate", "clear"),
    Character("oak", "Brother Oak", "a quiet gardener", "the monastery garden", "growing herbs",
              "Good things grow slowly.", "male", "young", "low", "slow", "breathy"),
    Character("lily", "Lily", "a little girl who loves animals", "her grandmother's farm", "feeding the ducks",
              "The ducks are my best friends!", "female", "child", "high", "moderate", "bright"),
    Character("reginald", "Sir Reginald", "a royal butler", "the palace", "polishing the silver",
              "Very good, indeed.", "male", "middle-aged", "medium", "slow", "clear", "en-gb-x-rp"),
    Character("nova", "Captain Nova", "a space pilot", "the orbital station", "racing between the moons",
              "Engines on, let's fly!", "female", "young", "medium", "fast", "rough"),
]
CHARACTERS_BY_KEY = {c.key: c for c in CHARACTERS}


# --- descriptions in words --------------------------------------------------------------

# synonyms per attribute value: paraphrase k takes synonym k mod len
WORDS = {
    "noun": {("male", "child"): ["boy", "little boy", "young lad"], ("female", "child"): ["girl", "little girl",
                                                                                          "young lass"],
             "male": ["man", "gentleman", "male speaker"], "female": ["woman", "lady", "female speaker"]},
    "age": {"child": ["", "", ""], "young": ["young", "youthful", "twenty-something"],
            "middle-aged": ["middle-aged", "mature", "forty-something"], "elderly": ["elderly", "old", "aged"]},
    "pitch": {"low": ["low", "deep", "bass-heavy"], "medium": ["medium", "mid-range", "middling"],
              "high": ["high", "light", "thin"]},
    "pace": {"slow": ["slow", "unhurried", "leisurely"], "moderate": ["moderate", "even", "steady"],
             "fast": ["fast", "quick", "brisk"]},
    "texture": {"clear": ["clear", "crisp", "clean"], "rough": ["rough", "gravelly", "husky"],
                "breathy": ["breathy", "airy", "soft"], "bright": ["bright", "lively", "sparkling"]},
}

# sentence frames; {a_x} is x with its article
FRAMES = [
    "{A_who} with a {pitch}, {texture} voice, speaking at {a_pace} pace.",
    "The voice of {a_who}: {pitch} in pitch, {texture} in tone, {pace} in delivery.",
    "{A_texture}, {pitch} voice belonging to {a_who} who talks at {a_pace} pace.",
    "This character sounds like {a_who}; the voice is {pitch} and {texture}, and the pace is {pace}.",
    "Picture {a_who} speaking with {a_texture}, {pitch} voice at {a_pace} speed.",
    "{A_pace}, {texture} way of speaking, {pitch} in pitch, from {a_who}.",
]


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def describe(character: Character, k: int = 0) -> str:
    """Paraphrase ``k`` of the character's voice description (0 is the canonical one)."""
    return describe_attributes(character.attributes(), k)


def describe_attributes(attributes: dict, k: int = 0) -> str:
    """Paraphrase ``k`` of a voice description from its attributes (gender, age, pitch,
    pace, texture). Paraphrases walk through sentence frames and synonyms together, so
    consecutive k differ in both wording and structure; there are len(FRAMES) * 3."""
    a = attributes
    frame = FRAMES[k % len(FRAMES)]
    s = (k // len(FRAMES) + k) % 3  # synonym set, shifted so frames do not always pair with the same words
    noun_key = (a["gender"], "child") if a["age"] == "child" else a["gender"]
    who = " ".join(w for w in (WORDS["age"][a["age"]][s], WORDS["noun"][noun_key][s]) if w)
    words = {"who": who, "pitch": WORDS["pitch"][a["pitch"]][s], "texture": WORDS["texture"][a["texture"]][s],
             "pace": WORDS["pace"][a["pace"]][s]}
    fill = dict(words)
    for name, value in words.items():
        fill[f"a_{name}"] = _article(value)
        fill[f"A_{name}"] = _article(value).capitalize()
    return frame.format(**fill)


def paraphrases(attributes: dict, count: int) -> list[str]:
    """``count`` distinct paraphrases (at most len(FRAMES) * 3)."""
    out: list[str] = []
    k = 0
    while len(out) < count and k < len(FRAMES) * 3 * 2:
        d = describe_attributes(attributes, k)
        if d not in out:
            out.append(d)
        k += 1
    return out


def role_description(character: Character, voice_description: str) -> str:
    """The system prompt's role description: who the character is and how they sound."""
    return (f"You are {character.name}, {character.persona}, who spends the days at {character.place} and loves "
            f"{character.hobby}. Your voice: {voice_description}")
