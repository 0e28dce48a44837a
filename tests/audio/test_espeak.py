"""espeak-ng through its library in a worker process, against the espeak-ng program."""

import pickle
import time

import numpy as np
import pytest

from qinyu.audio.espeak import EspeakError, EspeakWorker, espeak, espeak_available

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

SENTENCE = "What is twelve plus seven? Nineteen."


@pytest.mark.parametrize("voice, pitch, speed", [("en-us+m3", 40, 160), ("en-gb", 60, 190),
                                                 ("en-gb-x-rp+klatt", 20, 200), ("cmn-latn-pinyin+f2", 55, 140)])
def test_first_utterance_of_a_worker_is_the_programs(voice, pitch, speed):
    # "en-gb" is no voice's name: the worker must find it as a language, as the program does
    text = "ni3 hao3, shi4 jie4" if voice.startswith("cmn") else SENTENCE
    program, rate = espeak(text, voice=voice, pitch=pitch, speed=speed)
    with EspeakWorker() as worker:
        library, library_rate = worker.synthesize(text, voice, pitch, speed)
    assert library_rate == rate == 22050
    assert library.dtype == np.float32
    np.testing.assert_array_equal(library, program)


def test_the_same_requests_give_the_same_audio_and_come_back_in_order():
    requests = [(SENTENCE, "en-us+f2", 30, 150), ("The capital of France is Paris.", "en-gb+m3", 70, 180),
                ("Hello there, captain.", "en-us", 50, 175)]
    with EspeakWorker() as worker:
        one_by_one = [worker.synthesize(*r)[0] for r in requests]
    with EspeakWorker() as worker:
        for r in requests:
            worker.submit(*r)
        assert worker.pending == 3
        pipelined = [worker.result()[0] for _ in requests]
    for a, b in zip(one_by_one, pipelined):
        np.testing.assert_array_equal(a, b)
    # one engine speaks them: from the second on, the pitch flutter runs on from the one before
    # (the same words, another wave), so this is the worker's own determinism, not the program's
    second, _ = espeak(requests[1][0], voice=requests[1][1], pitch=requests[1][2], speed=requests[1][3])
    assert abs(len(second) - len(one_by_one[1])) < 0.1 * len(second)


def test_an_unknown_voice_is_named_and_the_worker_goes_on():
    with EspeakWorker() as worker:
        with pytest.raises(EspeakError, match="no voice 'zz-nothing'"):
            worker.synthesize("hello", "zz-nothing")
        wav, _ = worker.synthesize("hello", "en-us")
        assert wav.size > 1000
        with pytest.raises(EspeakError, match="no espeak-ng request is waiting"):
            worker.result()


def test_close_with_results_not_taken_does_not_hang():
    worker = EspeakWorker()
    for _ in range(20):  # far more audio than a pipe holds: the worker blocks on its output
        worker.submit(SENTENCE * 3, "en-us")
    start = time.monotonic()
    worker.close()
    assert time.monotonic() - start < 5
    with pytest.raises(EspeakError, match="exited"):
        worker.submit("hello")


def test_espeak_tts_through_the_library_is_picklable_and_speaks():
    from qinyu.data.synth.tts import EspeakTTS
    from qinyu.data.synth.voices import ASSISTANT_VOICES

    tts = EspeakTTS(library=True)
    wav, rate = tts.synthesize("Two plus five is seven.", ASSISTANT_VOICES["en"])
    copy = pickle.loads(pickle.dumps(tts))  # a copy starts its own worker
    again, _ = copy.synthesize("Two plus five is seven.", ASSISTANT_VOICES["en"])
    np.testing.assert_array_equal(wav, again)  # both the first utterance of a fresh engine
    program, _ = EspeakTTS(library=False).synthesize("Two plus five is seven.", ASSISTANT_VOICES["en"])
    np.testing.assert_array_equal(wav, program)
    tts.close()
    copy.close()
