import pytest

from qinyu.duplex.asr import ASRError, load_asr
from qinyu.duplex.turn import (FINISHED, UNFINISHED, WAIT, BuiltinTurnDetector, TurnDetectorError, load_turn_detector,
                               parse_decision)


def test_builtin_rule():
    d = BuiltinTurnDetector()
    assert d.decide("What is two plus five?", 1.4) == FINISHED
    assert d.decide("what is two plus", 1.0) == FINISHED  # a bare number word ends a turn
    assert d.decide("I was thinking and", 1.2) == UNFINISHED
    assert d.decide("so, um", 0.8) == UNFINISHED
    assert d.decide("tell me about the sea,", 1.5) == UNFINISHED
    assert d.decide("Wait.", 0.4) == WAIT and d.decide("hold on, let me think", 1.1) == WAIT
    assert d.decide("waiting rooms are boring", 1.5) == FINISHED  # 'wait' only as the phrase
    # a question or request that opens with a hold word is not a hold request
    assert d.decide("Wait, what is two plus five?", 1.5) == FINISHED
    assert d.decide("Stop the music and tell me a joke.", 2.0) == FINISHED
    # a punctuated sentence is complete even when its last word often continues one
    assert d.decide("I really like that.", 1.0) == FINISHED and d.decide("Is that so?", 0.8) == FINISHED
    assert d.decide("and then...", 0.8) == UNFINISHED
    # no transcript to judge: duration decides
    assert d.decide("", 1.0) == FINISHED and d.decide(None, 0.1) == UNFINISHED and d.decide("...", 0.2) == UNFINISHED


def test_ten_answers_are_parsed_like_the_reference():
    assert parse_decision(" Finished") == FINISHED and parse_decision("unfinished\n") == UNFINISHED
    assert parse_decision("wait") == WAIT and parse_decision("maybe") == UNFINISHED


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(TurnDetectorError, match="TEN turn detector folder .* is incomplete"):
        load_turn_detector({"type": "ten", "path": str(tmp_path)})
    with pytest.raises(TurnDetectorError, match="unknown turn_detector type"):
        load_turn_detector({"type": "magic"})
    with pytest.raises(ASRError, match="Whisper folder .* is incomplete"):
        load_asr({"type": "whisper", "path": str(tmp_path)})
    assert load_asr(None) is None and isinstance(load_turn_detector(None), BuiltinTurnDetector)
