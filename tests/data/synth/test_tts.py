"""The speech backends: espeak-ng (English, Mandarin through pypinyin) and HTTP instruct TTS."""

import numpy as np
import pytest

from qinyu.audio.espeak import espeak_available
from qinyu.data.synth.tts import EspeakTTS, HTTPInstructTTS, TTSError, Voice, apply_instruction, hanzi_to_pinyin
from qinyu.data.synth.voices import USER_VOICES

from .servers import TTSServer, free_port

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def test_hanzi_to_pinyin():
    assert hanzi_to_pinyin("你好，世界！") == "ni3 hao3, shi4 jie4!"
    assert hanzi_to_pinyin("我们去吧。") == "wo3 men5 qu4 ba5."  # neutral tone as 5
    assert hanzi_to_pinyin("三加4等于7") == "san1 jia1 4 deng3 yu2 7"  # digits are read by espeak-ng


@needs_espeak
def test_mandarin_through_pypinyin_produces_audio():
    tts = EspeakTTS()
    zh = Voice("zh", language="zh", espeak="cmn-latn-pinyin", variant="f2")
    wav, sr = tts.synthesize("你好，很高兴见到你。", zh)
    assert sr == 22050 and wav.dtype == np.float32 and len(wav) / sr > 0.8
    assert np.sqrt(np.mean(wav ** 2)) > 0.01
    # Hanzi given to an English voice still goes through pinyin, not espeak-ng's letter-by-letter fallback
    wav2, _ = tts.synthesize("你好", Voice("en", variant="m3"))
    assert len(wav2) / sr > 0.3


@needs_espeak
def test_english_voices_differ_by_controls():
    tts = EspeakTTS()
    a, _ = tts.synthesize("The quick brown fox.", Voice("a", speed=120))
    b, _ = tts.synthesize("The quick brown fox.", Voice("b", speed=220))
    assert len(a) > 1.4 * len(b)  # speed is words per minute
    for v in USER_VOICES["en"][:6]:  # the pool's accents and variants all exist
        wav, _ = tts.synthesize("Hello there.", v)
        assert len(wav) > 0


def test_instruction_moves_controls():
    base = Voice("x", pitch=50, speed=160)
    excited, amp = apply_instruction(base, "A young woman with a high voice. Speak excitedly.")
    assert excited.pitch > 50 and excited.speed > 160
    whisper, amp = apply_instruction(base, "Speak whispering.")
    assert whisper.variant == "whisper" and amp < 100
    same, amp = apply_instruction(base, None)
    assert same == base and amp == 100


@needs_espeak
def test_espeak_errors_are_named():
    with pytest.raises(TTSError, match="empty text"):
        EspeakTTS().synthesize("  ", Voice("x"))
    with pytest.raises(TTSError, match="espeak-ng TTS failed.*qq-bogus"):
        EspeakTTS().synthesize("hello", Voice("x", espeak="qq-bogus"))


@needs_espeak
def test_http_instruct_tts():
    with TTSServer(fail_marker="BROKEN") as server:
        tts = HTTPInstructTTS(server.url + "/tts", retries=1, backoff_s=0.01)
        wav, sr = tts.synthesize("Hello there.", Voice("x", description="A calm voice."))
        assert sr == 22050 and len(wav) > 1000
        assert server.requests[-1]["body"] == {"text": "Hello there.", "instruction": "A calm voice."}
        tts.synthesize("Hi.", Voice("x"), instruction="Speak sadly.")
        assert server.requests[-1]["body"]["instruction"] == "Speak sadly."
        with pytest.raises(TTSError, match=rf"{server.url}/tts on 'BROKEN line': failed after 2 attempt.*HTTP 500"):
            tts.synthesize("BROKEN line", Voice("x"))
        with pytest.raises(TTSError, match=rf"{server.url}/tts did not return a wav"):
            tts.synthesize("not audio", Voice("x"))
    url = f"http://127.0.0.1:{free_port()}/tts"
    with pytest.raises(TTSError, match=rf"{url} on .*failed .* unreachable"):
        HTTPInstructTTS(url, retries=0).synthesize("hello", Voice("x"))
