"""Text normalisers for WER/CER, named and versioned.

The same transcripts give different error rates under the published scoring scripts,
because each normalises text its own way (the apostrophe, the full stop and numbers
dominate English WER). So every error rate this harness reports names the normaliser it
was computed under, and each normaliser reproduces one published pipeline step by step:

- ``seedtts-en`` / ``seedtts-zh``: Seed-TTS eval ``run_wer.py`` (Table 7, TTS).
- ``uro-en`` / ``uro-zh``: URO-Bench ``metrics/mark_wer.py`` (Repeat, ASR-WER of replies).
- ``wenet``: WeNet ``tools/compute-wer.py --char=1`` (VITA-Audio's ASR recipe, Table 6).

A normaliser has two halves: ``__call__`` turns text into normalised text, and
``tokens`` splits normalised text into the units errors are counted on, the way the
pipeline's own scorer does (jiwer's default word or character split, or WeNet's
tokeniser). Steps a pipeline applies to the *hypothesis only* (Seed-TTS converts the
Chinese ASR output to simplified characters, never the reference) are a separate
``hypothesis_only`` step: use ``normalise_hypothesis`` / ``hypothesis_tokens`` on
hypotheses and ``__call__`` / ``tokens`` on references; ``metrics.wer.error_rate``
does this.

``version`` changes whenever a normaliser's output changes; reports carry ``label``
("uro-en v1").
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from zhon.hanzi import punctuation as ZHON_PUNCTUATION

UNITS = ("word", "char")


@dataclass(frozen=True)
class Normaliser:
    name: str
    unit: str  # "word" or "char": what an error is counted on
    description: str  # one line for reports: exactly what it does
    version: int
    normalise: Callable[[str], str] = field(repr=False)
    split: Callable[[str], list[str]] = field(repr=False)  # normalised text -> units
    hypothesis_only: Callable[[str], str] | None = field(default=None, repr=False)  # runs before ``normalise``

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"normaliser {self.name}: unit must be one of {UNITS}, got {self.unit!r}")

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def __call__(self, text: str) -> str:
        """Normalised reference text (the steps both sides share)."""
        return self.normalise(_check_text(text, self.name))

    def tokens(self, text: str) -> list[str]:
        """The units of a reference, after normalisation."""
        return self.split(self(text))

    def normalise_hypothesis(self, text: str) -> str:
        """Normalised hypothesis text: the hypothesis-only step (if any), then ``__call__``."""
        text = _check_text(text, self.name)
        if self.hypothesis_only is not None:
            text = self.hypothesis_only(text)
        return self(text)

    def hypothesis_tokens(self, text: str) -> list[str]:
        return self.split(self.normalise_hypothesis(text))


def _check_text(text, name: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"normaliser {name}: expected a string, got {type(text).__name__}")
    return text


# -- jiwer's default splits (the scorers of Seed-TTS and URO-Bench call jiwer with its defaults)
def jiwer_words(text: str) -> list[str]:
    """jiwer's default WER transform: runs of 2+ whitespace -> one space, strip, split on
    the ASCII space. (A lone tab or newline between words does not split them, as in jiwer.)"""
    return [w for w in re.sub(r"\s\s+", " ", text).strip().split(" ") if w]


def jiwer_chars(text: str) -> list[str]:
    """jiwer's default CER transform: strip, then every character is a unit, spaces included."""
    return list(text.strip())


# -- Seed-TTS eval (run_wer.py) -----------------------------------------------------------
# zhon's Chinese punctuation plus ASCII punctuation, except the ASCII apostrophe: Seed-TTS
# skips it so "it's" stays one word.
_SEEDTTS_DELETE = str.maketrans("", "", "".join(sorted(set(ZHON_PUNCTUATION + string.punctuation) - {"'"})))


def _seedtts_common(text: str) -> str:
    # one pass of str.replace, as the script does: four spaces become two, not one
    return text.translate(_SEEDTTS_DELETE).replace("  ", " ")


def _seedtts_en(text: str) -> str:
    return _seedtts_common(text).lower()


def _seedtts_zh(text: str) -> str:
    # every character (spaces too) separated by spaces; the word split then drops the spaces
    return " ".join(_seedtts_common(text))


def _to_simplified(text: str) -> str:
    import zhconv

    return zhconv.convert(text, "zh-cn")


# -- URO-Bench (metrics/mark_wer.py) ------------------------------------------------------
@lru_cache(maxsize=1)
def _whisper_english():
    # The packaged copy of Whisper's EnglishTextNormalizer, with its english.json
    # British -> American spelling map (URO-Bench ships the same two files).
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def _uro_en(text: str) -> str:
    return _whisper_english()(text.strip().lower())


