import pytest

from qinyu.layout import (
    CODEBOOK_SIZE, TokenLayout, VocabularyError, audio_token, byte_tokenizer, load_tokenizer,
    qwen3_shaped_tokenizer,
)


@pytest.fixture(scope="module")
def qwen3():
    return qwen3_shaped_tokenizer()


def test_8b_id_layout_golden(qwen3):
    # Ids of the official 8B layout (reference facts §1.2), built on a 151,669-entry base.
    tid = qwen3.token_to_id
    assert tid("<|im_start|>") == 151644 and tid("<|im_end|>") == 151645
    assert tid("<|begin_of_image|>") == 151669 and tid("<|video|>") == 151685
    assert [tid(t) for t in ("<|begin_of_audio|>", "<|end_of_audio|>", "<|context_of_audio|>", "<|audio|>",
                             "<|end_of_conv|>")] == [151686, 151687, 151688, 151689, 151690]
    for q in range(8):
        for c in (0, 1, 511, 1023):
            assert tid(f"<|audio_{q}_{c}|>") == 151691 + 1032 * q + c
        for k in range(8):
            assert tid(f"<|audio_{q}_{k}_pad|>") == 151691 + 1032 * q + 1024 + k
    assert tid("<|audio_7_7_pad|>") == 159946
    assert [tid(t) for t in ("<|audio_token_start|>", "<|audio_token_end|>", "<function=", "</function>",
                             "<|speaker|>", "<|user_speaker|>")] == list(range(159947, 159953))
    layout = TokenLayout.from_tokenizer(qwen3)
    assert layout.num_tokens == 159953 and layout.vocab_size == 159960
    assert layout.first_audio_token_id == 152723 == layout.audio_token_id(1, 0)
    assert layout.audio_end == 159947


def test_layout_matches_reference_tokenizer(parity_dir):
    # The tiny official tokenizer was extended by the reference's own code.
    tok = load_tokenizer(parity_dir / "official_qwen3_tiny")
    layout = TokenLayout.from_tokenizer(tok)
    assert (layout.audio_base, layout.end_of_conv, layout.speaker, layout.user_speaker) == (121, 120, 8381, 8382)
    assert layout.vocab_size == 8384
    ours = byte_tokenizer()
    # same relative order after the base: audio block right after the 5 audio specials
    ol = TokenLayout.from_tokenizer(ours)
    assert ol.audio_base - ol.begin_of_audio == layout.audio_base - layout.begin_of_audio == 5
    assert ol.speaker - ol.audio_end == layout.speaker - layout.audio_end == 4


def test_audio_tokens_are_not_special(qwen3):
    ids = qwen3.encode("<|audio_0_5|><|audio_3_2_pad|><|speaker|>", add_special_tokens=False).ids
    assert ids == [151696, 151691 + 3 * 1032 + 1026, 159951]
    # like the reference, skip_special_tokens keeps audio codes but drops specials
    assert qwen3.decode(ids, skip_special_tokens=True).split() == ["<|audio_0_5|>", "<|audio_3_2_pad|>"]


def test_audio_token_strings():
    assert audio_token(2, 17) == "<|audio_2_17|>"
    assert audio_token(2, 1024 + 3) == "<|audio_2_3_pad|>"
    assert CODEBOOK_SIZE == 1032


def test_missing_token_is_named():
    from tokenizers import Tokenizer, models

    with pytest.raises(VocabularyError, match=r"<\|audio_0_0\|>.*extend_tokenizer"):
        TokenLayout.from_tokenizer(Tokenizer(models.WordLevel(vocab={"a": 0}, unk_token="a")))


def test_layout_dict_round_trip(qwen3):
    layout = TokenLayout.from_tokenizer(qwen3)
    assert TokenLayout.from_dict(layout.to_dict()) == layout
    with pytest.raises(VocabularyError, match="unknown fields.*bogus"):
        TokenLayout.from_dict({**layout.to_dict(), "bogus": 1})


def test_layout_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, qinyu.layout; assert 'torch' not in sys.modules, 'qinyu.layout imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
