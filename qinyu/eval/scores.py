"""The benchmarks' score arithmetic, as the official scripts and the VITA-QinYu paper do it.

Each function is checked in tests/eval/test_scores.py against rows of the paper's own
tables (the paper's averages reproduce from its per-metric columns only this way):

- CharacterEval (Table 2 / Table 8): the reward model scores 1..5; the paper multiplies
  the per-metric means by 20 (not (s - 1) / 4 x 100), averages Consistency over KA, KH, PB,
  PU (Exposure, KE, is left out), Conversation over Flu, Coh, Cons, Attractiveness over
  HL, CS, ED, Emp, and Table 2's "Avg." over CST, CNV, ATR and speaker similarity.
- URO-Bench (Table 5): per dataset, judge scores 1..5 -> mean x 20, Yes/No -> fraction x 100,
  Repeat -> ok rate x (1 - mean WER of ok items) x 100; categories and Avg. are unweighted
  means over datasets / categories.
- C3 (Table 4): the paper's Overall is the macro mean of the 5 subtest accuracies (C3's own
  script reports the micro accuracy over items, a different number).
- Seed-TTS eval (Table 7): mean of per-utterance WER x 100.
"""

from __future__ import annotations

import math

# abbreviation -> (CharacterEval metric_en, metric_zh)
CHARACTEREVAL_METRICS: dict[str, tuple[str, str]] = {
    "KE": ("Exposure", "知识曝光度"),
    "KA": ("Accuracy", "知识准确率"),
    "KH": ("Hallucination", "知识幻觉性"),
    "PB": ("Behavior", "行为一致性"),
    "PU": ("Utterance", "言语一致性"),
    "Flu": ("Fluency", "对话流利度"),
    "Coh": ("Coherence", "对话连贯性"),
    "Cons": ("Consistency", "对话一致性"),
    "HL": ("Humanlikeness", "类人程度"),
    "CS": ("Communication_skills", "交流技巧"),
    "ED": ("Diversity", "表现多样性"),
    "Emp": ("Empathy", "共情度"),
}
CHARACTEREVAL_GROUPS: dict[str, tuple[str, ...]] = {
    "CST": ("KA", "KH", "PB", "PU"),  # KE excluded, as the paper's averages show
    "CNV": ("Flu", "Coh", "Cons"),
    "ATR": ("HL", "CS", "ED", "Emp"),
}
CHARACTEREVAL_SCALE = 20.0  # 5-point means -> the paper's 100-point scale

URO_MODES = ("open", "semi-open", "qa")
URO_REPEAT_OK_WER = 0.5

# The paper's C3 subtests (keys suggested for c3_overall; any 5 keys are accepted)
C3_SUBTESTS = ("phonological", "semantic", "omission", "coreference", "multi-turn")


def mean(values, what: str = "values") -> float:
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"mean of no {what}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what}: not all finite: {values}")
    return sum(values) / len(values)


# -- CharacterEval --------------------------------------------------------------------------
def charactereval_table(per_metric_mean: dict[str, float]) -> dict[str, float]:
    """Per-metric reward-model means (1..5; keyed by abbreviation or by CharacterEval's
    metric_en) -> {"CST", "CNV", "ATR"} on the paper's 100-point scale."""
    by_abbrev = {en: ab for ab, (en, _) in CHARACTEREVAL_METRICS.items()}
    scores = {by_abbrev.get(k, k): v for k, v in per_metric_mean.items()}
    unknown = sorted(set(scores) - set(CHARACTEREVAL_METRICS))
    if unknown:
        raise ValueError(f"unknown CharacterEval metrics {unknown}; known: {list(CHARACTEREVAL_METRICS)}")
    table = {}
    for group, members in CHARACTEREVAL_GROUPS.items():
        missing = [m for m in members if m not in scores]
        if missing:
            raise ValueError(f"CharacterEval {group} needs {list(members)}; missing {missing}")
        table[group] = CHARACTEREVAL_SCALE * mean([scores[m] for m in members], group)
    return table


def roleplay_average(cst: float, cnv: float, atr: float, ss: float) -> float:
    """Table 2's "Avg.": mean of consistency, conversation, attractiveness and speaker similarity."""
    return mean([cst, cnv, atr, ss], "role-play scores")


# -- URO-Bench ----------------------------------------------------------------------------
def uro_dataset_score(mode: str, item_scores: list[float]) -> float:
    """One dataset's score from per-item judge scores (each the mean over the judge's
    samples): open/semi-open 1..5 -> mean x 20, qa 0/1 -> mean x 100. Failed items must be
    in ``item_scores`` as 0 (URO-Bench scores an empty reply or an API error as 0)."""
    if mode in ("open", "semi-open"):
        return 20.0 * mean(item_scores, f"URO {mode} scores")
    if mode == "qa":
        return 100.0 * mean(item_scores, "URO qa scores")
    raise ValueError(f"URO mode must be one of {URO_MODES} (Repeat: uro_repeat_score), got {mode!r}")


def uro_repeat_score(wers: list[float]) -> float:
    """Repeat / Repeat-zh: ok = WER <= 0.5; ok rate x (1 - mean WER of the ok items) x 100
    (0 if no item is ok). URO-Bench computes each WER with the model's answer as jiwer's
    reference and the text to repeat as the hypothesis; the caller keeps that order."""
    wers = [float(w) for w in wers]
    if not wers:
        raise ValueError("Repeat score of no items")
    ok = [w for w in wers if w <= URO_REPEAT_OK_WER]
    if not ok:
        return 0.0
    return len(ok) / len(wers) * (1.0 - sum(ok) / len(ok)) * 100.0


def uro_category_score(dataset_scores: list[float]) -> float:
    """Understanding / Reasoning / Oral: the unweighted mean over the category's datasets;
    the paper's URO Avg. is the same mean over the three categories."""
    return mean(dataset_scores, "URO dataset scores")


# -- C3 -----------------------------------------------------------------------------------
def c3_overall(subtests: dict[str, float]) -> float:
    """The paper's C3 Overall: macro mean of the 5 subtest accuracies (see C3_SUBTESTS)."""
    if len(subtests) != len(C3_SUBTESTS):
        raise ValueError(f"C3 overall is the mean of {len(C3_SUBTESTS)} subtests {C3_SUBTESTS}; "
                         f"got {len(subtests)}: {sorted(subtests)}")
    return mean(subtests.values(), "C3 subtests")


# -- Seed-TTS eval ------------------------------------------------------------------------
def seedtts_wer(per_utterance_wer: list[float]) -> float:
    """Seed-TTS's reported WER/CER in percent: the mean of per-utterance rates x 100."""
    return 100.0 * mean(per_utterance_wer, "Seed-TTS utterance WERs")
