"""Word/character error rate under a named normaliser, aggregated per utterance or per corpus.

The published scripts disagree on aggregation as well as on normalisation: Seed-TTS and
URO-Bench average per-utterance rates ("utterance"), WeNet's compute-wer divides the total
number of errors by the total number of reference units ("corpus"). On the same transcripts
the two differ whenever utterances differ in length, so ``ErrorRate`` says which it is.

Alignment counts (substitutions, deletions, insertions) come from jiwer's minimum edit
distance on the normaliser's units. The total error count of an utterance is the edit
distance and does not depend on how ties are broken; the split into S/D/I can differ from
another aligner's on ties.

An utterance whose reference is empty after normalisation has no rate of its own; we
score it 0 if the hypothesis is empty too and 1 otherwise (its inserted units still count
in the corpus totals). jiwer itself refuses an empty reference, and URO-Bench scores that
exception as 1 even when the hypothesis is empty too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import jiwer

from qinyu.eval.normalize import get_normaliser

AGGREGATES = ("utterance", "corpus")


@dataclass
class ErrorRate:
    value: float  # a fraction (0.05 = 5 %), not percent
    aggregate: str  # "utterance" (mean of per-utterance rates) or "corpus" (total errors / total reference units)
    normaliser: str
    unit: str  # "word" | "char"
    n: int  # items scored
    per_item: list[float] = field(repr=False)  # per-utterance rate, same order as the input
    substitutions: int
    deletions: int
    insertions: int
    reference_units: int

    def as_dict(self) -> dict:
        return asdict(self)


def align_counts(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of the minimum edit distance between two unit lists."""
    if not ref:
        return 0, 0, len(hyp)
    if not hyp:
        return 0, len(ref), 0
    # jiwer splits strings on spaces, and our units may be spaces (URO's character units)
    # or contain anything; so each distinct unit becomes a plain word "u<id>" first.
    ids: dict[str, str] = {}
    as_words = [" ".join(ids.setdefault(t, f"u{len(ids)}") for t in seq) for seq in (ref, hyp)]
    out = jiwer.process_words(as_words[0], as_words[1])
    return out.substitutions, out.deletions, out.insertions


def utterance_rate(ref_units: int, errors: int, hyp_units: int) -> float:
    if ref_units == 0:
        return 0.0 if hyp_units == 0 else 1.0
    return errors / ref_units


def error_rate(references: list[str], hypotheses: list[str], normaliser: str,
               aggregate: str = "utterance") -> ErrorRate:
    """WER (word units) or CER (character units) of ``hypotheses`` against ``references``.

    References go through the normaliser's shared steps, hypotheses also through its
    hypothesis-only step (Seed-TTS zh: traditional -> simplified). Items that could not be
    scored (no audio, no transcript) must be counted by the caller: this function scores
    every pair it is given, and an empty hypothesis is scored as all deletions."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("error_rate: no items to score")
    norm = get_normaliser(normaliser)
    per_item = []
    subs = dels = ins = ref_total = 0
    for i, (ref, hyp) in enumerate(zip(references, hypotheses)):
        if not isinstance(ref, str) or not isinstance(hyp, str):
            raise TypeError(f"item {i}: reference and hypothesis must be strings, got "
                            f"{type(ref).__name__} and {type(hyp).__name__}")
        ref_units, hyp_units = norm.tokens(ref), norm.hypothesis_tokens(hyp)
        s, d, n_ins = align_counts(ref_units, hyp_units)
        per_item.append(utterance_rate(len(ref_units), s + d + n_ins, len(hyp_units)))
        subs, dels, ins, ref_total = subs + s, dels + d, ins + n_ins, ref_total + len(ref_units)
    if aggregate == "utterance":
        value = sum(per_item) / len(per_item)
    else:
        value = utterance_rate(ref_total, subs + dels + ins, ins)
    return ErrorRate(value=value, aggregate=aggregate, normaliser=norm.name, unit=norm.unit, n=len(per_item),
                     per_item=per_item, substitutions=subs, deletions=dels, insertions=ins,
                     reference_units=ref_total)
