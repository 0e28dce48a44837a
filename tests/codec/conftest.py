import numpy as np
import pytest

from qinyu.audio.espeak import espeak, espeak_available
from qinyu.audio.io import resample


@pytest.fixture(scope="session")
def nano_codec():
    """A nano codec fitted on ~40 s of espeak-ng speech (a few seconds of work)."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed (make installs it)")
    from qinyu.codec import NanoCodec
    from qinyu.codec.fit import espeak_corpus

    corpus = [(w, sr) for w, sr, _, _ in espeak_corpus(40, seed=7)]
    return NanoCodec.fit(corpus, iterations=4)


@pytest.fixture(scope="session")
def speech():
    """A held-out English sentence at 16 kHz."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed (make installs it)")
    wav, sr = espeak("Please open the window before the rain starts.", voice="en-us+f3", pitch=55)
    return resample(wav, sr, 16000), 16000


def praat_f0(wav, sr=16000):
    import parselmouth

    pitch = parselmouth.Sound(np.asarray(wav, dtype=np.float64), sampling_frequency=sr).to_pitch_ac(
        time_step=0.01, pitch_floor=60, pitch_ceiling=800)
    return pitch.selected_array["frequency"]
