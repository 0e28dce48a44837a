import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qinyu.layout import DelayError, apply_delay, undo_delay


def test_delay_matches_reference_pattern():
    codes = np.arange(8 * 3).reshape(8, 3)  # T = 3
    steps = apply_delay(codes)
    assert steps.shape == (10, 8)
    # codebook 0: codes then pads 0..6
    assert steps[:, 0].tolist() == [0, 1, 2] + [1024 + k for k in range(7)]
    # codebook 3: pads 0,1,2 then codes then pads 3..6
    assert steps[:, 3].tolist() == [1024, 1025, 1026, 9, 10, 11, 1027, 1028, 1029, 1030]
    # codebook 7: pads 0..6 then codes, no trailing pad
    assert steps[:, 7].tolist() == [1024 + k for k in range(7)] + [21, 22, 23]


def test_delay_of_zero_frames():
    steps = apply_delay(np.zeros((8, 0), dtype=np.int64))
    assert steps.shape == (7, 8)
    assert undo_delay(steps).shape == (8, 0)


@settings(max_examples=200, deadline=None)
@given(arrays(np.int64, st.tuples(st.just(8), st.integers(0, 60)), elements=st.integers(0, 1023)))
def test_undo_is_exact_inverse(codes):
    steps = apply_delay(codes)
    assert steps.shape == (codes.shape[1] + 7, 8)
    np.testing.assert_array_equal(undo_delay(steps), codes)
    np.testing.assert_array_equal(apply_delay(undo_delay(steps)), steps)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.data())
def test_undo_rejects_any_corrupted_pad_or_code(num_frames, data):
    rng = np.random.default_rng(num_frames)
    steps = apply_delay(rng.integers(0, 1024, size=(8, num_frames)))
    t = data.draw(st.integers(0, steps.shape[0] - 1))
    q = data.draw(st.integers(0, 7))
    corrupt = steps.copy()
    is_pad = corrupt[t, q] >= 1024
    # replace a pad by a code, or a code by a pad
    corrupt[t, q] = 5 if is_pad else 1024
    with pytest.raises(DelayError, match=f"step {t}, codebook {q}"):
        undo_delay(corrupt)


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((5, 8), dtype=np.int64), "at least 7 steps"),
    (np.zeros((10, 7), dtype=np.int64), r"shape \(S, 8\)"),
    (np.full((10, 8), 2000), "out of range"),
    (np.zeros((10, 8)), "integers"),
])
def test_undo_rejects_malformed(bad, msg):
    with pytest.raises(DelayError, match=msg):
        undo_delay(bad)


@pytest.mark.parametrize("codes,msg", [
    (np.full((8, 4), 1024), r"out of range at codebook 0, frame 0: 1024"),
    (np.full((8, 4), -1), "out of range"),
    (np.zeros((7, 4), dtype=np.int64), r"shape \(8, T\)"),
])
def test_apply_rejects_bad_codes(codes, msg):
    with pytest.raises(DelayError, match=msg):
        apply_delay(codes)
