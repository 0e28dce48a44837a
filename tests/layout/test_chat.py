"""Chat rendering against the reference's own data code (golden parity cases)."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from qinyu.layout import (
    AssistantSpeech, RenderError, TokenLayout, UserSpeech, byte_tokenizer, drop_assistant_speech, load_tokenizer,
    render, system_prompt, tts_messages, undo_delay, user_speech_frames, with_voice_prompt,
)

SPEAKER_LINE = "Your Voice Embedding: <|speaker|>"


@pytest.fixture(scope="module")
def ref_tok(parity_dir):
    tok = load_tokenizer(parity_dir / "official_qwen3_tiny")
    return tok, TokenLayout.from_tokenizer(tok)


def golden_case(parity_dir, family, name):
    t = load_file(str(parity_dir / f"{family}_tiny_case_{name}.safetensors"))
    codes = None
    if "audio_labels" in t:
        codes = undo_delay(t["audio_labels"][0].T)
    return t, codes


def check_against_golden(r, t, layout):
    assert r.input_ids == t["input_ids"][0].tolist()
    assert r.labels == t["labels"][0].tolist()
    runs = r.audio_runs()
    assert [s for s, _ in runs] == t["audio_token_starts"][0].tolist()
    assert [e for _, e in runs] == t["audio_token_ends"][0].tolist()
    mask = r.audio_steps[:, 0] >= 0
    if mask.any():
        # reference audio_tokens [8, T] are token ids of the delayed steps
        ids = r.audio_steps[mask] + layout.audio_base + 1032 * np.arange(8)
        np.testing.assert_array_equal(ids.T, t["audio_tokens"][0])
        np.testing.assert_array_equal(r.audio_labels[mask].T, t["audio_labels"][0])
    assert sorted(np.flatnonzero(t["speaker_mask"][0]).tolist()) == r.speaker_positions
    for i, positions in enumerate(r.user_audio_positions):
        assert positions == t[f"audio_indices.{i}"][1, 0].tolist()


@pytest.mark.parametrize("family,query_frames", [("qwen3", 4), ("utu", 0)])
def test_s2s_interleaved_matches_reference(parity_dir, ref_tok, family, query_frames):
    tok, layout = ref_tok
    t, codes = golden_case(parity_dir, family, "s2s_interleaved")
    assert codes.shape == (8, 18)
    messages = with_voice_prompt([
        {"role": "user", "content": "<|audio|>"},
        {"role": "assistant", "content": "Hi, ok.<|audio|>"},
    ])
    r = render(messages, tok, layout, [UserSpeech(5 + query_frames), AssistantSpeech(codes)])
    check_against_golden(r, t, layout)


@pytest.mark.parametrize("family,frames", [("qwen3", (6, 7)), ("utu", (2, 3))])
def test_multiturn_audio_only_matches_reference(parity_dir, ref_tok, family, frames):
    tok, layout = ref_tok
    t, codes = golden_case(parity_dir, family, "multiturn_audio_only")
    messages = with_voice_prompt([
        {"role": "system", "content": "Q."},
        {"role": "user", "content": "<|audio|>"},
        {"role": "assistant", "content": "Yo."},
        {"role": "user", "content": "<|audio|>"},
        {"role": "assistant", "content": "<|audio|>"},
    ])
    r = render(messages, tok, layout, [UserSpeech(frames[0]), UserSpeech(frames[1]), AssistantSpeech(codes)])
    check_against_golden(r, t, layout)


def test_text_tool_call_matches_reference(parity_dir, ref_tok):
    tok, layout = ref_tok
    t, _ = golden_case(parity_dir, "qwen3", "text_tool_call")
    r = render([{"role": "user", "content": "hi?"}, {"role": "assistant", "content": "<function=s>{}</function>"}],
               tok, layout)
    check_against_golden(r, t, layout)


@pytest.fixture(scope="module")
def nano():
    tok = byte_tokenizer()
    return tok, TokenLayout.from_tokenizer(tok)


def test_generation_prompt_and_inference_user_speaker(nano):
    tok, layout = nano
    r = render([{"role": "system", "content": system_prompt()}, {"role": "user", "content": "<|user_speaker|><|audio|>"}],
               tok, layout, [UserSpeech(3)], add_generation_prompt=True)
    # <|user_speaker|> already in the text is not doubled
    assert r.input_ids.count(layout.user_speaker) == 1
    assert r.input_ids.count(layout.speaker) == 1
    assert tok.decode(r.input_ids, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    assert all(l == -100 for l in r.labels)
    assert len(r.speaker_positions) == 2 and r.speaker_positions[0] < r.speaker_positions[1]


def test_tts_prompt_and_history_policy(nano):
    tok, layout = nano
    codes = np.random.default_rng(0).integers(0, 1024, (8, 4))
    msgs = tts_messages("hello", with_reply_audio=True)
    assert msgs[0]["content"] == "Convert the text to speech.\nhello"
    msgs, audios = drop_assistant_speech(msgs + [{"role": "user", "content": "<|audio|>"}],
                                         [AssistantSpeech(codes), UserSpeech(2)])
    assert msgs[1] == {"role": "assistant", "content": "hello"}
    assert audios == [UserSpeech(2)]


def test_all_labels_policy_labels_every_text_turn(nano):
    tok, layout = nano
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    r = render(msgs, tok, layout)  # no audio -> all assistant turns labelled
    assert sum(l != -100 for l in r.labels) == 2 * 3  # 'b'/'d' + <|im_end|> + '\n'


def test_user_speech_frames():
    assert user_speech_frames(16000, query_frames=0) == 17  # 98 fbank frames -> ceil(98/6)
    assert user_speech_frames(16000) == 21
    assert user_speech_frames(32000, sample_rate=32000, query_frames=0) == 17


@pytest.mark.parametrize("messages,audios,msg", [
    ([{"role": "user", "content": "<|audio|>"}], [], "0 audio entries given but the messages hold 1"),
    ([{"role": "bot", "content": "x"}], [], "unknown role 'bot'"),
    ([{"role": "user"}], [], "'content' must be a string"),
    ([{"role": "assistant", "content": "<|audio|>x"}], [AssistantSpeech(np.zeros((8, 2), int))], "after the text"),
    ([{"role": "assistant", "content": "<|audio|>"}], [AssistantSpeech(np.full((8, 2), 1030))], "out of range"),
    ([{"role": "assistant", "content": "<|audio|>"}], [UserSpeech(3)], "must be AssistantSpeech"),
    ([{"role": "system", "content": "<|audio|>"}], [UserSpeech(3)], "only allowed in user and assistant"),
    ([{"role": "user", "content": "<|audio|>"}], [UserSpeech(0)], "positive frame count"),
])
def test_bad_input_is_named(nano, messages, audios, msg):
    tok, layout = nano
    with pytest.raises(RenderError, match=msg):
        render(messages, tok, layout, audios)
