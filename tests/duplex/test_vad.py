import numpy as np
import pytest

from qinyu.audio.espeak import espeak
from qinyu.audio.io import resample
from qinyu.duplex.vad import SpeechStarted, SpeechStopped, StreamingVAD, VADConfig


def utterance(text="Hello there, how are you doing today?"):
    wav, sr = espeak(text, voice="en-us+f3")
    return resample(wav, sr, 16000)


def test_speech_then_silence_gives_one_segment():
    speech = utterance()
    stream = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(16000, np.float32)])
    vad = StreamingVAD()
    events = []
    rng = np.random.default_rng(0)
    i = 0
    while i < len(stream):  # chunks of random sizes, as a client sends them
        n = int(rng.integers(100, 3000))
        events += vad.push(stream[i:i + n])
        i += n
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechStopped], kinds
    start, stop = events
    assert 8000 - 2000 <= start.sample <= 8000 + 0.4 * 16000  # near the real onset
    assert stop.sample <= 8000 + len(speech) + 16000
    assert abs(len(stop.audio) - len(speech)) < 0.5 * 16000
    assert np.abs(stop.audio).max() > 0.1


def test_silence_and_noise_stay_quiet():
    vad = StreamingVAD()
    assert vad.push(np.zeros(32000, np.float32)) == []
    assert vad.push(np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.001) == []


def test_two_utterances_with_a_pause():
    speech = utterance("One two three.")
    gap = np.zeros(16000, np.float32)
    events = StreamingVAD().push(np.concatenate([gap, speech, gap, speech, gap]))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * 2


def test_bad_input_and_config():
    with pytest.raises(ValueError, match="NaN"):
        StreamingVAD().push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="threshold"):
        VADConfig(threshold=1.5)
