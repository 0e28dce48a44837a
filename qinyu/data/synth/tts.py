"""Text-to-speech backends for the synthesis pipelines.

Every backend has ``synthesize(text, voice, instruction=None) -> (float32 mono, rate)``:

- ``EspeakTTS`` speaks with espeak-ng, offline. English uses espeak-ng's English voices;
  Mandarin goes through the ``cmn-latn-pinyin`` voice, with pypinyin turning Hanzi into
  tone-numbered pinyin first (espeak-ng's own Hanzi dictionary is small, its pinyin
  reader is complete). The voice's controls are espeak-ng's: voice, variant, pitch and
  speed. An instruction ("whispering", "excitedly", ...) nudges those controls, which is
  all an instruct-TTS can mean for a formant synthesiser.
- ``HTTPInstructTTS`` POSTs ``{"text", "instruction"}`` as JSON to a URL and expects a
  wav back: any instruction-following TTS server can stand behind it.

Failures raise ``TTSError`` naming the backend (and the URL), so a pipeline can record
the item as failed and go on.
"""

from __future__ import annotations

import io
import json
import re
import threading
import weakref
from dataclasses import asdict, dataclass, replace

import numpy as np

from ...net import PostError, post_json


class TTSError(RuntimeError):
    """A backend could not speak one text; the message names the backend and the text."""


@dataclass(frozen=True)
class Voice:
    """One speaking voice, as espeak-ng controls plus a description in words.

    ``description`` is what an instruct-TTS backend is told and what role-play system
    prompts say; the espeak-ng fields are what the offline backend uses."""

    name: str
    language: str = "en"      # "en", or "zh" (Mandarin through cmn-latn-pinyin)
    espeak: str = "en-us"     # espeak-ng voice
    variant: str = ""         # espeak-ng variant: m1..m7, f1..f5, klatt, whisper, croak, ...
    pitch: int = 50           # espeak-ng base pitch, 0..99
    speed: int = 160          # words per minute
    description: str = ""

    def espeak_voice(self) -> str:
        return f"{self.espeak}+{self.variant}" if self.variant else self.espeak

    def to_dict(self) -> dict:
        return asdict(self)


def voice_from_dict(d: dict) -> Voice:
    return Voice(**d)


# --- Mandarin: Hanzi -> tone-numbered pinyin -------------------------------------------

_HANZI = re.compile(r"[\u3400-\u9fff]")
# full-width punctuation -> ASCII, so espeak-ng pauses where the sentence does
_ZH_PUNCT = str.maketrans({"，": ",", "。": ".", "！": "!", "？": "?", "；": ";", "：": ":", "、": ",",
                           "（": "(", "）": ")", "“": '"', "”": '"', "‘": "'", "’": "'", "…": "...", "～": " "})


def has_hanzi(text: str) -> bool:
    return bool(_HANZI.search(text))


def hanzi_to_pinyin(text: str) -> str:
    """'你好，世界' -> 'ni3 hao3, shi4 jie4': what espeak-ng's cmn-latn-pinyin voice reads.

    The neutral tone is written 5 (espeak-ng accepts it); digits and Latin letters pass
    through, since espeak-ng reads digits as Mandarin numbers in this voice."""
    from pypinyin import Style, lazy_pinyin

    words = lazy_pinyin(text.translate(_ZH_PUNCT), style=Style.TONE3, neutral_tone_with_five=True,
                        errors=lambda chunk: [chunk])
    out = " ".join(w.strip() for w in words if w.strip())
    return re.sub(r"\s+([,.!?;:)])", r"\1", out)


# --- instructions -> espeak-ng controls --------------------------------------------------

# How a style word moves espeak-ng's controls: (pitch delta, speed factor, amplitude, variant).
# Only what a formant synthesiser can do: higher/faster for excitement, lower/slower for
# sadness, the whisper variant for whispering.
STYLE_CONTROLS = {
    "excited": (12, 1.15, 110, None), "excitedly": (12, 1.15, 110, None),
    "cheerful": (8, 1.08, 100, None), "cheerfully": (8, 1.08, 100, None),
    "happy": (8, 1.08, 100, None), "happily": (8, 1.08, 100, None),
    "sad": (-10, 0.85, 80, None), "sadly": (-10, 0.85, 80, None),
    "calm": (-4, 0.9, 90, None), "calmly": (-4, 0.9, 90, None),
    "angry": (6, 1.1, 120, None), "angrily": (6, 1.1, 120, None),
    "surprised": (15, 1.05, 105, None), "with surprise": (15, 1.05, 105, None),
    "whisper": (0, 0.9, 70, "whisper"), "whispering": (0, 0.9, 70, "whisper"),
    "slowly": (0, 0.8, 100, None), "quickly": (0, 1.2, 100, None),
    "proudly": (4, 0.95, 115, None), "nervously": (6, 1.15, 90, None),
    "warmly": (2, 0.92, 95, None), "seriously": (-6, 0.9, 100, None),
}


