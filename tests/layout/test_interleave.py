import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qinyu.layout import ScheduleError, check_schedule, deinterleave, interleave
from qinyu.layout.interleave import AUDIO, TEXT

schedules = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 12)), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 50), st.integers(0, 120), schedules)
def test_deinterleave_inverts_interleave(n_text, n_audio, schedule):
    text = [f"t{i}" for i in range(n_text)]
    audio = [f"a{i}" for i in range(n_audio)]
    seq = interleave(text, audio, schedule)
    assert len(seq) == n_text + n_audio
    assert deinterleave(seq) == (text, audio)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 50), st.integers(1, 120), schedules)
def test_interleave_follows_schedule_until_last_chunk(n_text, n_audio, schedule):
    seq = interleave(list(range(n_text)), list(range(n_audio)), schedule)
    # runs of equal kind, starting with text
    runs = []
    for kind, _ in seq:
        if runs and runs[-1][0] == kind:
            runs[-1][1] += 1
        else:
            runs.append([kind, 1])
    assert runs[0][0] == TEXT
    pairs = [(runs[i][1], runs[i + 1][1]) for i in range(0, len(runs), 2)]
    for i, (t, a) in enumerate(pairs[:-1]):
        assert (t, a) == schedule[min(i, len(schedule) - 1)]


def test_reference_example_hi_ok():
    # 'Hi, ok.' + <|end_of_conv|> = 8 text tokens, 18 frames -> 25 steps: 1T 8A 4T 8A 3T 9A
    seq = interleave(list("Hi, ok.") + ["EOC"], list(range(25)), [[1, 8], [4, 8]])
    kinds = "".join("T" if k == TEXT else "A" for k, _ in seq)
    assert kinds == "T" + "A" * 8 + "T" * 4 + "A" * 8 + "T" * 3 + "A" * 9


def test_text_longer_than_audio_goes_in_last_chunk():
    seq = interleave(list(range(20)), ["a"] * 3, [[1, 8], [4, 8]])
    assert [k for k, _ in seq] == [TEXT] * 20 + [AUDIO] * 3


def test_flat_schedule_accepted():
    assert check_schedule([1, 8, 4, 8]) == ((1, 8), (4, 8))


@pytest.mark.parametrize("bad,msg", [
    ([[1, 8], [0, 8]], "entry 1: text_n must be positive, got 0"),
    ([[1, -8]], "entry 0: audio_n must be positive, got -8"),
    ([], "empty"),
    ([[1, 8, 3]], "pair"),
    ([1, 8, 4], "odd length"),
    ([[1.5, 8]], "integer"),
])
def test_bad_schedule_named(bad, msg):
    with pytest.raises(ScheduleError, match=msg):
        interleave([1], [2], bad)
