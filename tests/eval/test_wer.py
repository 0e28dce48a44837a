"""Error rates with hand-computed numbers: per-utterance mean vs corpus level, S/D/I counts,
empty references, and the normaliser deciding the number."""

import pytest

from qinyu.eval.metrics.wer import ErrorRate, align_counts, error_rate

REFS = ["the cat sat on the mat", "hello"]
HYPS = ["the cat sat on a mat", "yellow"]


def test_utterance_vs_corpus_aggregation():
    # utterance 1: 6 words, 1 substitution (the -> a) -> 1/6
    # utterance 2: 1 word, 1 substitution (hello -> yellow) -> 1/1
    # per-utterance mean = (1/6 + 1) / 2 = 7/12 = 0.58333...
    # corpus = (1 + 1) errors / (6 + 1) reference words = 2/7 = 0.28571...
    utt = error_rate(REFS, HYPS, "seedtts-en", "utterance")
    corpus = error_rate(REFS, HYPS, "seedtts-en", "corpus")
    assert isinstance(utt, ErrorRate)
    assert utt.value == pytest.approx(7 / 12) and corpus.value == pytest.approx(2 / 7)
    assert utt.per_item == pytest.approx([1 / 6, 1.0]) == corpus.per_item
    for er in (utt, corpus):
        assert (er.substitutions, er.deletions, er.insertions, er.reference_units, er.n) == (2, 0, 0, 7, 2)
        assert er.normaliser == "seedtts-en" and er.unit == "word"
    assert (utt.aggregate, corpus.aggregate) == ("utterance", "corpus")
    assert corpus.as_dict()["value"] == pytest.approx(2 / 7)


def test_substitution_deletion_insertion_counts():
    # a b c d -> a x c : b->x substituted, d deleted: (1 + 1) / 4 = 0.5
    er = error_rate(["a b c d"], ["a x c"], "uro-en")
    assert (er.substitutions, er.deletions, er.insertions, er.value) == (1, 1, 0, 0.5)
    # a b -> a b c : one insertion: 1 / 2
    er = error_rate(["a b"], ["a b c"], "uro-en")
    assert (er.substitutions, er.deletions, er.insertions, er.value) == (0, 0, 1, 0.5)
    # an empty hypothesis is all deletions
    er = error_rate(["a b"], [""], "uro-en")
    assert (er.deletions, er.value) == (2, 1.0)
    assert align_counts([" ", "x"], ["x"]) == (0, 1, 0)  # units may be spaces (URO's CER)


def test_empty_reference_rule():
    # "。" is empty after Seed-TTS normalisation. Empty ref + empty hyp -> 0; + "hi" -> 1.
    er = error_rate(["。", "。", "a b"], ["", "hi", "a b"], "seedtts-en", "utterance")
    assert er.per_item == [0.0, 1.0, 0.0]
    assert er.value == pytest.approx(1 / 3)
    # corpus: the inserted "hi" counts against the 2 reference words of item 3: 1/2
    er = error_rate(["。", "。", "a b"], ["", "hi", "a b"], "seedtts-en", "corpus")
    assert er.value == pytest.approx(0.5) and er.insertions == 1 and er.reference_units == 2
    # nothing to compare at all: 0 if the hypotheses are empty too
    assert error_rate([""], [""], "wenet", "corpus").value == 0.0
    assert error_rate([""], ["x"], "wenet", "corpus").value == 1.0


def test_the_normaliser_decides_the_number():
    refs, hyps = ["hello world"], ["Hello, world."]
    assert error_rate(refs, hyps, "uro-en").value == 0.0
    assert error_rate(refs, hyps, "seedtts-en").value == 0.0
    # WeNet: HELLO vs "HELLO," and WORLD vs "WORLD." are 2 substitutions in 2 words
    assert error_rate(refs, hyps, "wenet", "corpus").value == 1.0


def test_chinese_character_rates():
    # WeNet: 我有三个苹果 (6 characters) vs 我有3个苹果: 三 -> 3 is 1 substitution: 1/6
    er = error_rate(["我有三个苹果"], ["我有3个苹果"], "wenet", "corpus")
    assert er.value == pytest.approx(1 / 6) and er.unit == "char"
    assert error_rate(["我有三个苹果"], ["我有3个苹果"], "uro-zh").value == 0.0  # cn2an reads the digit
    # URO counts the space as a character: 你好 世界 has 5 units, the hypothesis drops one: 1/5
    assert error_rate(["你好 世界"], ["你好世界"], "uro-zh").value == pytest.approx(0.2)
    # Seed-TTS zh converts only the hypothesis to simplified characters
    assert error_rate(["说话"], ["說話"], "seedtts-zh").value == 0.0
    assert error_rate(["說話"], ["說話"], "seedtts-zh").value == 1.0  # reference stays traditional


def test_bad_input():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rate(["a", "b"], ["a"], "uro-en")
    with pytest.raises(ValueError, match="aggregate"):
        error_rate(["a"], ["a"], "uro-en", "mean")
    with pytest.raises(ValueError, match="no items"):
        error_rate([], [], "uro-en")
    with pytest.raises(ValueError, match="unknown normaliser"):
        error_rate(["a"], ["a"], "nope")
    with pytest.raises(TypeError, match="item 1"):
        error_rate(["a", "b"], ["a", None], "uro-en")