def apply_instruction(voice: Voice, instruction: str | None) -> tuple[Voice, int]:
    """(voice with adjusted controls, amplitude) for the style words found in ``instruction``."""
    if not instruction:
        return voice, 100
    low = instruction.lower()
    pitch, speed, amplitude, variant = voice.pitch, float(voice.speed), 100, voice.variant
    # longest phrases first, so "with surprise" wins over a shorter overlapping word
    for word in sorted(STYLE_CONTROLS, key=len, reverse=True):
        if re.search(rf"\b{re.escape(word)}\b", low):
            dp, fs, amp, var = STYLE_CONTROLS[word]
            pitch, speed, amplitude = pitch + dp, speed * fs, amp
            if var:
                variant = var
            break
    pitch = int(min(99, max(0, pitch)))
    return replace(voice, pitch=pitch, speed=int(round(speed)), variant=variant), amplitude


class EspeakTTS:
    """Offline TTS through espeak-ng (22050 Hz). By default the program speaks each utterance,
    so a sentence said twice in a voice is the same waveform (runs Y8 and Y9 in docs/nano.md:
    a corpus whose repeated replies differed trained to higher stage losses). ``library=True``
    speaks through the library in a worker process started at the first utterance
    (``qinyu.audio.espeak.EspeakWorker``: a quarter of the program's time a sentence, and the
    same utterances in the same order give the same audio, but a repeated one differs a little)."""

    kind = "espeak"

    def __init__(self, library: bool = False):
        self.library = library
        self._worker = None
        self._lock = threading.Lock()

    def describe(self) -> dict:
        return {"kind": self.kind}

    def __getstate__(self):  # a copy in another process starts its own worker
        return {"library": self.library}

    def __setstate__(self, state):
        self.__init__(**state)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def _speak(self, text: str, voice: str, pitch: int, speed: int, amplitude: int) -> tuple[np.ndarray, int]:
        from ...audio.espeak import EspeakWorker, espeak

        if not self.library:
            return espeak(text, voice=voice, pitch=pitch, speed=speed, amplitude=amplitude)
        with self._lock:
            if self._worker is None:
                self._worker = EspeakWorker()
                weakref.finalize(self, self._worker.close)
            return self._worker.synthesize(text, voice, pitch, speed, amplitude)

    def synthesize(self, text: str, voice: Voice, instruction: str | None = None) -> tuple[np.ndarray, int]:
        from ...audio.espeak import EspeakError

        if not text or not text.strip():
            raise TTSError(f"espeak-ng TTS: empty text for voice {voice.name!r}")
        voice, amplitude = apply_instruction(voice, instruction)
        spoken, engine_voice = text, voice.espeak_voice()
        if voice.language == "zh" or has_hanzi(text):
            spoken = hanzi_to_pinyin(text)
            base = voice.espeak if voice.espeak.startswith("cmn") else "cmn-latn-pinyin"
            engine_voice = f"{base}+{voice.variant}" if voice.variant else base
        try:
            return self._speak(spoken, engine_voice, voice.pitch, voice.speed, amplitude)
        except EspeakError as e:
            raise TTSError(f"espeak-ng TTS failed on {text[:60]!r}: {e}") from None


class HTTPInstructTTS:
    """An instruction-following TTS server: POST {"text", "instruction"} -> a wav file.

    The instruction says how to speak ("A deep, slow, elderly male voice. Speak calmly.");
    without one, the voice's description is sent. Connection errors and HTTP 5xx are
    retried with exponential backoff; anything else fails at once. Every error names
    the URL."""

    kind = "http"

    def __init__(self, url: str, timeout_s: float = 60.0, retries: int = 2, backoff_s: float = 0.5,
                 headers: dict | None = None):
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.headers = dict(headers or {})

    def describe(self) -> dict:
        # the URL is left out, as for the LLM: the same service moved to another host or
        # port makes the same speech, and a re-run after a move must not redo finished items
        return {"kind": self.kind}

    def synthesize(self, text: str, voice: Voice, instruction: str | None = None) -> tuple[np.ndarray, int]:
        import soundfile as sf

        if not text or not text.strip():
            raise TTSError(f"instruct TTS {self.url}: empty text")
        body = json.dumps({"text": text, "instruction": instruction or voice.description}).encode()
        try:
            data = post_json(self.url, body, None, self.retries, self.backoff_s, self.timeout_s,
                             headers={"Accept": "audio/wav", **self.headers})
        except PostError as e:
            raise TTSError(f"instruct TTS {self.url} on {text[:60]!r}: {e}") from None
        try:
            wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
        except Exception as e:  # soundfile raises several types for non-audio bytes
            raise TTSError(f"instruct TTS {self.url} did not return a wav for {text[:60]!r}: {e}") from None
        if wav.ndim == 2:
            wav = wav.mean(axis=1)
        if wav.size == 0:
            raise TTSError(f"instruct TTS {self.url} returned an empty wav for {text[:60]!r}")
        return wav.astype(np.float32), int(sr)


def make_tts(kind: str, url: str | None = None, **kw):
    """The backend named on the command line: ``espeak`` or ``http`` (needs ``url``)."""
    if kind == "espeak":
        return EspeakTTS()
    if kind == "http":
        if not url:
            raise TTSError("the http TTS backend needs --tts-url (a URL that takes POST {text, instruction})")
        return HTTPInstructTTS(url, **kw)
    raise TTSError(f"unknown TTS backend {kind!r}; expected 'espeak' or 'http'")