# URO's Chinese path deletes every zhon and ASCII punctuation mark, the apostrophe included.
_URO_DELETE = str.maketrans("", "", "".join(sorted(set(ZHON_PUNCTUATION + string.punctuation))))


def _uro_zh(text: str) -> str:
    import cn2an

    text = text.translate(_URO_DELETE).replace("  ", " ")
    # Arabic digits -> Chinese numerals ("3个" -> "三个"); after punctuation removal, so
    # "3.5" has already become "35" (as in URO-Bench).
    return cn2an.transform(text.strip().lower(), "an2cn")


# -- WeNet tools/compute-wer.py --char=1 ---------------------------------------------------
# The only marks WeNet drops, and only where a token would start; ASCII ".", "'", '"', ";",
# ":" are kept, and a mark inside an ASCII run ("world,") stays part of that token.
WENET_MARKS = frozenset("!,?、。！，；？：「」︰『』《》")
_WENET_SPACES = frozenset(" \t\r\n")


def wenet_tokens(text: str) -> list[str]:
    """WeNet's ``--char=1`` tokeniser followed by its case folding and tag removal.

    Each character of Unicode category Lo (CJK ideographs, kana, Hangul, ...) is a token;
    any other character starts a token that runs over the following ASCII characters up to
    a space or a non-ASCII character (a token starting with "<" also stops after ">").
    Tokens are uppercased, ``<...>`` tags are cut out, and tokens left empty are dropped."""
    tokens = []
    i = 0
    while i < len(text):
        ch = text[i]
        category = unicodedata.category(ch)
        if ch in WENET_MARKS or ch in _WENET_SPACES or category in ("Zs", "Cn"):
            i += 1
        elif category == "Lo":
            tokens.append(ch)
            i += 1
        else:
            stop = ">" if ch == "<" else " "
            j = i + 1
            while j < len(text) and ord(text[j]) < 128 and text[j] not in _WENET_SPACES and text[j] != stop:
                j += 1
            if j < len(text) and text[j] == ">":
                j += 1
            tokens.append(text[i:j])
            i = j
    stripped = (re.sub(r"<[^>]*>?", "", t.upper()) for t in tokens)
    return [t for t in stripped if t]


def _wenet(text: str) -> str:
    return " ".join(wenet_tokens(text))


# -- registry -----------------------------------------------------------------------------
NORMALISERS: dict[str, Normaliser] = {
    n.name: n
    for n in [
        Normaliser(
            "seedtts-en", "word",
            "Seed-TTS eval (en): delete zhon + ASCII punctuation except the apostrophe, one pass of "
            "double space -> single, lowercase; words split on spaces (jiwer default)",
            1, _seedtts_en, jiwer_words),
        Normaliser(
            "seedtts-zh", "char",
            "Seed-TTS eval (zh): hypothesis only: traditional -> simplified (zhconv zh-cn); then delete "
            "zhon + ASCII punctuation except the apostrophe, one pass of double space -> single; every "
            "non-space character one unit; no case folding",
            1, _seedtts_zh, jiwer_words, hypothesis_only=_to_simplified),
        Normaliser(
            "uro-en", "word",
            "URO-Bench (en): strip, lowercase, Whisper EnglishTextNormalizer (whisper-normalizer, with its "
            "spelling map and number standardisation); words split on spaces (jiwer default)",
            1, _uro_en, jiwer_words),
        Normaliser(
            "uro-zh", "char",
            "URO-Bench (zh): delete zhon + ASCII punctuation incl. the apostrophe, one pass of double "
            "space -> single, strip, lowercase, Arabic digits -> Chinese numerals (cn2an an2cn); every "
            "character one unit, spaces included (jiwer.cer default)",
            1, _uro_zh, jiwer_chars),
        Normaliser(
            "wenet", "char",
            "WeNet compute-wer.py --char=1: uppercase; drop only ! , ? 、 。 ！ ， ； ？ ： 「 」 ︰ 『 』 《 》 where "
            "a token starts; cut <...> tags; each CJK (Lo) character one unit, each run of other ASCII "
            "characters one unit (English stays words); spaces ignored",
            1, _wenet, wenet_tokens),  # re-tokenising the joined tokens gives them back
    ]
}


def get_normaliser(name: str) -> Normaliser:
    try:
        return NORMALISERS[name]
    except KeyError:
        raise ValueError(f"unknown normaliser {name!r}; known: {', '.join(NORMALISERS)}") from None
