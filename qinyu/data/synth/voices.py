"""The speaking voices the pipelines draw on: many user voices, one assistant voice.

User queries are spoken by many different voices so the model learns to understand
speech regardless of who speaks (the paper's "TTS with varied user voices"). With
espeak-ng, variety comes from accent (voice), variant (formant set), pitch and speed.
The pools are fixed, named lists rather than random draws, so a held-out split can
name the voices it holds out.
"""

from __future__ import annotations

import random

from .tts import Voice

# English accents whose variants work (espeak-ng's plain "en-gb" ignores the variant)
EN_ACCENTS = ["en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan",
               "en-gb-x-gbcwmd"]
_VARIANTS = ["m1", "f3", "m3", "f1", "m7", "f4", "Andy", "f2", "m2", "Annie", "klatt", "f5", "m5", "anika",
             "m6", "Alicia", "Michael", "Steph", "m4", "Linda", "Gene", "Belinda", "m8", "Andrea"]


def _user_pool(language: str, count: int) -> list[Voice]:
    voices = []
    for i in range(count):
        variant = _VARIANTS[i % len(_VARIANTS)]
        if language == "zh":
            espeak_voice = "cmn-latn-pinyin"
        else:
            espeak_voice = EN_ACCENTS[i % len(EN_ACCENTS)]
        # pitch and speed walk through their ranges at strides coprime to the pool size,
        # so neighbouring voices differ in every control
        pitch = 25 + (i * 17) % 51          # 25..75
        speed = 135 + (i * 23) % 56         # 135..190 words per minute
        voices.append(Voice(name=f"user-{language}-{i:02d}", language=language, espeak=espeak_voice,
                            variant=variant, pitch=pitch, speed=speed))
    return voices


USER_VOICES = {"en": _user_pool("en", 24), "zh": _user_pool("zh", 12)}

ASSISTANT_VOICES = {
    "en": Voice(name="assistant-en", language="en", espeak="en-us", variant="f2", pitch=55, speed=160,
                description="A clear, friendly young female voice at a moderate pace."),
    "zh": Voice(name="assistant-zh", language="zh", espeak="cmn-latn-pinyin", variant="f2", pitch=55, speed=150,
                description="一个清晰友好的年轻女声，语速适中。"),
}


def user_voice(language: str, key: str, exclude: frozenset[str] = frozenset()) -> Voice:
    """A user voice for one item, chosen by hashing ``key`` (stable across runs and shards)."""
    pool = [v for v in USER_VOICES.get(language, USER_VOICES["en"]) if v.name not in exclude]
    if not pool:
        raise ValueError(f"no user voices left for language {language!r} after excluding {sorted(exclude)}")
    return pool[random.Random(key).randrange(len(pool))]
