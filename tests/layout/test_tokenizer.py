"""The corpus-trained BPE tokenizer (qinyu-nano's text tokenizer)."""

import pytest

from qinyu.layout import TokenLayout, bpe_tokenizer, byte_tokenizer

TEXTS = ["Three plus four is seven.", "What is two plus five?", "Two plus five is seven.",
         "Convert the speech to text.", "Hello! Nice to meet you."] * 20


def test_bpe_round_trips_and_is_shorter_than_bytes():
    tok = bpe_tokenizer(TEXTS, vocab_size=300)
    assert tok.get_vocab_size(with_added_tokens=False) <= 300
    for text in TEXTS[:5] + ["Unseen words: Zebra, 42, é, 你好."]:
        assert tok.decode(tok.encode(text).ids) == text
    short = sum(len(tok.encode(t).ids) for t in TEXTS)
    long = sum(len(byte_tokenizer().encode(t).ids) for t in TEXTS)
    assert short < long / 2


def test_bpe_has_the_qinyu_layout_and_is_deterministic():
    a, b = bpe_tokenizer(TEXTS, 300), bpe_tokenizer(TEXTS, 300)
    layout = TokenLayout.from_tokenizer(a)
    assert layout.audio_end <= layout.vocab_size
    assert a.to_str() == b.to_str()


def test_bpe_refuses_a_vocabulary_smaller_than_the_bytes():
    with pytest.raises(ValueError, match="at least 256"):
        bpe_tokenizer(TEXTS, vocab_size=100)


def test_whole_words_come_out_as_one_token_each():
    words = ["eleven", "twelve", "thirteen", "seventeen", "nineteen"]
    plain = bpe_tokenizer(TEXTS, vocab_size=400)
    assert all(len(plain.encode(" " + w).ids) > 1 for w in words)  # not in the text: split by default
    tok = bpe_tokenizer(TEXTS, vocab_size=400, whole_words=words)
    assert all(len(tok.encode(" " + w).ids) == 1 for w in words)
    assert tok.decode(tok.encode("Six plus seven is thirteen.").ids) == "Six plus seven is thirteen."
    assert tok.to_str() == bpe_tokenizer(TEXTS, vocab_size=400, whole_words=words).to_str()
    with pytest.raises(ValueError, match="stay split"):  # more words than the merges a 260-entry BPE has
        bpe_tokenizer(TEXTS, vocab_size=260, whole_words=words * 2 + ["twenty", "fourteen", "eighteen"])
